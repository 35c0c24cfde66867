"""Linear equations in one unknown: 'Solve for x: 3x - 7 = 11.', levels from one-step to fractional solutions.

level 1: a x + b = c, small positive integers and solution; level 2: signed coefficients and solution;
level 3: x on both sides; level 4: x on both sides with a non-integer rational solution (answer 'p/q').
Every problem is built from its solution, so the answer is exact by construction (checked again by substitution).
"""

from __future__ import annotations

import random
from fractions import Fraction
from typing import Any

from grpolab.tasks.base import Example, register_task
from grpolab.tasks.generated import GeneratedTask, check_generated

LEVELS = (1, 2, 3, 4)


def side(a: int, b: int) -> str:
    """'3x - 7', '-x + 2', 'x', '5' for a x + b."""
    if a == 0:
        return str(b)
    coef = "" if a == 1 else "-" if a == -1 else str(a)
    text = f"{coef}x"
    if b:
        text += f" + {b}" if b > 0 else f" - {-b}"
    return text


def _nonzero(rng: random.Random, lo: int, hi: int) -> int:
    while True:
        v = rng.randint(lo, hi)
        if v:
            return v


def _draw_coefficients(rng: random.Random, level: int) -> tuple[int, int, int, int, Fraction]:
    """(a, b, c, d, x) with a x + b = c x + d and a != c."""
    if level in (1, 2):
        lo, hi = (1, 10) if level == 1 else (-20, 20)
        a = rng.randint(2, 9) if level == 1 else _nonzero(rng, -12, 12)
        x = Fraction(rng.randint(lo, hi))
        b = rng.randint(1, 20) if level == 1 else _nonzero(rng, -30, 30)
        return a, b, 0, int(a * x + b), x
    while True:
        a, c = _nonzero(rng, -12, 12), _nonzero(rng, -12, 12)
        if a == c:
            continue
        if level == 3:
            x = Fraction(rng.randint(-15, 15))
        else:
            q = rng.randint(2, 9)
            x = Fraction(rng.randint(-40, 40), q)
            if x.denominator == 1:
                continue
        # choose b, then d = (a - c) x + b must be an integer: pick b so that it is
        b = _nonzero(rng, -30, 30)
        d = (a - c) * x + b
        if d.denominator == 1:
            return a, b, c, int(d), x


def make_draw(level: int):
    def draw(rng: random.Random) -> Example:
        a, b, c, d, x = _draw_coefficients(rng, level)
        assert a * x + b == c * x + d, "constructed solution must satisfy the equation"
        equation = f"{side(a, b)} = {side(c, d)}"
        answer = str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"
        return Example(id=equation.replace(" ", ""), prompt=f"Solve for x: {equation}.", answer=answer,
                       meta={"a": a, "b": b, "c": c, "d": d, "level": level})

    return draw


@register_task("linear", summary="linear equations in x (answers may be fractions)", levels=LEVELS)
def _build(cfg: Any, seed: int) -> GeneratedTask:
    level = check_generated(cfg, "linear", LEVELS)
    return GeneratedTask(f"linear(level={level})", cfg.verifier or "math", make_draw(level), eval_size=cfg.eval_size,
                         data_seed=cfg.data_seed, seed=seed, system_prompt=cfg.system_prompt,
                         space_size=8 * 10 * 20 if level == 1 else None, info={"level": level})
