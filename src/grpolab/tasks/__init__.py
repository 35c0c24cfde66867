"""Tasks: where examples come from. Importing this package registers the built-in tasks."""

from grpolab.tasks import arithmetic, code, countdown, dataset, linear, multiply, sorting  # noqa: F401  (registration)
from grpolab.tasks.base import Example, Task, TaskInfo, build_task, register_task, task_info, task_names

__all__ = ["Example", "Task", "TaskInfo", "build_task", "register_task", "task_info", "task_names"]
