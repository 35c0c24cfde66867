"""The math verifier: find the answer, normalise it, and decide equivalence with the reference.

Order of tests, cheapest first: equal strings after normalisation; equal values (exact rationals, or complex
numbers within 1e-9 relative); equal expressions by sympy in a worker process with a time limit. Tuples and
intervals compare in order with the same brackets; sets and lists ('1, 2', '\\{1, 2\\}', '1 \\pm \\sqrt{2}')
compare as multisets; unions of intervals as sets of intervals; matrices cell by cell.

Reasons: 'correct', 'no answer found', 'parse error' (the answer is not math we can read), 'not equal',
'timeout' (sympy did not decide in time).
"""

from __future__ import annotations

import re
from fractions import Fraction

from grpolab.rewards.extract import last_number, tagged_answer
from grpolab.rewards.mathnorm import Structure, compact, normalize, split_top, structure
from grpolab.rewards.mathparse import NotNumeric, ParseError, evaluate, numbers_equal, to_python
from grpolab.rewards.symbolic import symbolic_equal
from grpolab.rewards.verify import Verdict, register_verifier
from grpolab.tasks.base import Example
from grpolab.tasks.boxed import last_boxed

SYMBOLIC_TIMEOUT_S = 3.0
_RANK = {"correct": 0, "not equal": 1, "parse error": 2, "timeout": 3}  # which failure to report


_FINAL = re.compile(r"(?:answer is|answer:|=)", re.I)


def _final_statement(text: str) -> str | None:
    """'... so x = -14/3.' -> '-14/3': what follows the last '=' or 'answer is' on the last line, if it is math."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    marks = list(_FINAL.finditer(lines[-1])) if lines else []
    if not marks:
        return None
    tail = lines[-1][marks[-1].end():].strip().strip("$").strip().rstrip(".").strip().strip("$").strip()
    try:
        to_python(normalize(tail))
    except ParseError:
        return None
    return tail


def extract_math_answer(text: str, mode: str) -> str | None:
    """strict: the <answer> tags (a \\boxed{} inside them is unwrapped). lenient: the tags, else the last
    \\boxed{}, else the math after the last '=' or 'answer is' on the last line, else the last number."""
    tagged = tagged_answer(text)
    if tagged is not None:
        return (last_boxed(tagged) or tagged) if tagged else None
    if mode != "lenient":
        return None
    return last_boxed(text) or _final_statement(text) or last_number(text)


def _value(expr: str) -> Fraction | complex | None:
    try:
        return evaluate(expr)
    except NotNumeric:
        return None


def scalar_equal(pred: str, gold: str, timeout: float = SYMBOLIC_TIMEOUT_S) -> str:
    """Reason for two normalised scalar answers: 'correct', 'not equal', 'parse error' or 'timeout'."""
    if compact(pred) == compact(gold):
        return "correct"
    if "=" in gold and "=" in pred:  # equations: side by side, or with the sides swapped
        (gl, _, gr), (pl, _, pr) = gold.partition("="), pred.partition("=")
        straight = [scalar_equal(pl, gl, timeout), scalar_equal(pr, gr, timeout)]
        if straight == ["correct", "correct"]:
            return "correct"
        swapped = [scalar_equal(pl, gr, timeout), scalar_equal(pr, gl, timeout)]
        return "correct" if swapped == ["correct", "correct"] else max(straight + swapped, key=_RANK.get)
    try:
        gold_py = to_python(gold)
    except ParseError:
        return "not equal"  # the reference is text, and the texts differ
    try:
        pred_py = to_python(pred)
    except ParseError:
        return "parse error"
    gv, pv = _value(gold_py), _value(pred_py)
    if gv is not None and pv is not None:
        return "correct" if numbers_equal(pv, gv) else "not equal"
    result = symbolic_equal(pred_py, gold_py, timeout)
    return "correct" if result.equal else result.reason


def _multiset(pred: tuple, gold: tuple, timeout: float) -> str:
    if len(pred) != len(gold):
        return "not equal"
    unused = list(pred)
    worst = "correct"
    for g in gold:
        for i, p in enumerate(unused):
            reason = structure_equal(p, g, timeout)
            if reason == "correct":
                del unused[i]
                break
            worst = max(worst, reason, key=_RANK.get)
        else:
            return "not equal" if worst == "correct" else worst
    return "correct"


def _in_order(pred: tuple, gold: tuple, timeout: float) -> str:
    if len(pred) != len(gold):
        return "not equal"
    reasons = [structure_equal(p, g, timeout) for p, g in zip(pred, gold)]
    return max(reasons, key=_RANK.get)


def structure_equal(pred: Structure | str, gold: Structure | str, timeout: float = SYMBOLIC_TIMEOUT_S) -> str:
    """Compare two answers (strings are normalised items of an enclosing structure)."""
    p = structure(pred) if isinstance(pred, str) else pred
    g = structure(gold) if isinstance(gold, str) else gold
    if g.kind == "scalar" and p.kind == "scalar":
        return scalar_equal(p.items[0], g.items[0], timeout)
    if g.kind == "matrix":
        return _in_order(p.items, g.items, timeout) if p.kind == "matrix" else "not equal"
    if g.kind == "tuple":
        if p.kind == "tuple" and (p.open, p.close) == (g.open, g.close):
            return _in_order(p.items, g.items, timeout)
        if p.kind == "list" and (g.open, g.close) == ("(", ")"):  # '1, 2' for the point (1, 2)
            return _in_order(p.items, g.items, timeout)
        return "not equal"
    if g.kind in ("set", "list"):
        return _multiset(p.items, g.items, timeout) if p.kind in ("set", "list") else "not equal"
    if g.kind == "union":
        return _multiset(p.items, g.items, timeout) if p.kind == "union" else "not equal"
    return "not equal"


def math_equal(pred: str, gold: str, timeout: float = SYMBOLIC_TIMEOUT_S) -> str:
    """Reason for a raw predicted answer against a raw reference answer (both normalised here)."""
    p, g = normalize(pred), normalize(gold)
    if not p:
        return "no answer found"
    return structure_equal(p, g, timeout)


def verify_math(text: str, example: Example, mode: str = "lenient",
                timeout: float = SYMBOLIC_TIMEOUT_S) -> Verdict:
    answer = extract_math_answer(text, mode)
    if answer is None or not answer.strip():
        return Verdict(False, "no answer found")
    reason = math_equal(answer, example.answer, timeout)
    return Verdict(reason == "correct", reason, answer)


register_verifier("math", verify_math)
__all__ = ["extract_math_answer", "math_equal", "scalar_equal", "split_top", "structure_equal", "verify_math"]
