"""Tasks: where examples come from. Importing this package registers the built-in tasks."""

from grpolab.tasks import arithmetic  # noqa: F401  (registers "arithmetic")
from grpolab.tasks.base import Example, Task, build_task, register_task, task_names

__all__ = ["Example", "Task", "build_task", "register_task", "task_names"]
