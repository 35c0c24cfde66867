"""Find the last `\\boxed{...}` in LaTeX text, with nested braces. Used by the MATH loader and the math verifier."""

from __future__ import annotations

import re

_BOXED = re.compile(r"\\(?:boxed|fbox)\b")


def last_boxed(text: str) -> str | None:
    """Content of the last complete `\\boxed{...}` (or `\\fbox{...}`, or `\\boxed 5`); None when there is none.

    Braces nest (`\\boxed{\\frac{1}{2}}` gives `\\frac{1}{2}`); an unclosed box is skipped in favour of an earlier
    complete one. Escaped braces `\\{` `\\}` (set notation) do not count as grouping.
    """
    for match in reversed(list(_BOXED.finditer(text))):
        i = match.end()
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            content = _braced(text, i)
            if content is not None:
                return content.strip()
        elif i > match.end():  # '\boxed 5': the next token, up to whitespace or '$'
            token = re.match(r"[^\s$]+", text[i:])
            if token:
                return token.group(0)
    return None


def _braced(text: str, start: int) -> str | None:
    """The text inside the braces opening at `start`, or None when they never close."""
    depth = 0
    i = start
    while i < len(text):
        ch = text[i]
        if ch == "\\":  # skip the escaped character (\{ and \} are literal braces)
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1:i]
        i += 1
    return None
