"""Symbolic equality (sympy) with a time limit that works in any thread: the work runs in a worker process.

`signal.alarm` only works in the main thread and cannot interrupt C code; a worker process can always be
killed. The worker starts on first use (importing sympy takes a moment, which does not count against the
limit), serves requests one at a time, and is replaced after a timeout.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from grpolab.rewards.pipes import wait_readable

WORKER = Path(__file__).with_name("sympy_worker.py")
STARTUP_LIMIT_S = 120.0


@dataclass(frozen=True)
class SymbolicResult:
    equal: bool
    reason: str  # 'equal', 'not equal', 'timeout', 'parse error'


class SympyWorker:
    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._buffer = b""
        self._lock = threading.Lock()
        atexit.register(self.close)

    def _start(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-I", str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, bufsize=0)
        self._proc, self._buffer = proc, b""
        line = self._readline(time.monotonic() + STARTUP_LIMIT_S)
        if line is None or not json.loads(line).get("ready"):
            self.close()
            raise RuntimeError(f"the sympy worker did not start ({WORKER}); is sympy installed?")
        return proc

    def _readline(self, deadline: float) -> bytes | None:
        """The next line from the worker, or None when the deadline passes or the worker died."""
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if wait_readable(fd, left):
                chunk = os.read(fd, 65536)
                if not chunk:
                    return None
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def equal(self, a: str, b: str, timeout: float) -> SymbolicResult:
        """Whether two `mathparse.to_python` expressions are equal, decided within `timeout` seconds."""
        with self._lock:
            proc = self._proc if self._proc is not None and self._proc.poll() is None else self._start()
            assert proc.stdin is not None
            try:
                proc.stdin.write((json.dumps({"a": a, "b": b}) + "\n").encode())
            except BrokenPipeError:
                self.close()
                return SymbolicResult(False, "timeout")
            line = self._readline(time.monotonic() + timeout)
            if line is None:
                self.close()  # stuck in sympy: kill it; the next call starts a fresh worker
                return SymbolicResult(False, "timeout")
        reply = json.loads(line)
        if "equal" in reply:
            return SymbolicResult(bool(reply["equal"]), "equal" if reply["equal"] else "not equal")
        return SymbolicResult(False, "parse error" if reply["error"].startswith("build") else "not equal")

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdin, proc.stdout) if proc is not None else ():
            if stream is not None:
                stream.close()


_WORKER = SympyWorker()


def symbolic_equal(a: str, b: str, timeout: float = 3.0) -> SymbolicResult:
    """Module-level entry point sharing one worker per process."""
    return _WORKER.equal(a, b, timeout)
