"""Multi-digit multiplication: 'What is 47 * 386?', levels by the operands' digit counts."""

from __future__ import annotations

import random
from typing import Any

from grpolab.tasks.base import Example, register_task
from grpolab.tasks.generated import GeneratedTask, check_generated

# level -> (digits of the first factor, digits of the second factor)
LEVELS: dict[int, tuple[int, int]] = {1: (2, 1), 2: (2, 2), 3: (3, 2), 4: (3, 3), 5: (4, 4)}


def _range(digits: int) -> tuple[int, int]:
    """Factors with exactly `digits` digits; one-digit factors skip 0 and 1 (nothing to multiply)."""
    return (2, 9) if digits == 1 else (10 ** (digits - 1), 10**digits - 1)


def make_draw(level: int):
    (lo_a, hi_a), (lo_b, hi_b) = (_range(d) for d in LEVELS[level])

    def draw(rng: random.Random) -> Example:
        a, b = rng.randint(lo_a, hi_a), rng.randint(lo_b, hi_b)
        return Example(id=f"{a}*{b}", prompt=f"What is {a} * {b}?", answer=str(a * b),
                       meta={"a": a, "b": b, "level": level})

    space = (hi_a - lo_a + 1) * (hi_b - lo_b + 1)
    return draw, space


@register_task("multiply", summary="multi-digit multiplication", levels=tuple(LEVELS))
def _build(cfg: Any, seed: int) -> GeneratedTask:
    level = check_generated(cfg, "multiply", tuple(LEVELS))
    draw, space = make_draw(level)
    return GeneratedTask(f"multiply(level={level})", cfg.verifier or "numeric", draw, eval_size=cfg.eval_size,
                         data_seed=cfg.data_seed, seed=seed, system_prompt=cfg.system_prompt, space_size=space,
                         info={"level": level, "digits": LEVELS[level]})
