"""The code sandbox: hostile or broken code scores 0, the parent is unharmed, and no process outlives a run.

Each barrier is also tested on its own (the audit hook off, so the kernel-side limit must do the work), and a
control run without the barrier shows the test would notice if it were missing.
"""

import os
import socket
import sys
import time
from pathlib import Path

import pytest

from grpolab.rewards.sandbox import Limits, run_function_tests, same_value

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox barriers tested are Linux's")

FAST = Limits(wall_s=2.0, cpu_s=1, memory_mb=256, max_processes=16)
ADD = "def add(a, b):\n    return a + b\n"


def _run(code, limits=FAST, inputs=([1, 2], [3, 4]), expected=(3, 7)):
    return run_function_tests(code, "add", list(inputs), list(expected), limits)


def _sandbox_processes() -> int:
    count = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                count += b"sandbox_child" in (entry / "cmdline").read_bytes()
            except OSError:
                continue
    return count


def _can_unshare_network() -> bool:
    return "network-namespace" in _run(ADD).isolation


@pytest.fixture
def listener():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    srv.settimeout(0.3)
    yield srv
    srv.close()


def _connections(srv) -> int:
    count = 0
    while True:
        try:
            conn, _ = srv.accept()
        except socket.timeout:
            return count
        conn.close()
        count += 1


def test_correct_and_wrong_code():
    ok = _run(ADD)
    assert (ok.status, ok.passed, ok.total, ok.fraction, ok.all_passed) == ("ok", 2, 2, 1.0, True)
    half = _run("def add(a, b):\n    return 3\n")
    assert (half.status, half.passed, half.fraction, half.all_passed) == ("ok", 1, 0.5, False)


@pytest.mark.parametrize("name,code,status,detail_part", [
    ("infinite loop", "def add(a, b):\n    while True:\n        pass\n", "cpu limit", "CPU"),
    ("sleeping loop", "import time\ndef add(a, b):\n    while True:\n        time.sleep(1)\n", "timeout", "2 s"),
    ("10 GB allocation", "def add(a, b):\n    x = bytearray(10 * 2**30)\n    return a + b\n", "memory limit", "Memory"),
    ("fork bomb", "import os\ndef add(a, b):\n    while True:\n        os.fork()\n", "blocked", "os.fork"),
    ("shell command", "import os\ndef add(a, b):\n    os.system('true')\n    return a + b\n", "blocked", "os.system"),
    ("exec", "import os\ndef add(a, b):\n    os.execv('/bin/true', ['true'])\n", "blocked", "os.exec"),
    ("read a secret file", "def add(a, b):\n    open('/etc/shadow').read()\n    return a + b\n", "blocked",
     "read outside"),
    ("exit before the tests", "import os\nos._exit(0)\n", "crashed", "no result"),
    ("syntax error", "def add(a, b)\n    return a + b\n", "syntax error", "line 1"),
    ("no such function", "def plus(a, b):\n    return a + b\n", "error", "no function 'add'"),
])
def test_bad_code_scores_zero(name, code, status, detail_part):
    before = _sandbox_processes()
    r = _run(code)
    assert (r.status, r.passed, r.fraction, r.all_passed) == (status, 0, 0.0, False), (name, r)
    assert detail_part in r.detail, (name, r.detail)
    assert r.seconds < FAST.wall_s + 2.5
    assert _sandbox_processes() == before == 0


@pytest.mark.parametrize("code,detail_part", [
    ("import subprocess\ndef add(a, b):\n    subprocess.run(['true'])\n    return a + b\n", "subprocess.Popen"),
    ("def add(a, b):\n    import ctypes\n    return ctypes.CDLL(None).getpid()\n", "ctypes.dlopen"),
    ("def add(a, b):\n    import ctypes\n    return ctypes.pythonapi.Py_GetVersion()\n", "ctypes.dlsym"),
])
def test_modules_that_reach_the_os_are_refused(code, detail_part):
    # drop_root off: as root the standard library under /root stays readable, so the import itself succeeds and
    # the refusal comes from the audit hook (as it does for any non-root user)
    r = _run(code, Limits(**{**FAST.__dict__, "drop_root": False}))
    assert (r.status, r.passed) == ("blocked", 0) and detail_part in r.detail


def test_always_equal_object_cannot_pass():
    code = "class A:\n    def __eq__(self, other):\n        return True\ndef add(a, b):\n    return A()\n"
    r = _run(code)
    assert (r.status, r.passed) == ("ok", 0) and "not a JSON value" in r.detail


