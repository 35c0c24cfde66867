"""Named settings for the main job (`grpolab demo`, `make demo`). Chosen by experiment: see docs/experiments.md."""

from __future__ import annotations

from typing import Any

DEMO: dict[str, Any] = {
    "task": "arithmetic",
    "digits": 2,
    "terms": 2,
    "operators": "+",
    "eval_size": 100,
    "group_size": 8,
    "max_new_tokens": 64,
    "lr": 1e-5,
    "steps": 60,
    "eval_every": 20,
    "run_name": "",
}
