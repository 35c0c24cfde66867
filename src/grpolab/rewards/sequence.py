"""The list verifier (sorting task): the answer is a list of items, compared in order, case-insensitively.

Reasons: 'correct', 'no answer found', 'wrong order' (the right items in another order), 'wrong items'.
"""

from __future__ import annotations

import re

from grpolab.rewards.extract import tagged_answer
from grpolab.rewards.verify import Verdict, register_verifier
from grpolab.tasks.base import Example


def parse_items(text: str) -> list[str]:
    """'apple, Fig and pear' / '1. apple\\n2. fig' / '[apple, fig]' -> ['apple', 'fig', 'pear'] (lowercased)."""
    s = text.strip().strip("[]").strip()
    if any(sep in s for sep in ",;\n") or re.search(r"\band\b", s):
        parts = re.split(r"\s*(?:[,;\n]|\band\b)\s*", s)
    else:
        parts = s.split()
    items = []
    for part in parts:
        part = re.sub(r"^(?:\d+[.)]|[-*•])\s*", "", part.strip())
        part = re.sub(r"^and\s+", "", part, flags=re.I).strip().strip("'\"`.").strip()
        if part:
            items.append(part.lower())
    return items


def extract_list(text: str, mode: str) -> str | None:
    """strict: the <answer> tags. lenient: the tags, else a numbered or bulleted list at the end, else the last
    non-empty line (after its last ':')."""
    tagged = tagged_answer(text)
    if tagged is not None:
        return tagged or None
    if mode != "lenient":
        return None
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return None
    listed = 0  # a numbered or bulleted list at the end counts as one answer
    while listed < len(lines) and re.match(r"(?:\d+[.)]|[-*•])\s", lines[-1 - listed]):
        listed += 1
    if listed >= 2:
        return "\n".join(lines[-listed:])
    return lines[-1].rsplit(":", 1)[-1].strip() or None


def verify_list(text: str, example: Example, mode: str = "lenient") -> Verdict:
    answer = extract_list(text, mode)
    got = parse_items(answer) if answer else []
    if not got:
        return Verdict(False, "no answer found", answer)
    expected = parse_items(example.answer)
    if got == expected:
        return Verdict(True, "correct", answer)
    return Verdict(False, "wrong order" if sorted(got) == sorted(expected) else "wrong items", answer)


register_verifier("list", verify_list)
