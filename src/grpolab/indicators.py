"""Text indicators of reasoning behaviour ("aha" signals): self-checking phrases and answer format.

Pure string functions; they describe completions and never change rewards.
"""

from __future__ import annotations

import re
from typing import Sequence

from grpolab.rewards.extract import has_answer_format

SELF_CHECK = re.compile(
    r"\b(wait|let me (?:check|verify|re-?check|double[- ]check)|double[- ]check|verify|verifying|re-?check|"
    r"let's check|let us check|hmm|on second thought|actually,)\b",
    re.I,
)


def self_check_rate(texts: Sequence[str]) -> float:
    """Fraction of completions that contain a self-verification phrase ('wait', 'let me check', ...)."""
    return sum(1 for t in texts if SELF_CHECK.search(t)) / max(len(texts), 1)


def format_rate(texts: Sequence[str]) -> float:
    """Fraction of completions that end with exactly one <answer>...</answer> block."""
    return sum(1 for t in texts if has_answer_format(t)) / max(len(texts), 1)
