"""The code verifier and the `tests_passed` reward: run the completion's Python in the sandbox against the tests.

The example's meta holds `function` (the name to call), `inputs` (argument lists), `expected` (outputs) and
`limits` (wall_s, memory_mb). `correct` is 1 when every test passes; `tests_passed` gives the passed share
(partial credit). Both share one sandbox run per (example, code) through a small cache.

Reasons: 'correct', 'no code found', 'tests failed (k/n passed)', or the sandbox status: 'timeout',
'cpu limit', 'memory limit', 'blocked: network (...)', 'syntax error', 'error', 'crashed', ...
"""

from __future__ import annotations

import math
import re
import threading
from collections import OrderedDict
from typing import Any

from grpolab.rewards.extract import tagged_answer
from grpolab.rewards.sandbox import Limits, SandboxResult, run_function_tests
from grpolab.rewards.terms import register_reward_term
from grpolab.rewards.verify import Verdict, register_verifier
from grpolab.tasks.base import Example

_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)```", re.S | re.I)
CACHE_SIZE = 512


def extract_code(text: str, mode: str, function: str) -> str | None:
    """strict: the <answer> tags (a fenced block inside them, or their content). lenient: the tags, else the last
    ```python block, else everything from `def <function>(` on (a completion cut off before its closing fence)."""
    tagged = tagged_answer(text)
    if tagged is None and mode != "lenient":
        return None
    source = text if tagged is None else tagged
    blocks = _FENCE.findall(source)
    if blocks:
        return blocks[-1] if blocks[-1].strip() else None
    if tagged is not None:
        return tagged or None
    m = re.search(rf"^[ \t]*def {re.escape(function)}\s*\(", source, re.M)
    return source[m.start():] if m else None


def limits_for(example: Example) -> Limits:
    given = example.meta.get("limits", {})
    wall = float(given.get("wall_s", 5.0))
    return Limits(wall_s=wall, cpu_s=max(1, math.ceil(wall)), memory_mb=int(given.get("memory_mb", 512)))


class _Cache:
    """Recent sandbox results by (example id, code): the correct and tests_passed terms run the code once."""

    def __init__(self, size: int) -> None:
        self._data: OrderedDict[tuple[str, str], SandboxResult] = OrderedDict()
        self._size, self._lock = size, threading.Lock()

    def run(self, code: str, example: Example) -> SandboxResult:
        key = (example.id, code)
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        meta = _require(example)
        result = run_function_tests(code, meta["function"], meta["inputs"], meta["expected"], limits_for(example))
        with self._lock:
            self._data[key] = result
            while len(self._data) > self._size:
                self._data.popitem(last=False)
        return result


_CACHE = _Cache(CACHE_SIZE)


def _require(example: Example) -> dict[str, Any]:
    missing = [k for k in ("function", "inputs", "expected") if k not in example.meta]
    if missing:
        raise ValueError(f"example {example.id!r} has no {', '.join(missing)} in its meta; it is not a code example")
    return dict(example.meta)


def reason_for(result: SandboxResult) -> str:
    if result.all_passed:
        return "correct"
    if result.status == "ok":
        return f"tests failed ({result.passed}/{result.total} passed)"
    if result.status == "blocked":
        return f"blocked: {result.detail}"
    return result.status


def verify_code(text: str, example: Example, mode: str = "lenient") -> Verdict:
    code = extract_code(text, mode, _require(example)["function"])
    if code is None:
        return Verdict(False, "no code found")
    result = _CACHE.run(code, example)
    return Verdict(result.all_passed, reason_for(result), code[:500])


def _tests_passed(verifier: str, mode: str):  # type: ignore[no-untyped-def]
    def tests_passed(completion: str, example: Example) -> float:
        code = extract_code(completion, mode, _require(example)["function"])
        return 0.0 if code is None else _CACHE.run(code, example).fraction

    return tests_passed


register_verifier("code", verify_code)
register_reward_term("tests_passed", _tests_passed)
