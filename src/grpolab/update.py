"""The policy-update stage: reference/old log-probs, micro-batched loss and backward, one optimizer step per pass.

Rows whose advantage is 0 (a group whose rewards are all equal) contribute exactly zero loss and gradient
when there is no KL term, so they skip the forward and backward entirely; the loss denominators still
count them, so the gradient is identical to computing them.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from grpolab.algo import LossNorm, LossSpec, aggregate, per_token_loss
from grpolab.logprobs import token_logprobs
from grpolab.runtime import autocast as autocast_context


@dataclass
class UpdateBatch:
    """What the update needs, all on CPU: N rows (B groups x G)."""

    prompts: list[list[int]]  # (N,) prompt ids of each row
    completion_ids: torch.Tensor  # (N, T)
    mask: torch.Tensor  # (N, T) loss mask (truncated rows may be masked out by the overlong rule)
    advantages: torch.Tensor  # (N,)
    sampler_logp: torch.Tensor | None  # (N, T) or None
    max_len: int  # T max, the generation budget
    keep_threshold: torch.Tensor | None = None  # (N, T): re-apply the sampler's top-k/top-p mask when scoring
    old_logp: torch.Tensor | None = None  # (N, T): the sampling policy's log-probs, for rows sampled updates ago


class NonFiniteLoss(Exception):
    """Raised when the loss or gradient is NaN/inf; the optimizer step was skipped, weights are unchanged."""


def _row_chunks(rows: Sequence[int], lengths: torch.Tensor, micro_batch: int) -> list[list[int]]:
    """Split rows into micro-batches of similar length (less padding), longest first."""
    ordered = sorted(rows, key=lambda r: -int(lengths[r]))
    size = micro_batch or len(ordered) or 1
    return [ordered[i:i + size] for i in range(0, len(ordered), size)]


def _forward(model: Any, batch: UpdateBatch, rows: list[int], temperature: float, pad_id: int, autocast: str):
    width = max(int(batch.mask[rows].sum(dim=1).max()), 1)  # trim padding columns of this micro-batch
    ids = batch.completion_ids[rows, :width]
    mask = batch.mask[rows, :width]
    thr = None if batch.keep_threshold is None else batch.keep_threshold[rows, :width]
    # the same arithmetic for reference, old and current log-probs, so an on-policy ratio is exactly 1
    with autocast_context(autocast, next(model.parameters()).device):
        logp, entropy = token_logprobs(model, [batch.prompts[r] for r in rows], ids, mask, temperature, pad_id,
                                       keep_threshold=thr)
    return logp, entropy, mask.to(logp.device), width


@torch.no_grad()
def _reference_logprobs(model: Any, ref_model: Any, batch: UpdateBatch, chunks: list[list[int]],
                        temperature: float, pad_id: int, autocast: str) -> dict[int, torch.Tensor]:
    """Log-probs under the reference policy: adapters disabled under LoRA, else the frozen copy."""
    out: dict[int, torch.Tensor] = {}
    ctx = model.disable_adapter() if ref_model is None else contextlib.nullcontext()
    scorer = model if ref_model is None else ref_model
    with ctx:
        for rows in chunks:
            logp, _, _, _ = _forward(scorer, batch, rows, temperature, pad_id, autocast)
            for i, r in enumerate(rows):
                out[r] = logp[i]
    return out


@torch.no_grad()
def _old_logprobs(model: Any, batch: UpdateBatch, chunks: list[list[int]], temperature: float,
                  pad_id: int, autocast: str) -> dict[int, torch.Tensor]:
    out: dict[int, torch.Tensor] = {}
    for rows in chunks:
        logp, _, _, _ = _forward(model, batch, rows, temperature, pad_id, autocast)
        for i, r in enumerate(rows):
            out[r] = logp[i]
    return out


def _trained_rows(batch: UpdateBatch, all_rows: bool) -> list[int]:
    """Rows the update computes: those with a token to train on and a non-zero advantage (every such row when a
    KL term, `all_rows`, gives zero-advantage rows a gradient too)."""
    return [r for r in range(batch.completion_ids.shape[0])
            if float(batch.mask[r].sum()) > 0 and (all_rows or float(batch.advantages[r]) != 0.0)]


def behaviour_logprobs(model: Any, batch: UpdateBatch, temperature: float, pad_id: int, micro_batch: int,
                       autocast: str, all_rows: bool = False) -> torch.Tensor:
    """(N, T) log-probs of the batch's tokens under the current weights, no gradient: the old log-probs of rows
    that will be trained on after further updates, when the engine did not report usable ones. Rows with zero
    advantage are left at 0 (the update skips them) unless `all_rows` (a KL term trains every row)."""
    rows = _trained_rows(batch, all_rows)
    out = torch.zeros(batch.completion_ids.shape, dtype=torch.float32)
    if rows:
        for r, lp in _old_logprobs(model, batch, _row_chunks(rows, batch.mask.sum(dim=1), micro_batch),
                                   temperature, pad_id, autocast).items():
            out[r, :lp.shape[0]] = lp.float().cpu()
    return out


def policy_update(model: Any, batch: UpdateBatch, algo: Any, optimizer: Any, scheduler: Any, *,
                  temperature: float, pad_id: int, micro_batch: int, grad_clip: float,
                  ref_model: Any = None, empty_steps: str = "momentum", autocast: str = "off") -> dict[str, float]:
    """Run `algo.num_updates` optimizer steps on the batch; return averaged statistics.

    With no row to train (every advantage 0 and no KL), nothing is computed; `empty_steps='momentum'` still
    steps the optimizer once with a zero gradient (AdamW's moments keep moving the weights, as in any trainer
    that steps on a zero loss), 'skip' leaves everything untouched. `autocast='bf16'` runs the forwards (and so
    the backward's matrix products) in bfloat16; the log-softmax and everything the optimizer sees stay fp32."""
    spec = LossSpec.from_config(algo)
    n_rows = batch.completion_ids.shape[0]
    norm = LossNorm(num_seqs=n_rows, num_tokens=int(batch.mask.sum()), max_len=batch.max_len)
    rows = _trained_rows(batch, all_rows=spec.beta > 0)
    stats: dict[str, float] = {"rows_trained": float(len(rows)), "loss": 0.0}
    if not rows:
        if empty_steps == "momentum":
            for p in model.parameters():
                if p.requires_grad:
                    p.grad = torch.zeros_like(p)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        return {**stats, "grad_norm": 0.0, "updates": 1.0 if empty_steps == "momentum" else 0.0}
    lengths = batch.mask.sum(dim=1)
    chunks = _row_chunks(rows, lengths, micro_batch)
    device = next(model.parameters()).device

    ref = None
    if spec.beta > 0:
        if ref_model is None and not hasattr(model, "disable_adapter"):
            raise ValueError("beta > 0 needs a reference: a LoRA model (adapters disabled) or a frozen ref_model")
        ref = _reference_logprobs(model, ref_model, batch, chunks, temperature, pad_id, autocast)
    # Old log-probs: the sampling policy's when the batch lags behind the weights (steps_per_generation > 1);
    # else needed when the weights move between passes (mu > 1); otherwise the first pass is on-policy and
    # old = current (detached), which saves a forward.
    old = None
    if batch.old_logp is not None:
        old = {r: batch.old_logp[r].to(device) for r in rows}
    elif algo.num_updates > 1:
        old = _old_logprobs(model, batch, chunks, temperature, pad_id, autocast)

    params = [p for p in model.parameters() if p.requires_grad]
    sums: dict[str, float] = {}
    tokens_seen = 0.0
    grad_norms = []
    for _ in range(algo.num_updates):
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for chunk in chunks:
            logp, entropy, mask, width = _forward(model, batch, chunk, temperature, pad_id, autocast)
            old_lp = torch.stack([old[r][:width] for r in chunk]) if old is not None else logp.detach()
            ref_lp = torch.stack([ref[r][:width] for r in chunk]) if ref is not None else None
            # a lagging batch's old log-probs are its sampler's: the ratio itself then carries any mismatch
            smp = (batch.sampler_logp[chunk, :width].to(device)
                   if batch.sampler_logp is not None and batch.old_logp is None else None)
            adv = batch.advantages[chunk].to(device)
            loss_tok, st = per_token_loss(logp, old_lp, adv, mask, spec, ref_logp=ref_lp, sampler_logp=smp)
            loss = aggregate(loss_tok, mask, algo.loss_aggregation, norm)
            if not torch.isfinite(loss):
                optimizer.zero_grad(set_to_none=True)
                raise NonFiniteLoss(f"loss is {loss.item()} on a micro-batch of {len(chunk)} rows")
            loss.backward()
            total += float(loss.detach())
            n_tok = float(mask.sum())
            tokens_seen += n_tok
            sums["entropy"] = sums.get("entropy", 0.0) + float((entropy * mask).sum())
            for k, v in st.items():
                sums[k] = sums.get(k, 0.0) + float(v) * n_tok
        gn = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else math.inf)
        if not torch.isfinite(gn):
            optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLoss(f"gradient norm is {float(gn)}")
        grad_norms.append(float(gn))
        optimizer.step()
        scheduler.step()
        stats["loss"] += total / algo.num_updates
    optimizer.zero_grad(set_to_none=True)  # free gradient memory between steps
    for k, v in sums.items():
        stats[k] = v / max(tokens_seen, 1.0)
    stats["grad_norm"] = sum(grad_norms) / len(grad_norms)
    stats["updates"] = float(algo.num_updates)
    return stats
