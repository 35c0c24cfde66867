"""Named settings for the main job (`grpolab demo`, `make demo`). Chosen by experiment: see docs/experiments.md."""

from __future__ import annotations

from typing import Any

# Two-digit addition: the base model gets ~7% of the held-out problems right (greedy), and GRPO lifts that to
# ~60% in about 10 minutes of training on a 2-core CPU (bench/results/learning). Full fine-tune, no KL,
# token-mean loss, fp16 rollouts (2x faster sampling, nearly on-policy), held-out accuracy every 2 minutes.
DEMO: dict[str, Any] = {
    "task": "arithmetic",
    "digits": 2,
    "terms": 2,
    "operators": "+",
    "eval_size": 100,
    "group_size": 8,
    "prompts_per_step": 1,
    "max_new_tokens": 64,
    "temperature": 1.0,
    "lr": 1e-5,
    "beta": 0.0,
    "loss_aggregation": "token-mean",
    "adam_beta2": 0.999,
    "rollout_quant": "fp16",
    "steps": 100_000,
    "max_minutes": 8.0,
    "eval_every_minutes": 2.0,
    "run_name": "",
}
