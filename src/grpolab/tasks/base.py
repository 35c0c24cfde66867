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
_REGISTRY: dict[str, TaskFactory] = {}


def register_task(name: str) -> Callable[[TaskFactory], TaskFactory]:
    def deco(factory: TaskFactory) -> TaskFactory:
        _REGISTRY[name] = factory
        return factory

    return deco


def task_names() -> list[str]:
    return sorted(_REGISTRY)


def build_task(task_cfg: Any, seed: int) -> Task:
    """Build the task named by `task_cfg.task`; `seed` fixes the training data order of this run."""
    if task_cfg.task not in _REGISTRY:
        raise unknown_choice("task", task_cfg.task, task_names(), "See `grpolab tasks`.")
    return _REGISTRY[task_cfg.task](task_cfg, seed)