def test_write_outside_the_working_directory(tmp_path):
    target = tmp_path / "escape.txt"
    code = f"def add(a, b):\n    open({str(target)!r}, 'w').write('x')\n    return a + b\n"
    r = _run(code)
    assert (r.status, r.passed) == ("blocked", 0) and "write outside" in r.detail
    assert not target.exists()
    if os.getuid() == 0:  # without the hook, uid 65534 cannot write into root's private test directory
        r = _run(code, Limits(**{**FAST.__dict__, "audit_hook": False}))
        assert (r.status, r.passed) == ("ok", 0) and "Permission denied" in r.detail
        assert not target.exists()


def test_writes_inside_the_working_directory_are_allowed_and_removed():
    code = ("import os\ndef add(a, b):\n    with open('scratch.txt', 'w') as f:\n        f.write(str(a + b))\n"
            "    return int(open('scratch.txt').read())\n")
    r = _run(code)
    assert (r.status, r.passed) == ("ok", 2)
    assert not [p for p in Path(os.environ.get("TMPDIR", "/tmp")).glob("grpolab-sandbox-*")]


def test_socket_connect_is_refused_by_hook_and_by_namespace(listener):
    port = listener.getsockname()[1]
    code = (f"import socket\ndef add(a, b):\n    s = socket.socket()\n    s.connect(('127.0.0.1', {port}))\n"
            "    s.sendall(b'hello')\n    return a + b\n")
    r = _run(code)
    assert (r.status, r.passed) == ("blocked", 0) and "network" in r.detail
    assert _connections(listener) == 0
    control = _run(code, Limits(**{**FAST.__dict__, "audit_hook": False, "network_namespace": False}))
    assert (control.passed, _connections(listener)) == (2, 2)  # the connections are real when unconfined
    if _can_unshare_network():
        ns_only = _run(code, Limits(**{**FAST.__dict__, "audit_hook": False}))
        assert (ns_only.status, ns_only.passed) == ("ok", 0) and "unreachable" in ns_only.detail
        assert _connections(listener) == 0


def test_process_limit_contains_forks_without_the_hook():
    code = ("import os, time\ndef add(a, b):\n    n = 0\n    for _ in range(64):\n        try:\n"
            "            pid = os.fork()\n        except OSError:\n            break\n        if pid == 0:\n"
            "            time.sleep(60)\n        n += 1\n    return n\n")
    r = run_function_tests(code, "add", [[0, 0]], [0], Limits(**{**FAST.__dict__, "audit_hook": False}))
    assert "process-limit" in r.isolation
    assert r.outputs[0]["value"] == FAST.max_processes - 1  # the 16th process (the runner itself is one) is refused
    assert _sandbox_processes() == 0  # the 15 sleeping children were killed with the session


def test_environment_is_scrubbed(monkeypatch):
    monkeypatch.setenv("GRPOLAB_TEST_SECRET_TOKEN", "hunter2")
    code = "import os\ndef add(a, b):\n    return sorted(os.environ)\n"
    r = run_function_tests(code, "add", [[0, 0]], [[]], FAST)
    names = r.outputs[0]["value"]
    assert names == ["GRPOLAB_SANDBOX_TOKEN", "HOME", "LANG", "PATH", "TMPDIR"]


def test_parent_is_unharmed_after_hostile_runs():
    cwd, env = os.getcwd(), dict(os.environ)
    for code in ("import os\nos.chdir('/')\ndef add(a, b):\n    return a + b\n",
                 "import os\nos.environ['PATH'] = ''\ndef add(a, b):\n    return a + b\n"):
        assert _run(code).passed == 2
    assert (os.getcwd(), dict(os.environ)) == (cwd, env)
    t = time.perf_counter()
    assert _run(ADD).passed == 2 and time.perf_counter() - t < 1.5


@pytest.mark.parametrize("got,expected,same", [
    (3, 3, True), (3.0, 3, True), (True, 1, False), (1, True, False), ("1", 1, False), ([1, [2]], [1, [2]], True),
    ([1, 2], [1, 2, 3], False), (None, None, True), (0.1 + 0.2, 0.3, True), ({"a": 1}, {"a": 1}, True),
])
def test_same_value(got, expected, same):
    assert same_value(got, expected) is same
