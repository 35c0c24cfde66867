"""The run directory: config.json first, then metrics, rollouts, evaluations, checkpoints and the final model."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from grpolab.config import Config
from grpolab.errors import UserError


class RunDir:
    def __init__(self, path: Path, config: Config) -> None:
        self.path = Path(path)
        self.config = config

    checkpoints = property(lambda self: self.path / "checkpoints")
    metrics_path = property(lambda self: self.path / "metrics.jsonl")
    rollouts_path = property(lambda self: self.path / "rollouts.jsonl")
    evals_dir = property(lambda self: self.path / "evals")

    @classmethod
    def create(cls, cfg: Config) -> "RunDir":
        name = cfg.run.run_name or f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.task.task}-{cfg.algo.recipe}"
        path = Path(cfg.run.out_dir).expanduser() / name
        if (path / "config.json").exists():
            raise UserError(f"run directory '{path}' already holds a run. Fix: --resume {path} to continue it, or "
                            "a new --run-name")
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise UserError(f"cannot write the run directory '{path}': {e.strerror}. Fix: --out-dir to a writable "
                            "folder") from None
        run = cls(path, cfg)
        tmp = path / ".config.json.tmp"
        tmp.write_text(cfg.to_json())
        os.replace(tmp, path / "config.json")  # the first file of every run
        return run

    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        path = Path(path).expanduser()
        if path.name.startswith("step-") and path.parent.name == "checkpoints":
            path = path.parent.parent
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise UserError(f"'{path}' is not a run directory (no config.json). Fix: --resume runs/<name>")
        return cls(path, Config.from_file(cfg_file))

    def write_eval_records(self, step: int, records: list[dict[str, Any]]) -> Path:
        self.evals_dir.mkdir(exist_ok=True)
        out = self.evals_dir / f"step-{step:06d}.jsonl"
        out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        return out

    def write_summary(self, result: Any, checkpoint: Path | None) -> Path:
        before, after = result.eval_before, result.eval_after
        summary = {
            "run_dir": str(result.run_dir), "steps": result.steps_done, "interrupted": result.interrupted,
            "train_seconds": round(result.train_seconds, 2),
            "eval_before": None if before is None else before.metrics(""),
            "eval_after": None if after is None else after.metrics(""),
            "best_accuracy": result.best_accuracy, "best_step": result.best_step,
            "final_model": None if result.final_dir is None else str(result.final_dir),
            "last_checkpoint": None if checkpoint is None else str(checkpoint),
        }
        out = self.path / "summary.json"
        out.write_text(json.dumps(summary, indent=2))
        return out
