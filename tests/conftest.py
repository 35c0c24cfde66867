from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from tiny import build_tiny_model_dir  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_qwen3_dir(tmp_path_factory) -> Path:
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny-qwen3"), model_type="qwen3")


def _register_test_rewards() -> None:
    """A reward with spread on random text, so tiny-model runs have nonzero advantages."""
    from grpolab.rewards import register_reward_term

    def vowels(completion: str, example) -> float:
        return sum(c in "aeiou" for c in completion) / max(len(completion), 1)

    register_reward_term("test_vowels", lambda verifier, mode: vowels)
    register_reward_term("test_constant", lambda verifier, mode: (lambda completion, example: 0.5))


_register_test_rewards()


@pytest.fixture
def tiny_cfg(tiny_model_dir, tmp_path):
    """Settings for a fast run on the tiny model; pass overrides as keyword arguments."""
    from grpolab.config import Config

    def make(**kw):
        base = dict(model=str(tiny_model_dir), rewards="test_vowels", group_size=4, prompts_per_step=2,
                    max_new_tokens=10, steps=2, eval_size=8, out_dir=str(tmp_path / "runs"), quiet=True,
                    checkpoint_every=0, lr=1e-3)
        base.update(kw)
        return Config.from_flat(**base)

    return make
