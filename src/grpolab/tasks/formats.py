"""Turn one data row into (prompt, reference answer, meta): generic field mapping, GSM8K, MATH, Countdown.

A row that does not fit raises BadRow naming the field and the problem; the dataset task adds the file and
line. `meta['row']` keeps the source row, so custom reward functions receive its columns.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from grpolab.tasks.boxed import last_boxed
from grpolab.tasks.countdown import ExpressionError, evaluate_expression, prompt_for

_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)")


class BadRow(ValueError):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"field '{field}' {problem}")
        self.field, self.problem = field, problem


def text_field(row: Mapping[str, Any], name: str) -> str:
    if name not in row or row[name] is None:
        raise BadRow(name, f"is missing (the row has: {', '.join(map(str, row)) or 'no fields'})")
    value = row[name]
    if not isinstance(value, str):
        raise BadRow(name, f"is a {type(value).__name__}, expected text")
    if not value.strip():
        raise BadRow(name, "is empty")
    return value


def answer_field(row: Mapping[str, Any], name: str) -> str:
    """A reference answer: non-empty text, or a number (an integral float such as 72.0 becomes '72')."""
    value = row.get(name)
    if isinstance(value, bool) or (value is not None and not isinstance(value, (str, int, float))):
        raise BadRow(name, f"is a {type(value).__name__}, expected text or a number")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise BadRow(name, f"is {value}, not a usable answer")
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, int):
        return str(value)
    return text_field(row, name).strip()


def level_of(row: Mapping[str, Any]) -> int | None:
    """The difficulty level of a row: 3 or 'Level 3' (MATH); None when the row has none."""
    value = row.get("level")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(?:level\s*)?(\d+)\s*", value, re.I)
        return int(m.group(1)) if m else None
    return None


Converted = tuple[str, str, dict[str, Any]]


def generic(row: Mapping[str, Any], prompt_field: str, answer_field_name: str) -> Converted:
    return text_field(row, prompt_field).strip(), answer_field(row, answer_field_name), {}


def gsm8k(row: Mapping[str, Any], prompt_field: str, answer_field_name: str) -> Converted:
    """GSM8K: the worked solution ends in '#### N'; N loses its thousands separators ('1,450,000' -> '1450000')."""
    raw = answer_field(row, answer_field_name)
    final = raw.rsplit("####", 1)[1] if "####" in raw else raw
    final = final.strip().replace(",", "").replace("$", "")
    if not _NUMBER.fullmatch(final):
        where = "after '####'" if "####" in raw else "(no '#### N' line)"
        raise BadRow(answer_field_name, f"has no number {where}: {final[:40]!r}")
    return text_field(row, prompt_field).strip(), final, {}


def math_format(row: Mapping[str, Any], prompt_field: str, answer_field_name: str) -> Converted:
    """MATH / MATH-500: the `answer` field, else the last \\boxed{} of `solution`."""
    if row.get(answer_field_name) not in (None, ""):
        answer = answer_field(row, answer_field_name)
    elif "solution" in row:
        boxed = last_boxed(text_field(row, "solution"))
        if not boxed:
            raise BadRow("solution", "has no \\boxed{...} answer (and there is no 'answer' field)")
        answer = boxed
    else:
        raise BadRow(answer_field_name, "is missing, and there is no 'solution' with a \\boxed{} answer")
    return text_field(row, prompt_field).strip(), answer, {}


def _int_list(row: Mapping[str, Any], name: str) -> list[int]:
    value = row.get(name)
    if isinstance(value, str):
        if not _NUMBER.search(value):
            raise BadRow(name, "holds no numbers")
        if re.search(r"\d\.\d", value):
            raise BadRow(name, f"holds non-integers: {value[:40]!r}")
        value = [int(v) for v in re.findall(r"-?\d+", value)]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise BadRow(name, f"must be a list of integers, got {type(value).__name__}")
    if len(value) < 2:
        raise BadRow(name, f"must hold at least 2 numbers, got {len(value)}")
    return list(value)


def _target(row: Mapping[str, Any], name: str) -> tuple[int, str]:
    """(target, a known solution or ''): an integer, or 'expr = N', or a bare expression to evaluate."""
    value = row.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        return value, ""
    text = text_field(row, name).strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text), ""
    sides = [s.strip() for s in text.split("=")]
    for i, side in enumerate(sides):
        if re.fullmatch(r"-?\d+", side):
            return int(side), next((s for j, s in enumerate(sides) if j != i), "")
    try:
        value, _ = evaluate_expression(text)
    except ExpressionError as e:
        raise BadRow(name, f"is neither an integer nor an equation ({e.reason}): {text[:40]!r}") from None
    if value.denominator != 1:
        raise BadRow(name, f"evaluates to {value}, not an integer")
    return int(value), text


def countdown(row: Mapping[str, Any], prompt_field: str, answer_field_name: str) -> Converted:
    """Countdown rows: `nums` (or `numbers`, or `input`) and `target` (or `output`: N, 'expr = N' or expr)."""
    nums_name = prompt_field or next((k for k in ("nums", "numbers", "input") if k in row), "nums")
    target_name = answer_field_name or next((k for k in ("target", "output") if k in row), "target")
    numbers = _int_list(row, nums_name)
    target, solution = _target(row, target_name)
    return prompt_for(numbers, target), str(target), {"nums": numbers, "target": target, "solution": solution}


@dataclass(frozen=True)
class RowFormat:
    name: str
    convert: Callable[[Mapping[str, Any], str, str], Converted]
    verifier: str  # the verifier a task of this format uses unless --verifier says otherwise
    prompt_field: str  # default field names; --prompt-field / --answer-field override them
    answer_field: str


FORMATS: dict[str, RowFormat] = {
    "file": RowFormat("file", generic, "math", "prompt", "answer"),
    "gsm8k": RowFormat("gsm8k", gsm8k, "numeric", "question", "answer"),
    "math": RowFormat("math", math_format, "math", "problem", "answer"),
    "countdown": RowFormat("countdown", countdown, "countdown", "", ""),
}
