"""Errors a user can cause. The CLI prints them as one line and exits with code 2."""

from __future__ import annotations

import difflib
from typing import Iterable


class UserError(Exception):
    """A problem with the user's input: the message names the value, what is allowed, and the fix."""


def unknown_choice(what: str, value: object, allowed: Iterable[str], fix: str = "") -> UserError:
    """Build the standard 'unknown X' error with the allowed values and a close match if there is one."""
    allowed = list(allowed)
    close = difflib.get_close_matches(str(value), allowed, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    tail = f" {fix}" if fix else ""
    return UserError(f"unknown {what} '{value}'; allowed: {', '.join(allowed)}.{hint}{tail}")
