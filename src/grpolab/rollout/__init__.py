"""Rollout engines behind one Protocol: the fast CPU decoder and transformers' generate."""

from __future__ import annotations

from typing import Any, Sequence

from grpolab.errors import UserError
from grpolab.rollout.base import RolloutEngine, Rollouts, SamplingParams, finish_rows
from grpolab.rollout.fast import FastCPUEngine, unsupported_reason
from grpolab.rollout.hf import HFEngine


def build_engine(kind: str, model: Any, eos_ids: Sequence[int], pad_id: int, quant: str = "none") -> RolloutEngine:
    """'fast' (CPU decoder), 'hf' (transformers generate), or 'auto' (fast where it applies)."""
    reason = unsupported_reason(model)
    if kind == "auto":
        kind = "hf" if reason else "fast"
    if kind == "fast":
        if reason:
            raise UserError(f"--engine fast cannot run this model: {reason}. Fix: --engine hf (or auto)")
        return FastCPUEngine(model, eos_ids, pad_id, quant=quant)
    if kind == "hf":
        if quant != "none":
            raise UserError(f"--rollout-quant {quant} needs the fast engine; --engine hf samples with the training "
                            "weights. Fix: --engine fast, or --rollout-quant none")
        return HFEngine(model, eos_ids, pad_id)
    raise UserError(f"unknown engine '{kind}'; allowed: auto, fast, hf")


__all__ = ["RolloutEngine", "Rollouts", "SamplingParams", "build_engine", "finish_rows", "FastCPUEngine", "HFEngine"]
