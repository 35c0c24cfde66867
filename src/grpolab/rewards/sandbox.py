"""Run model-written Python in a sandbox and compare its outputs with the expected ones (the parent decides).

Per run: a fresh temporary directory (removed after), a scrubbed environment (PATH, HOME and TMPDIR pointing
at that directory, a locale: no tokens or keys), a new process session, the limits and confinement of
`sandbox_child.py`, and a wall-clock timeout. Afterwards the whole session is killed, and any process still
carrying this run's token in its environment (one that left the session) is killed too. Every way to fail
(timeout, CPU, memory, a blocked operation, a crash, a wrong answer) scores 0; the reason says which.

This confines accidents and the usual misbehaviour of generated code (loops, fork bombs, huge allocations,
stray writes, network calls); it is not a hardened jail for adversarial code: use a container or VM for that.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from grpolab.rewards.pipes import wait_readable

CHILD = Path(__file__).with_name("sandbox_child.py")
MAX_RESULT_BYTES = 4 * 2**20
TOKEN_VAR = "GRPOLAB_SANDBOX_TOKEN"


@dataclass(frozen=True)
class Limits:
    wall_s: float = 5.0  # wall-clock seconds for the whole run
    cpu_s: int = 4  # CPU seconds (RLIMIT_CPU)
    memory_mb: int = 512  # address space (RLIMIT_AS)
    file_mb: int = 16  # largest file the code may write (RLIMIT_FSIZE)
    max_processes: int = 32  # RLIMIT_NPROC (counted for uid 65534 when started as root)
    network_namespace: bool = True  # confine to a new, empty network namespace where the kernel allows it
    drop_root: bool = True  # when running as root, run the code as uid/gid 65534
    audit_hook: bool = True  # in-process refusal of processes, sockets, ctypes, stray file access


@dataclass(frozen=True)
class SandboxResult:
    status: str  # 'ok', 'timeout', 'cpu limit', 'memory limit', 'blocked', 'syntax error', 'error', 'crashed', ...
    passed: int
    total: int
    detail: str = ""
    isolation: tuple[str, ...] = ()
    blocked: tuple[str, ...] = ()
    seconds: float = 0.0
    outputs: list[dict[str, Any]] = field(default_factory=list, repr=False, compare=False)

    @property
    def fraction(self) -> float:
        """Share of tests passed; 0 unless the run finished cleanly."""
        return self.passed / self.total if self.status == "ok" and self.total else 0.0

    @property
    def all_passed(self) -> bool:
        return self.status == "ok" and self.total > 0 and self.passed == self.total


def same_value(got: Any, expected: Any) -> bool:
    """Equality of JSON values with types kept apart: True is not 1, '1' is not 1; floats within 1e-9."""
    if isinstance(got, bool) or isinstance(expected, bool):
        return type(got) is type(expected) and got == expected
    if isinstance(got, (int, float)) and isinstance(expected, (int, float)):
        if isinstance(got, float) or isinstance(expected, float):
            return math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-12)
        return got == expected
    if isinstance(got, list) and isinstance(expected, list):
        return len(got) == len(expected) and all(same_value(g, e) for g, e in zip(got, expected))
    if isinstance(got, dict) and isinstance(expected, dict):
        return got.keys() == expected.keys() and all(same_value(got[k], expected[k]) for k in got)
    return type(got) is type(expected) and got == expected


def _json_roundtrip(value: Any) -> Any:
    return json.loads(json.dumps(value))  # tuples become lists, as they do on the child's side


def _environment(workdir: str, token: str) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8", TOKEN_VAR: token}


def _kill_leftovers(proc: subprocess.Popen[bytes], token: str) -> None:
    """Kill the run's process group, then any process that still carries its token (it left the group).

    Processes the code forked are reaped by init, which may take a moment; we wait (up to 2 s) until the group
    is empty, so the next run starts with its process budget free.
    """
    pgid = proc.pid  # start_new_session: the child leads its own group
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    try:
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:  # SIGKILL is asynchronous: wait until the group has really gone
            os.killpg(pgid, 0)
            time.sleep(0.005)
    except (ProcessLookupError, PermissionError):
        pass
    marker = f"{TOKEN_VAR}={token}".encode()
    proc_dir = Path("/proc")
    if not proc_dir.is_dir():
        _kill_by_psutil(marker)
        return
    for entry in proc_dir.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes():
                os.kill(int(entry.name), signal.SIGKILL)
        except OSError:  # the process is gone, or is not ours to read
            continue


def _kill_by_psutil(marker: bytes) -> None:
    """macOS and other systems without /proc: psutil reads the environment of our own processes."""
    import psutil

    key, _, value = marker.decode().partition("=")
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and proc.environ().get(key) == value:
                proc.kill()
        except psutil.Error:
            continue


def _read_until(fd: int, proc: subprocess.Popen[bytes], deadline: float) -> tuple[bytes, bool]:
    """Everything written to the result pipe until the child exits (or the deadline: timed_out True)."""
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return data, True
        if wait_readable(fd, min(left, 0.05)):
            chunk = os.read(fd, 65536)
            if chunk:
                data += chunk
                if len(data) > MAX_RESULT_BYTES:
                    return data[:MAX_RESULT_BYTES], False
                continue
            return data, False  # every writer closed the pipe
        if proc.poll() is not None:
            return data, False


def _status_from_exit(code: int | None, stderr: str) -> tuple[str, str]:
    if code is not None and code < 0:
        sig = -code
        if sig == signal.SIGXCPU:
            return "cpu limit", "used more CPU time than allowed"
        if sig == signal.SIGKILL:
            return "killed", "killed by SIGKILL (the CPU hard limit, or out of memory)"
        if sig == signal.SIGXFSZ:
            return "file limit", "wrote a file larger than the limit"
        return "crashed", f"killed by signal {signal.Signals(sig).name}"
    return "crashed", stderr.strip().splitlines()[-1][:300] if stderr.strip() else f"exit code {code}, no result"


def run_function_tests(code: str, function: str, inputs: Sequence[Sequence[Any]], expected: Sequence[Any],
                       limits: Limits = Limits()) -> SandboxResult:
    """Run `code` in the sandbox, call `function(*args)` for each of `inputs`, and count outputs equal to
    `expected` (the child never sees `expected`)."""
    if os.name != "posix":
        return SandboxResult("unsupported", 0, len(inputs), "the code sandbox needs Linux or macOS")
    t0 = time.monotonic()
    token = uuid.uuid4().hex
    workdir = tempfile.mkdtemp(prefix="grpolab-sandbox-")
    if os.getuid() == 0 and limits.drop_root:
        os.chown(workdir, 65534, 65534)
    read_fd, write_fd = os.pipe()
    job = {"code": code, "function": function, "inputs": [list(a) for a in inputs], "workdir": workdir,
           "result_fd": write_fd, "cpu_s": limits.cpu_s, "memory_mb": limits.memory_mb, "file_mb": limits.file_mb,
           "max_processes": limits.max_processes, "network_namespace": limits.network_namespace,
           "drop_root": limits.drop_root, "audit_hook": limits.audit_hook}
    with tempfile.TemporaryFile() as stderr_file:
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-B", str(CHILD)], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=stderr_file, cwd=workdir,
                                env=_environment(workdir, token), start_new_session=True, pass_fds=(write_fd,))
        os.close(write_fd)
        try:
            assert proc.stdin is not None
            try:
                proc.stdin.write(json.dumps(job).encode())
                proc.stdin.close()
            except BrokenPipeError:
                pass
            raw, timed_out = _read_until(read_fd, proc, t0 + limits.wall_s)
            if not timed_out:
                try:
                    proc.wait(timeout=max(0.0, t0 + limits.wall_s - time.monotonic()))
                except subprocess.TimeoutExpired:
                    timed_out = True
        finally:
            os.close(read_fd)
            _kill_leftovers(proc, token)
            shutil.rmtree(workdir, ignore_errors=True)
        stderr_file.seek(0)
        stderr = stderr_file.read(8192).decode(errors="replace")
    seconds = time.monotonic() - t0
    n = len(inputs)
    if timed_out:
        return SandboxResult("timeout", 0, n, f"still running after {limits.wall_s:g} s", seconds=seconds)
    try:
        report = json.loads(raw.decode().strip().splitlines()[-1])
    except (ValueError, IndexError, UnicodeDecodeError):
        status, detail = _status_from_exit(proc.returncode, stderr)
        return SandboxResult(status, 0, n, detail, seconds=seconds)
    isolation, blocked = tuple(report.get("isolation", ())), tuple(report.get("blocked", ()))
    if blocked:
        return SandboxResult("blocked", 0, n, blocked[0], isolation, blocked, seconds)
    if report.get("status") != "ok":
        return SandboxResult(str(report.get("status")), 0, n, str(report.get("detail", "")), isolation, (), seconds)
    outputs = list(report.get("outputs", []))
    if len(outputs) != n:
        return SandboxResult("crashed", 0, n, f"{len(outputs)} outputs for {n} tests", isolation, (), seconds)
    passed = sum(1 for out, exp in zip(outputs, expected) if "value" in out
                 and same_value(out["value"], _json_roundtrip(exp)))
    errors = [out["error"] for out in outputs if "error" in out]
    if any(e.startswith("MemoryError") for e in errors):
        return SandboxResult("memory limit", 0, n, "MemoryError in a test", isolation, (), seconds, outputs)
    detail = errors[0] if errors else ("" if passed == n else "wrong output")
    return SandboxResult("ok", passed, n, detail, isolation, (), seconds, outputs)
