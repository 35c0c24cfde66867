"""The Example type every task produces, the Task protocol, and the task registry.

A task owns its data and its held-out split; it never sees a model. Training examples are addressed by a
global index (the data cursor), so a checkpoint only needs that integer to resume the exact data order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

from grpolab.errors import unknown_choice


@dataclass(frozen=True)
class Example:
    """One problem: the user-facing prompt text, the reference answer, and task-specific metadata."""

    id: str
    prompt: str
    answer: str
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "prompt": self.prompt, "answer": self.answer, "meta": dict(self.meta)}


class Task(Protocol):
    """A source of training examples and a fixed held-out split that never overlaps it."""

    name: str
    verifier: str  # name of the verifier in grpolab.rewards that decides correctness
    system_prompt: str

    def train_example(self, index: int) -> Example:
        """The index-th training example of this run's data order (deterministic, never a held-out one)."""
        ...

    def eval_examples(self) -> Sequence[Example]:
        """The held-out split, identical for every run with the same task settings and data seed."""
        ...


TaskFactory = Callable[..., Task]


@dataclass(frozen=True)
class TaskInfo:
    """What `grpolab tasks` and `grpolab calibrate` need to know about a registered task."""

    name: str
    factory: TaskFactory
    summary: str = ""
    levels: tuple[int, ...] = ()  # difficulty levels, easiest first; () when the task has none
    level_field: str = "level"  # the TaskConfig field a level is written to (arithmetic: 'digits')


_REGISTRY: dict[str, TaskInfo] = {}


def register_task(name: str, summary: str = "", levels: Sequence[int] = (),
                  level_field: str = "level") -> Callable[[TaskFactory], TaskFactory]:
    def deco(factory: TaskFactory) -> TaskFactory:
        _REGISTRY[name] = TaskInfo(name, factory, summary, tuple(levels), level_field)
        return factory

    return deco


def task_names() -> list[str]:
    return sorted(_REGISTRY)


def task_info(name: str) -> TaskInfo:
    if name not in _REGISTRY:
        raise unknown_choice("task", name, task_names(), "See `grpolab tasks`.")
    return _REGISTRY[name]


def build_task(task_cfg: Any, seed: int) -> Task:
    """Build the task named by `task_cfg.task`; `seed` fixes the training data order of this run."""
    return task_info(task_cfg.task).factory(task_cfg, seed)
