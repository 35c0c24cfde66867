"""A difficulty curriculum: train where groups carry signal, move up as the model improves.

GRPO learns only from groups whose completions disagree. A level the model never solves gives all-zero
groups and no gradient, so `--curriculum` starts below the target level: at the hardest level whose base pass
rate (measured at start on a few training problems, as `grpolab calibrate` does) reaches `--curriculum-min-pass`,
or at `--curriculum-start` when given. It promotes to the next level when the pass rate of the last
`--curriculum-window` groups reaches `--curriculum-promote`, and stays at the target level once there.

Evaluation always uses the target level's held-out split (the one the run is judged on), and lower levels
never serve a training problem whose prompt is in it.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import Any, Callable, Sequence

from grpolab.errors import UserError
from grpolab.tasks import Example, Task, build_task, task_info


def curriculum_levels(task_cfg: Any) -> tuple[str, list[int]]:
    """(the task config field that holds the level, the levels from the easiest up to the configured one)."""
    info = task_info(task_cfg.task)
    if not info.levels:
        raise UserError(f"--curriculum needs a task with difficulty levels; '{info.name}' has none. "
                        "Fix: drop --curriculum, or use arithmetic, multiply, linear, sort or countdown")
    target = getattr(task_cfg, info.level_field) or info.levels[0]
    levels = [lv for lv in info.levels if lv <= target]
    if target not in info.levels:
        raise UserError(f"--{info.level_field.replace('_', '-')} {target} is not a level of task '{info.name}' "
                        f"(levels: {', '.join(map(str, info.levels))})")
    return info.level_field, levels


class Curriculum:
    """A Task whose training examples come from the current level; held-out examples from the target level."""

    def __init__(self, task_cfg: Any, seed: int, start: int, promote: float, window: int,
                 target_task: Task | None = None) -> None:
        self.field, self.levels = curriculum_levels(task_cfg)
        # lower levels are only trained on: their own held-out split is one problem (the target's may not fit);
        # the target level is the configured task itself (passed in when the caller has built it already)
        self.tasks: dict[int, Task] = {
            lv: build_task(dataclasses.replace(task_cfg, **{self.field: lv}, eval_size=1), seed)
            for lv in self.levels[:-1]}
        self.tasks[self.levels[-1]] = target_task or build_task(task_cfg, seed)
        target = self.tasks[self.levels[-1]]
        self.name = f"curriculum({target.name})"
        self.verifier, self.system_prompt = target.verifier, target.system_prompt
        self.promote, self.window = promote, window
        self._held_out = {ex.prompt for ex in target.eval_examples()}
        self.level = self.levels[0]
        self.set_level(start or self.levels[0])
        self.recent: deque[float] = deque(maxlen=window)

    @property
    def target(self) -> int:
        return self.levels[-1]

    def set_level(self, level: int) -> None:
        if level not in self.levels:
            raise UserError(f"--curriculum-start {level} is not among the levels {self.levels} up to the target "
                            f"--{self.field.replace('_', '-')} {self.target}")
        self.level = level

    def train_example(self, index: int) -> Example:
        task = self.tasks[self.level]
        ex = task.train_example(index)
        hop = 0
        while self.level != self.target and ex.prompt in self._held_out:  # never train on a held-out problem
            hop += 1
            ex = task.train_example(index + hop * 1_000_003)
        return dataclasses.replace(ex, meta={**ex.meta, "level": self.level})

    def eval_examples(self) -> Sequence[Example]:
        return self.tasks[self.target].eval_examples()

    def observe(self, pass_rates: Sequence[float]) -> int | None:
        """Record the pass rate of each group trained at the current level; returns the new level on promotion."""
        self.recent.extend(pass_rates)
        if (self.level != self.target and len(self.recent) == self.window
                and sum(self.recent) / self.window >= self.promote):
            self.level = self.levels[self.levels.index(self.level) + 1]
            self.recent.clear()
            return self.level
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"level": self.level, "recent": list(self.recent)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.set_level(int(state["level"]))
        self.recent = deque((float(x) for x in state["recent"]), maxlen=self.window)


def choose_start(curriculum: Curriculum, pass_rate: Callable[[int], float], min_pass: float) -> tuple[int, dict[int, float]]:
    """The hardest level whose measured pass rate reaches `min_pass` (the easiest when none does), and the rates.

    Levels are measured from the target down and measuring stops at the first that qualifies."""
    rates: dict[int, float] = {}
    for level in reversed(curriculum.levels):
        rates[level] = pass_rate(level)
        if rates[level] >= min_pass:
            return level, rates
    return curriculum.levels[0], rates


def base_pass_rate(curriculum: Curriculum, level: int, model: Any, engine: Any, tokenizer: Any, params: Any,
                   generator: Any, problems: int, answer_mode: str, batch: int) -> float:
    """Sampled pass rate of the model on `problems` training problems of `level` (the calibrate measurement)."""
    from grpolab.calibrate import sample_texts, score_level

    task = curriculum.tasks[level]
    examples = [task.train_example(10_000_000 + i) for i in range(problems)]  # not the run's first problems
    texts = sample_texts(model, engine, tokenizer, task.system_prompt, [ex.prompt for ex in examples], params,
                         generator, batch)
    return score_level(level, examples, texts, task.verifier, answer_mode, params.group_size, 0.0, 1.0).pass_rate
