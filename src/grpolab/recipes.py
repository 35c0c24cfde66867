"""Named recipes: each expands to exact values of the algorithm knobs in `AlgoConfig`.

A recipe only sets defaults. Any knob the user sets explicitly wins over the recipe, and the run's
`config.json` records the fully expanded knobs, so a run never depends on this table changing later.

Sources are given per recipe; where a paper leaves a value open, the value chosen here says so in `notes`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

# The value every knob takes when a recipe does not mention it.
BASE_KNOBS: Mapping[str, Any] = {
    "advantage_baseline": "mean",  # mean | leave-one-out
    "advantage_scale": "group-std",  # group-std | batch-std | none
    "std_eps": 1e-4,
    "loss_aggregation": "seq-mean-token-mean",
    "objective": "clip",  # clip | cispo | pg
    "ratio_level": "token",  # token | sequence
    "clip_low": 0.2,
    "clip_high": 0.2,
    "beta": 0.0,
    "kl_estimator": "none",  # none | k1 | k2 | k3 | k3-unbiased
    "num_updates": 1,
    "tis_cap": 0.0,  # 0 = off
    "offpolicy_mask_delta": 0.0,  # 0 = off
    "keep_sampling_mask": False,
    "zero_variance": "keep",  # keep | filter
    "resample_budget": 0,
    "overlong": "none",  # none | mask | penalty
    "overlong_buffer": 0,  # tokens; 0 = a quarter of max_new_tokens
}


@dataclass(frozen=True)
class Recipe:
    name: str
    source: str
    knobs: Mapping[str, Any] = field(default_factory=dict)
    notes: str = ""

    def expanded(self) -> dict[str, Any]:
        """Every knob with its value under this recipe."""
        return {**BASE_KNOBS, **self.knobs}


RECIPES: Mapping[str, Recipe] = {
    r.name: r
    for r in [
        Recipe(
            "grpo",
            "DeepSeekMath (Shao et al., 2024), arXiv:2402.03300",
            {"advantage_scale": "group-std", "std_eps": 1e-4, "loss_aggregation": "seq-mean-token-mean",
             "beta": 0.04, "kl_estimator": "k3"},
        ),
        Recipe(
            "dr-grpo",
            "Understanding R1-Zero-Like Training (Liu et al., 2025), arXiv:2503.20783",
            {"advantage_scale": "none", "loss_aggregation": "seq-mean-token-sum-norm", "beta": 0.0},
        ),
        Recipe(
            "dapo",
            "DAPO (Yu et al., 2025), arXiv:2503.14476",
            {"advantage_scale": "group-std", "std_eps": 1e-6, "loss_aggregation": "token-mean",
             "clip_low": 0.2, "clip_high": 0.28, "beta": 0.0, "zero_variance": "filter",
             "resample_budget": 4, "overlong": "penalty"},
            notes="resample budget and overlong buffer (a quarter of max_new_tokens) scaled down for small runs",
        ),
        Recipe(
            "olmo3",
            "Olmo 3 (OLMo team, 2025), OlmoRL; TIS from Yao et al., 2025",
            {"advantage_scale": "none", "loss_aggregation": "token-mean", "clip_low": 0.2, "clip_high": 0.272,
             "tis_cap": 2.0, "beta": 0.0, "zero_variance": "filter", "resample_budget": 4},
            notes="clip-higher 0.272 and TIS cap 2.0 as reported for OlmoRL",
        ),
        Recipe(
            "deepseek-v3.2",
            "DeepSeek-V3.2 (DeepSeek-AI, 2025), section on scaling GRPO",
            {"advantage_scale": "group-std", "std_eps": 1e-4, "loss_aggregation": "seq-mean-token-mean",
             "beta": 0.04, "kl_estimator": "k3-unbiased", "offpolicy_mask_delta": 0.1, "keep_sampling_mask": True},
            notes="delta 0.1 (the paper leaves it open); beta as grpo",
        ),
        Recipe(
            "gspo",
            "GSPO (Zheng et al., 2025), arXiv:2507.18071",
            {"advantage_scale": "group-std", "std_eps": 1e-6, "loss_aggregation": "seq-mean-token-mean",
             "ratio_level": "sequence", "clip_low": 3e-4, "clip_high": 4e-4, "beta": 0.0},
            notes="sequence ratio is the geometric mean of token ratios; clip range from the paper",
        ),
        Recipe(
            "rloo",
            "RLOO (Ahmadian et al., 2024), arXiv:2402.14740",
            {"advantage_baseline": "leave-one-out", "advantage_scale": "none", "loss_aggregation": "token-mean",
             "beta": 0.0},
        ),
        Recipe(
            "reinforce",
            "Reasoning from Scratch ch. 6: on-policy REINFORCE with group-normalised advantages",
            {"advantage_scale": "group-std", "std_eps": 1e-4, "loss_aggregation": "seq-mean-token-sum",
             "objective": "pg", "beta": 0.0},
        ),
        Recipe(
            "cispo",
            "MiniMax-M1 (MiniMax, 2025), arXiv:2506.13585",
            {"advantage_scale": "group-std", "std_eps": 1e-6, "loss_aggregation": "token-mean", "objective": "cispo",
             "clip_low": 1.0, "clip_high": 4.0, "beta": 0.0},
            notes="IS weight clipped to [1-clip_low, 1+clip_high] (no lower clip by default) and detached",
        ),
    ]
}
