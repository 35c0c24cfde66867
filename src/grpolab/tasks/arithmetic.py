"""Generated arithmetic problems with difficulty knobs (digits, number of terms, operators).

The held-out split is drawn first from `data_seed`; training draws come from the run seed and reject any
held-out problem, so the two never overlap. For tiny problem spaces (one-digit addition has 100 problems)
the held-out split is capped at half the space so there is something left to train on.
"""

from __future__ import annotations

import math
import random
from typing import Any, Sequence

from grpolab.errors import UserError
from grpolab.tasks.base import Example, register_task

OPERATORS = "+-*"


def _evaluate(operands: Sequence[int], ops: Sequence[str]) -> int:
    """Evaluate with the usual precedence (* before + and -), without eval()."""
    terms: list[int] = [operands[0]]
    signs: list[str] = []
    for op, value in zip(ops, operands[1:]):
        if op == "*":
            terms[-1] *= value
        else:
            signs.append(op)
            terms.append(value)
    total = terms[0]
    for sign, value in zip(signs, terms[1:]):
        total = total + value if sign == "+" else total - value
    return total


class ArithmeticTask:
    verifier = "numeric"

    def __init__(self, digits: int = 1, terms: int = 2, operators: str = "+", eval_size: int = 100,
                 data_seed: int = 1234, seed: int = 0, system_prompt: str = "") -> None:
        bad = sorted(set(operators) - set(OPERATORS))
        if not operators or bad:
            raise UserError(f"--operators '{operators}' may only use {OPERATORS!r} (bad: {''.join(bad) or 'empty'}). "
                            "Fix: e.g. --operators '+-'")
        self.digits, self.terms, self.operators = digits, terms, "".join(sorted(set(operators), key=OPERATORS.index))
        self.seed, self.data_seed, self.system_prompt = seed, data_seed, system_prompt
        self.name = f"arithmetic(digits={digits},terms={terms},ops={self.operators})"
        self.low = 0 if digits == 1 else 10 ** (digits - 1)
        self.high = 10**digits - 1
        self.space_size = (self.high - self.low + 1) ** terms * len(self.operators) ** (terms - 1)
        if eval_size > self.space_size // 2:
            raise UserError(
                f"--eval-size {eval_size} is too large for {self.name}: it has only {self.space_size} distinct "
                f"problems and at least half must stay for training. Fix: --eval-size {max(1, self.space_size // 2)} "
                "or more --digits/--terms"
            )
        self._eval = self._draw_eval(eval_size)
        self._eval_keys = {e.id for e in self._eval}

    def _draw(self, rng: random.Random) -> Example:
        operands = [rng.randint(self.low, self.high) for _ in range(self.terms)]
        ops = [rng.choice(self.operators) for _ in range(self.terms - 1)]
        text = str(operands[0]) + "".join(f" {op} {v}" for op, v in zip(ops, operands[1:]))
        answer = _evaluate(operands, ops)
        return Example(id=text.replace(" ", ""), prompt=f"What is {text}?", answer=str(answer),
                       meta={"operands": operands, "ops": ops})

    def _draw_eval(self, n: int) -> list[Example]:
        rng = random.Random(f"arithmetic-eval:{self.data_seed}:{self.digits}:{self.terms}:{self.operators}")
        seen: dict[str, Example] = {}
        while len(seen) < n:
            ex = self._draw(rng)
            seen.setdefault(ex.id, ex)
        return list(seen.values())

    def train_example(self, index: int) -> Example:
        rng = random.Random(f"arithmetic-train:{self.seed}:{self.data_seed}:{index}")
        for _ in range(10_000):
            ex = self._draw(rng)
            if ex.id not in self._eval_keys:
                return ex
        raise AssertionError("unreachable: at least half the problem space is training data")

    def eval_examples(self) -> Sequence[Example]:
        return self._eval

    def difficulty(self) -> dict[str, Any]:
        return {"digits": self.digits, "terms": self.terms, "operators": self.operators,
                "space_size": self.space_size, "log10_space": round(math.log10(self.space_size), 2)}


@register_task("arithmetic", summary="generated arithmetic (level = --digits)", levels=(1, 2, 3, 4),
               level_field="digits")
def _build(cfg: Any, seed: int) -> ArithmeticTask:
    return ArithmeticTask(digits=cfg.digits, terms=cfg.terms, operators=cfg.operators, eval_size=cfg.eval_size,
                          data_seed=cfg.data_seed, seed=seed, system_prompt=cfg.system_prompt)
