"""Waiting on a child process's pipe with a timeout, from any thread (used by the sympy worker and the sandbox)."""

from __future__ import annotations

import select


def wait_readable(fd: int, timeout: float) -> bool:
    """True when `fd` has data (or EOF) within `timeout` seconds; poll() has no FD_SETSIZE limit, unlike select()."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        return bool(poller.poll(max(0.0, timeout) * 1000))
    ready, _, _ = select.select([fd], [], [], max(0.0, timeout))
    return bool(ready)
