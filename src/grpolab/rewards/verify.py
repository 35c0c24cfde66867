"""Verifiers decide whether a completion's answer is right, and say why not.

One verifier serves both the training reward and evaluation, so the two can never disagree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Callable

from grpolab.errors import unknown_choice
from grpolab.rewards.extract import NUMBER, extract_answer
from grpolab.tasks.base import Example


@dataclass(frozen=True)
class Verdict:
    correct: bool
    reason: str  # 'correct', 'no answer found', 'not a number', 'not equal', ... (each verifier documents its own)
    extracted: str | None = None


Verifier = Callable[[str, Example, str], Verdict]


_CURRENCY = re.compile(r"\\?[$€£¥₹]|\b(?:USD|EUR|GBP)\b", re.I)


def parse_number(text: str) -> Decimal | None:
    """Parse '1,234', '-5', '$3.50', '-$3.50', '€ 7', '7.', '12%', '+4', '\u22122' into a Decimal.

    None when the text holds no number or more than one (a fraction '1/2' is two numbers: not a plain number).
    """
    s = text.strip().replace("\u2212", "-").replace("\\%", "%").replace("{,}", ",")
    s = _CURRENCY.sub("", s).replace("%", "").strip().rstrip(".").strip()
    s = re.sub(r"^([-+])\s+(?=\d)", r"\1", s)  # '- 5' after '-$ 5' lost its symbol
    if s.startswith("+"):
        s = s[1:]
    if not NUMBER.fullmatch(s):
        found = NUMBER.findall(s)
        if len(found) != 1:
            return None
        s = found[0]
    try:
        return Decimal(s.replace(",", ""))
    except InvalidOperation:
        return None


def verify_numeric(text: str, example: Example, mode: str = "lenient") -> Verdict:
    """Correct when the extracted answer equals the reference number exactly."""
    answer, _ = extract_answer(text, mode)
    if answer is None:
        return Verdict(False, "no answer found")
    got = parse_number(answer)
    if got is None:
        return Verdict(False, "not a number", answer)
    expected = parse_number(example.answer)
    if expected is None:
        raise ValueError(f"reference answer {example.answer!r} of example {example.id!r} is not a number")
    return Verdict(got == expected, "correct" if got == expected else "not equal", answer)


_VERIFIERS: dict[str, Verifier] = {"numeric": verify_numeric}


def register_verifier(name: str, fn: Verifier) -> None:
    _VERIFIERS[name] = fn


def verifier_names() -> list[str]:
    return sorted(_VERIFIERS)


def get_verifier(name: str) -> Verifier:
    if name not in _VERIFIERS:
        raise unknown_choice("verifier", name, sorted(_VERIFIERS))
    return _VERIFIERS[name]
