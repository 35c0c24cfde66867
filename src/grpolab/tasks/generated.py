"""The split and data order shared by generated tasks (countdown, multiply, linear, sort, code).

Same scheme as the arithmetic task: the held-out split is drawn first from `data_seed`; the index-th training
example comes from an RNG seeded by (run seed, data seed, index) and rejects held-out problems, so the split
never overlaps and the data cursor alone resumes the exact order.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Sequence

from grpolab.errors import UserError
from grpolab.tasks.base import Example

Draw = Callable[[random.Random], Example]


def check_generated(cfg: Any, task: str, levels: Sequence[int]) -> int:
    """Refuse data flags for a task that generates its problems; return the level to use."""
    given = [f"--{k.replace('_', '-')}" for k in ("data_path", "eval_path", "hf_dataset", "prompt_field",
                                                   "answer_field") if getattr(cfg, k)]
    if given:
        raise UserError(f"task '{task}' generates its problems, so {', '.join(given)} does not apply. Fix: drop it, "
                        "or use --task file (or gsm8k, math, countdown) to read data")
    return check_level(task, cfg.level, levels) if levels else cfg.level


def check_level(task: str, level: int, levels: Sequence[int]) -> int:
    """The level to use: 0 means the easiest; anything outside `levels` is a UserError."""
    if level == 0:
        return levels[0]
    if level not in levels:
        raise UserError(f"--level {level} does not exist for task '{task}'; allowed: "
                        f"{', '.join(map(str, levels))} (0 = {levels[0]}). Fix: --level {levels[0]}")
    return level


class GeneratedTask:
    """A task built from `draw(rng) -> Example`; ids identify problems (equal ids = the same problem)."""

    def __init__(self, name: str, verifier: str, draw: Draw, *, eval_size: int, data_seed: int, seed: int,
                 system_prompt: str, space_size: int | None = None, info: dict[str, Any] | None = None) -> None:
        self.name, self.verifier, self.system_prompt = name, verifier, system_prompt
        self.seed, self.data_seed, self._draw = seed, data_seed, draw
        self.info = dict(info or {})
        if space_size is not None and eval_size > space_size // 2:
            raise UserError(f"--eval-size {eval_size} is too large for {name}: it has only {space_size} distinct "
                            f"problems and at least half must stay for training. Fix: --eval-size "
                            f"{max(1, space_size // 2)} or a higher --level")
        self._eval = self._draw_eval(eval_size)
        self._eval_ids = {e.id for e in self._eval}

    def _draw_eval(self, n: int) -> list[Example]:
        rng = random.Random(f"{self.name}-eval:{self.data_seed}")
        seen: dict[str, Example] = {}
        for _ in range(50 * n + 1000):
            if len(seen) >= n:
                break
            ex = self._draw(rng)
            seen.setdefault(ex.id, ex)
        if len(seen) < n:
            raise UserError(f"--eval-size {n} is too large for {self.name}: only {len(seen)} distinct problems were "
                            f"found. Fix: --eval-size {max(1, len(seen) // 2)} or a higher --level")
        return list(seen.values())

    def train_example(self, index: int) -> Example:
        rng = random.Random(f"{self.name}-train:{self.seed}:{self.data_seed}:{index}")
        for _ in range(10_000):
            ex = self._draw(rng)
            if ex.id not in self._eval_ids:
                return ex
        raise UserError(f"{self.name}: 10000 draws in a row were held-out problems; the held-out split covers "
                        "almost the whole problem space. Fix: a smaller --eval-size or a higher --level")

    def eval_examples(self) -> Sequence[Example]:
        return self._eval
