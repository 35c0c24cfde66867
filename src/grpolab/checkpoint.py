"""Atomic checkpoints: trainable weights, optimizer, scheduler, step, data cursor and RNG state.

A checkpoint is written into a temporary directory, flushed to disk, then renamed into place, and only
then does the `latest` pointer move; a crash at any moment leaves the previous checkpoint intact and never a
half-written one that looks complete.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from grpolab.errors import UserError

WEIGHTS, OPTIM, STATE, LATEST = "weights.safetensors", "optimizer.pt", "state.json", "latest"
PENDING = "pending.pt"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def trainable_state(model: Any) -> dict[str, torch.Tensor]:
    """The parameters the optimizer updates (all weights, or only the LoRA adapters), shared tensors once."""
    return {name: p.detach().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def generator_state(gen: torch.Generator) -> str:
    return base64.b64encode(gen.get_state().numpy().tobytes()).decode("ascii")


def restore_generator(gen: torch.Generator, encoded: str) -> None:
    raw = base64.b64decode(encoded)
    gen.set_state(torch.frombuffer(bytearray(raw), dtype=torch.uint8))


def save_checkpoint(ckpt_root: Path, step: int, model: Any, optimizer: Any, scheduler: Any,
                    state: dict[str, Any], keep: int = 2, pending: list[Any] | None = None) -> Path:
    """Write checkpoint `step-NNNNNN` atomically, point `latest` at it, and keep the newest `keep`.
    pending: sampled groups not yet trained on (the rest of a round), as plain data, saved beside the weights."""
    ckpt_root = Path(ckpt_root)
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"step-{step:06d}"
    tmp = ckpt_root / f".step-{step:06d}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(trainable_state(model), str(tmp / WEIGHTS))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / OPTIM)
    if pending:
        torch.save(pending, tmp / PENDING)
    (tmp / STATE).write_text(json.dumps({**state, "step": step}, indent=1))
    for f in tmp.iterdir():
        _fsync_file(f)
    _fsync_dir(tmp)
    if final.exists():  # re-saving the same step (e.g. Ctrl-C right after a periodic save)
        shutil.rmtree(final)
    os.rename(tmp, final)
    pointer_tmp = ckpt_root / f".{LATEST}.tmp"
    pointer_tmp.write_text(final.name)
    os.replace(pointer_tmp, ckpt_root / LATEST)
    _fsync_dir(ckpt_root)
    _prune(ckpt_root, keep, protect={final.name, state.get("best_checkpoint") or ""})
    return final


def _prune(ckpt_root: Path, keep: int, protect: set[str]) -> None:
    done = sorted(p for p in ckpt_root.glob("step-*") if p.is_dir())
    for old in done[:-keep]:
        if old.name not in protect:
            shutil.rmtree(old, ignore_errors=True)
    for stale in ckpt_root.glob(".step-*.tmp-*"):  # left by a crash mid-save
        shutil.rmtree(stale, ignore_errors=True)


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    ckpt_root = Path(ckpt_root)
    pointer = ckpt_root / LATEST
    if pointer.is_file():
        path = ckpt_root / pointer.read_text().strip()
        if (path / STATE).is_file():
            return path
    done = sorted(p for p in ckpt_root.glob("step-*") if (p / STATE).is_file())
    return done[-1] if done else None


def load_pending(path: Path) -> list[Any]:
    """The sampled-but-untrained groups a checkpoint kept (empty when it was taken between rounds)."""
    f = Path(path) / PENDING
    return torch.load(f, weights_only=True) if f.is_file() else []


def load_checkpoint(path: Path, model: Any, optimizer: Any | None = None,
                    scheduler: Any | None = None) -> dict[str, Any]:
    """Restore weights (and optimizer/scheduler when given) in place; return the saved state dict."""
    path = Path(path)
    if not (path / STATE).is_file():
        raise UserError(f"'{path}' is not a grpolab checkpoint (no {STATE}). Fix: point at a run directory or one "
                        "of its checkpoints/step-* folders")
    weights = load_file(str(path / WEIGHTS))
    params = dict(model.named_parameters())
    missing = [k for k in weights if k not in params]
    if missing:
        raise UserError(f"checkpoint '{path}' has weights the model lacks (e.g. {missing[0]}): it was saved from a "
                        "different model or LoRA setting")
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor)
    if optimizer is not None or scheduler is not None:
        blob = torch.load(path / OPTIM, weights_only=True)
        if optimizer is not None:
            optimizer.load_state_dict(blob["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(blob["scheduler"])
    return json.loads((path / STATE).read_text())
