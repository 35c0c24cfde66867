"""Find the answer a completion gives. Pure string functions; they never raise on any input."""

from __future__ import annotations

import re

ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)
# A number: optional sign, digits with optional thousands separators, optional decimals.
NUMBER = re.compile(r"(?<![\w.])-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?")


def tagged_answer(text: str) -> str | None:
    """Content of the last <answer>...</answer> block, stripped; None when there is none."""
    found = ANSWER_TAG.findall(text)
    return found[-1].strip() if found else None


# '-$5', '- £3': a sign written before the currency symbol still makes the number negative.
_SIGN_BEFORE_CURRENCY = re.compile(r"-\s?[$€£¥₹]\s?(?=\d)")


def last_number(text: str) -> str | None:
    """The last number written in the text (e.g. '1,234', '-5', '2.5'); None when there is none.

    A Unicode minus counts as a minus, and so does a minus before a currency symbol ('-$5' gives '-5').
    """
    text = _SIGN_BEFORE_CURRENCY.sub("-", text.replace("\u2212", "-"))
    found = NUMBER.findall(text)
    return found[-1] if found else None


def extract_answer(text: str, mode: str) -> tuple[str | None, str]:
    """The answer and where it came from ('tags', 'last-number' or 'none').

    strict: only the <answer> tags count. lenient: the tags, else the last number in the completion.
    """
    tagged = tagged_answer(text)
    if tagged is not None:
        return tagged, "tags"
    if mode == "lenient":
        number = last_number(text)
        if number is not None:
            return number, "last-number"
    return None, "none"


def has_answer_format(text: str) -> bool:
    """True when the completion ends with exactly one non-empty <answer>...</answer> block."""
    blocks = list(ANSWER_TAG.finditer(text))
    if len(blocks) != 1 or not blocks[0].group(1).strip():
        return False
    return text[blocks[0].end():].strip() == ""
