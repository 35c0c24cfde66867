"""Normalise LaTeX answers and split them into structures (scalar, tuple/interval, set, list, union, matrix).

Normalisation removes what never changes the value: `$`, `\\left`/`\\right`, spacing commands, `\\dfrac` ->
`\\frac`, `\\text{}` wrappers and trailing units, degrees, percent signs, thousands separators, a leading
`x =`. The result is both compared as a string and handed to the parser.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from grpolab.tasks.boxed import last_boxed

UNITS = {
    "cm", "m", "km", "mm", "in", "inch", "inches", "ft", "foot", "feet", "yd", "yard", "yards", "mi", "mile", "miles",
    "meter", "meters", "metre", "metres", "unit", "units", "sq", "square", "cubic", "degree", "degrees", "deg",
    "dollar", "dollars", "cent", "cents", "hour", "hours", "hr", "hrs", "minute", "minutes", "min", "second",
    "seconds", "sec", "day", "days", "week", "weeks", "month", "months", "year", "years", "kg", "g", "gram", "grams",
    "lb", "lbs", "pound", "pounds", "oz", "ounce", "ounces", "l", "liter", "liters", "litre", "litres", "ml", "mph",
    "percent", "people", "students", "cups", "cup", "mm^2", "cm^2", "m^2", "cm^3", "m^3", "radians", "rad",
}
_TEXT_CMD = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mathit|mbox|operatorname)\s*\{([^{}]*)\}"
                       r"(\s*\^\s*\{?\d\}?)?")
_ASSIGN = re.compile(r"^\s*(?:[a-zA-Z](?:_\{?\w+\}?)?|\\[a-zA-Z]+)\s*(?:=|\\in)\s*(?=\S)")


def _unwrap_text(s: str) -> str:
    """\\text{...}: a unit after a value is dropped; any other text is kept, without the command."""
    def repl(m: re.Match[str]) -> str:
        inner, before = m.group(1), s[:m.start()].rstrip()
        is_words = bool(re.fullmatch(r"\s*[a-zA-Z][a-zA-Z ]*\.?\s*", inner))
        if is_words and before and (before[-1].isdigit() or before[-1] in ")}"):
            return " "  # a unit, with its power: 'cm^2'
        return f" {inner}{m.group(2) or ''} "

    previous = None
    while previous != s:  # inner text commands first: \text{\textbf{x}}
        previous, s = s, _TEXT_CMD.sub(repl, s)
    return s


def _strip_units(s: str) -> str:
    """'10 cm', '5 square units', '3 cm^2' -> the value, when every trailing word is a known unit."""
    m = re.fullmatch(r"(.*?[\d})])\s+((?:[a-zA-Z]+(?:\^\{?\d\}?)?\s*)+)\.?", s.strip())
    if m and all(w.split("^")[0].lower() in UNITS for w in m.group(2).split()):
        return m.group(1)
    return s


def normalize(answer: str) -> str:
    """The canonical form of an answer (gold or predicted) for comparing and parsing."""
    s = answer.strip().replace("\u2212", "-")
    if "\\boxed" in s or "\\fbox" in s:
        s = last_boxed(s) or s
    s = s.replace("\\$", " ").replace("$", " ")
    s = re.sub(r"^\\\(|\\\)$|^\\\[|\\\]$", "", s.strip())
    s = s.replace("\\displaystyle", " ").replace("\\left.", "").replace("\\right.", "")
    s = re.sub(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|big|Big)(?![a-zA-Z])", "", s)
    s = re.sub(r"\\[dtc]frac", r"\\frac", s)
    s = re.sub(r"\\(?:,|!|;|:|quad|qquad)|~", " ", s)
    s = re.sub(r"(?<!\\)\\ ", " ", s)  # "\ " is a space; "\\ " (a new row) is not
    s = re.sub(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|°|\\degree", "", s)
    s = s.replace("\\%", "").replace("%", "")
    s = s.replace("{,}", "")
    s = _unwrap_text(s)
    s = _strip_units(" ".join(s.split()))
    s = s.strip().rstrip(".").strip()
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    if s.count("=") == 1 or (s.count("\\in") == 1 and "=" not in s):
        s = _ASSIGN.sub("", s)
    s = re.sub(r"\\frac\s*(\d)\s*(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\sqrt\s*(\d)", r"\\sqrt{\1}", s)
    s = re.sub(r"\^\{(\w)\}", r"^\1", s)
    s = re.sub(r"(?<![\d.])\.(\d)", r"0.\1", s)
    m = re.fullmatch(r"\(([A-Ea-e])\)", s.strip())
    if m:  # multiple choice '(C)' -> 'C'
        s = m.group(1)
    return s.strip()


def compact(s: str) -> str:
    """The string-comparison key: no whitespace; pure words compare case-insensitively."""
    key = re.sub(r"\s+", "", s)
    return key.lower() if re.fullmatch(r"[A-Za-z]+", key) else key


def _longer_command(s: str, i: int, sep: str) -> bool:
    """True when the command `sep` found at s[i] is the start of a longer one (\\cup in \\cupdot)."""
    return sep[0] == "\\" and s[i + len(sep):i + len(sep) + 1].isalpha()


def split_top(s: str, sep: str) -> list[str]:
    """Split on `sep` outside any brackets ( [ { \\{ ; `sep` may be a command like \\cup."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(s):
        if s.startswith("\\{", i) or s.startswith("\\}", i):
            depth += 1 if s[i + 1] == "{" else -1
            i += 2
            continue
        ch = s[i]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0 and s.startswith(sep, i) and not _longer_command(s, i, sep):
            parts.append(s[start:i])
            i += len(sep)
            start = i
            continue
        i += 1
    parts.append(s[start:])
    return [p.strip() for p in parts]


def _matching_close(s: str) -> int:
    """Index of the bracket closing the one at s[0], or -1."""
    depth = 0
    for i, ch in enumerate(s):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                return i
    return -1


@dataclass(frozen=True)
class Structure:
    kind: str  # 'scalar', 'tuple' (also intervals: open/close say which), 'set', 'list', 'union', 'matrix'
    items: tuple[str, ...] | tuple["Structure", ...]
    open: str = ""
    close: str = ""


def _pm(item: str) -> list[str]:
    """'1 \\pm \\sqrt{2}' -> ['1 + \\sqrt{2}', '1 - \\sqrt{2}']."""
    if item.count("\\pm") == 1:
        return [item.replace("\\pm", "+"), item.replace("\\pm", "-")]
    return [item]


def _element(item: str) -> str:
    return _ASSIGN.sub("", item).strip() if item.count("=") == 1 else item


def structure(s: str) -> Structure:
    """What kind of answer `s` (already normalised) is, with its parts."""
    s = s.strip()
    m = re.fullmatch(r"\\begin\{[pbvB]?matrix\}(.*)\\end\{[pbvB]?matrix\}", s, re.S)
    if m:
        rows = [r for r in (row.strip() for row in m.group(1).split("\\\\")) if r]
        cells = [tuple(c.strip() for c in row.split("&")) for row in rows]
        return Structure("matrix", tuple(Structure("tuple", row) for row in cells), "[", "]")
    if len(split_top(s, "\\cup")) > 1:
        return Structure("union", tuple(structure(p) for p in split_top(s, "\\cup")))
    if s.startswith("\\{") and s.endswith("\\}"):
        inner = s[2:-2].strip()
        items = [e for p in split_top(inner, ",") if p for e in _pm(_element(p))]
        return Structure("set", tuple(items))
    if s[:1] in "([" and s[-1:] in ")]" and _matching_close(s) == len(s) - 1:
        items = split_top(s[1:-1], ",")
        if len(items) > 1:
            return Structure("tuple", tuple(_element(p) for p in items), s[0], s[-1])
    items = split_top(s, ",")
    if len(items) > 1 or "\\pm" in s:
        return Structure("list", tuple(e for p in items for e in _pm(_element(p))))
    return Structure("scalar", (s,))
