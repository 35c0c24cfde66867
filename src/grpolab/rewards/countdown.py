"""The Countdown verifier: read the equation, evaluate it safely, check the numbers and the value.

Reasons: 'correct', 'no answer found', 'parse error', 'disallowed syntax' (names, calls, powers, unary minus,
decimals), 'division by zero', 'wrong numbers' (not each given number exactly once), 'not equal'.
"""

from __future__ import annotations

import re

from grpolab.rewards.extract import tagged_answer
from grpolab.rewards.verify import Verdict, register_verifier
from grpolab.tasks.base import Example
from grpolab.tasks.countdown import ExpressionError, evaluate_expression

_CANDIDATE = re.compile(r"[\d(][\d\s+\-*/×÷()=.]*")
_OPERATOR = re.compile(r"[+\-*/×÷]")
_SYMBOLS = {"×": "*", "÷": "/", "−": "-", "\\times": "*", "\\div": "/", "\\cdot": "*", "x": "*"}


def extract_equation(text: str, mode: str) -> str | None:
    """strict: the <answer> tags. lenient: the tags, else the last run of digits and operators with an operator."""
    tagged = tagged_answer(text)
    if tagged is not None:
        return tagged or None
    if mode != "lenient":
        return None
    found = [m.group(0).strip().rstrip(".=").strip() for m in _CANDIDATE.finditer(text)]
    found = [f for f in found if _OPERATOR.search(f)]
    return found[-1] if found else None


def _expression_side(equation: str) -> str:
    """'(3 + 5) * 2 = 16' -> '(3 + 5) * 2': the side with operators (the first when both have some)."""
    sides = [s.strip() for s in equation.split("=") if s.strip()]
    with_ops = [s for s in sides if _OPERATOR.search(s.lstrip("-"))]
    return with_ops[0] if with_ops else (sides[0] if sides else "")


def verify_countdown(text: str, example: Example, mode: str = "lenient") -> Verdict:
    if "nums" not in example.meta or "target" not in example.meta:
        raise ValueError(f"example {example.id!r} has no 'nums'/'target' in its meta; it is not a Countdown example")
    equation = extract_equation(text, mode)
    if equation is None:
        return Verdict(False, "no answer found")
    expression = equation
    for symbol, op in _SYMBOLS.items():
        if symbol == "x":  # '3 x 4' as multiplication, only between spaced numbers
            expression = re.sub(r"(?<=[\d)])\s+x\s+(?=[\d(])", " * ", expression)
        else:
            expression = expression.replace(symbol, op)
    try:
        value, used = evaluate_expression(_expression_side(expression))
    except ExpressionError as e:
        return Verdict(False, e.reason, equation)
    if sorted(used) != sorted(example.meta["nums"]):
        return Verdict(False, "wrong numbers", equation)
    if value != example.meta["target"]:
        return Verdict(False, "not equal", equation)
    return Verdict(True, "correct", equation)


register_verifier("countdown", verify_countdown)
