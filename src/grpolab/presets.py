"""Named settings for the main job (`grpolab demo`, `make demo`). Chosen by experiment: see docs/experiments.md."""

from __future__ import annotations

from typing import Any

# The headroom task: the sum of three one-digit numbers, where the base model gets 8.5% of 200 held-out problems
# right (greedy) because it cannot add three numbers in one go and rambles past its answer. Full fine-tune, no
# KL, token-mean loss, fp16 rollouts (2x faster sampling, on-policy: the sampler is refreshed after every
# update), a learning rate that decays (cosine to 0.1x) over the 15-minute budget so the gain is kept, held-out
# accuracy every 3 minutes. Measured gains: docs/experiments.md (E14, E15).
DEMO: dict[str, Any] = {
    "task": "arithmetic",
    "digits": 1,
    "terms": 3,
    "operators": "+",
    "eval_size": 200,
    "group_size": 8,
    "prompts_per_step": 1,
    "max_new_tokens": 64,
    "temperature": 1.0,
    "lr": 1e-5,
    "lr_schedule": "cosine",
    "min_lr_ratio": 0.1,
    "beta": 0.0,
    "loss_aggregation": "token-mean",
    "adam_beta2": 0.999,
    "rollout_quant": "fp16",
    "steps": 100_000,
    "max_minutes": 15.0,
    "eval_every_minutes": 3.0,
    "run_name": "",
}

# On a CPU with AMX (recent Xeons) bf16 products are fast: sampling with bf16 weights, the update's products in
# bf16 (fp32 weights and AdamW), and four steps per rollout call (a 32-row decode). Measured on the demo there
# (docs/experiments.md E23): +38.0 / +36.5 points for seeds 0 / 1 in 985 / 724 steps, against +34.0 / +30.0 in
# 322 / 284 steps with the settings above (on the AMD machine). Elsewhere bf16 is slower than fp32 (NOTES 16).
DEMO_AMX: dict[str, Any] = {"rollout_quant": "bf16", "autocast": "bf16", "steps_per_generation": 4}


def demo_settings(device: str = "auto") -> tuple[dict[str, Any], str]:
    """The demo's settings for the device the run will use, and a line saying which were picked and why."""
    from grpolab.models import resolve_device
    from grpolab.runtime import native_bf16

    resolved = resolve_device(device)
    if resolved.type == "cpu" and native_bf16(resolved, fast=True):
        return ({**DEMO, **DEMO_AMX}, "this CPU has AMX: the demo samples with bf16 weights, runs the update's "
                "products in bf16 and takes 4 steps per rollout call (--rollout-quant fp16 --autocast off "
                "--steps-per-generation 1 for the portable settings)")
    return dict(DEMO), ""
