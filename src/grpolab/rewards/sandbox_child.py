"""Inside the sandbox (run as `python -I -S -B sandbox_child.py`; standard library only, never imported by grpolab).

Reads one job (JSON on stdin), confines itself, runs the model's code, calls the function on each test input
and writes the outputs as JSON to the result pipe. It never sees the expected outputs: the parent compares,
so code that tampers with this process cannot make a wrong answer pass.

Confinement, in order: resource limits (CPU, address space, file size, open files, no core dumps); a new
network namespace (no interfaces but a downed loopback); when started as root, a switch to uid/gid 65534 so the
process limit applies and root-owned files are out of reach; no-new-privileges and death with the parent; the
temporary working directory; an audit hook that refuses processes, sockets, ctypes, writes outside the working
directory and reads outside it and the standard library.
"""

import copy
import json
import os
import resource
import sys

# Common modules, imported before privileges are dropped (the standard library may sit in an unreadable home).
PREIMPORT = ("math", "cmath", "itertools", "functools", "collections", "re", "string", "heapq", "bisect", "random",
             "statistics", "fractions", "decimal", "operator", "typing", "dataclasses", "datetime", "array",
             "socket")  # socket: so that network attempts meet the real barriers, not an import error
CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
NOBODY = 65534
PROCESS_EVENTS = ("os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn", "os.system", "os.kill",
                  "os.killpg", "subprocess.Popen", "pty.spawn", "resource.setrlimit", "resource.prlimit")
BLOCKED_EVENTS = PROCESS_EVENTS + ("gc.get_objects", "gc.get_referrers", "gc.get_referents")
PATH_EVENTS = {"os.remove": (0,), "os.rename": (0, 1), "os.rmdir": (0,), "os.mkdir": (0,), "os.chmod": (0,),
               "os.chown": (0,), "os.link": (0, 1), "os.symlink": (1,), "os.truncate": (0,), "os.utime": (0,),
               "shutil.rmtree": (0,), "os.chflags": (0,), "os.lchflags": (0,), "os.mkfifo": (0,), "os.mknod": (0,)}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _limits(job: dict) -> None:
    cpu, mem, fsize = job["cpu_s"], job["memory_mb"] * 2**20, job["file_mb"] * 2**20
    for name, soft, hard in (("RLIMIT_CPU", cpu, cpu + 1), ("RLIMIT_AS", mem, mem), ("RLIMIT_FSIZE", fsize, fsize),
                             ("RLIMIT_NOFILE", 64, 64), ("RLIMIT_CORE", 0, 0)):
        if hasattr(resource, name):
            try:
                resource.setrlimit(getattr(resource, name), (soft, hard))
            except (ValueError, OSError):
                pass  # this platform does not support the limit; the parent's wall timeout still holds


def _isolate(job: dict, isolation: list) -> None:
    """Kernel-side confinement where the platform allows it; each step that worked is named in `isolation`."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
    except (ImportError, OSError):
        return
    uid, gid = os.getuid(), os.getgid()
    if job["network_namespace"] and sys.platform.startswith("linux"):
        flags = CLONE_NEWNET if uid == 0 else CLONE_NEWUSER | CLONE_NEWNET
        if libc.unshare(flags) == 0:
            if uid != 0:  # map our own ids into the new user namespace so files keep their owner
                for path, text in (("/proc/self/setgroups", "deny"), ("/proc/self/uid_map", f"{uid} {uid} 1"),
                                   ("/proc/self/gid_map", f"{gid} {gid} 1")):
                    try:
                        with open(path, "w") as f:
                            f.write(text)
                    except OSError:
                        pass
            isolation.append("network-namespace")
    if uid == 0 and job["drop_root"]:
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            isolation.append("uid-65534")
        except OSError:
            pass
    if sys.platform.startswith("linux"):
        libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)  # after the uid change, which clears it
    if hasattr(resource, "RLIMIT_NPROC"):
        try:
            resource.setrlimit(resource.RLIMIT_NPROC, (job["max_processes"], job["max_processes"]))
            isolation.append("process-limit")
        except (ValueError, OSError):
            pass


def _inside(path: object, roots: tuple) -> bool:
    if isinstance(path, int):
        return True  # an already open descriptor: it was opened under these same rules
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, str):
        return False
    real = os.path.realpath(path)
    return any(real == r or real.startswith(r + os.sep) for r in roots)


def _install_hook(workdir: str, blocked: list) -> None:
    write_roots = (os.path.realpath(workdir), "/dev/null")
    read_roots = write_roots + tuple(os.path.realpath(p) for p in sys.path if p) + ("/dev/urandom",)

    def refuse(what: str) -> None:
        blocked.append(what)
        raise PermissionError(f"grpolab sandbox: {what} is not allowed")

    def hook(event: str, args: tuple) -> None:
        if event.startswith("socket."):
            refuse(f"network ({event})")
        elif event.startswith("ctypes."):
            refuse(f"ctypes ({event})")
        elif event in BLOCKED_EVENTS:
            refuse(f"{'process' if event in PROCESS_EVENTS else 'introspection'} ({event})")
        elif event == "open":
            path, mode, flags = (tuple(args) + (None, None))[:3]
            writing = any(c in str(mode or "") for c in "wax+") or bool((flags or 0) & WRITE_FLAGS)
            if writing and not _inside(path, write_roots):
                refuse(f"write outside the working directory ({path!r:.80})")
            if not writing and not _inside(path, read_roots):
                refuse(f"read outside the working directory ({path!r:.80})")
        elif event in PATH_EVENTS:
            for i in PATH_EVENTS[event]:
                if i < len(args) and not _inside(args[i], write_roots):
                    refuse(f"{event} outside the working directory ({args[i]!r:.80})")
        elif event in ("os.listdir", "os.scandir") and args and args[0] is not None:
            if not _inside(args[0], read_roots):
                refuse(f"listing outside the working directory ({args[0]!r:.80})")

    sys.addaudithook(hook)


def _output(value: object) -> dict:
    try:
        text = json.dumps(value, allow_nan=True)
    except (TypeError, ValueError, RecursionError):
        return {"error": f"returned a {type(value).__name__}, which is not a JSON value"}
    if len(text) > 100_000:
        return {"error": "returned a value larger than 100 kB"}
    return {"value": json.loads(text)}


def main() -> None:
    job = json.loads(sys.stdin.buffer.read())
    result_fd = job["result_fd"]
    for name in PREIMPORT:
        __import__(name)
    isolation: list = []
    _limits(job)
    _isolate(job, isolation)
    os.chdir(job["workdir"])
    blocked: list = []
    if job["audit_hook"]:
        _install_hook(job["workdir"], blocked)
        isolation.append("audit-hook")
    report = {"isolation": isolation, "blocked": blocked, "outputs": [], "status": "ok"}
    namespace = {"__name__": "__solution__"}
    try:
        exec(compile(job["code"], "<solution>", "exec"), namespace)
        fn = namespace.get(job["function"])
        if not callable(fn):
            report.update(status="error", detail=f"the code defines no function '{job['function']}'")
    except SyntaxError as e:
        report.update(status="syntax error", detail=f"line {e.lineno}: {e.msg}")
    except MemoryError:
        report.update(status="memory limit", detail="MemoryError while running the code")
    except BaseException as e:  # the model's code failed at top level: reported as its status, scored 0
        report.update(status="error", detail=f"{type(e).__name__}: {e}"[:300])
    if report["status"] == "ok":
        for args in job["inputs"]:
            try:
                report["outputs"].append(_output(fn(*copy.deepcopy(args))))
            except MemoryError:
                report["outputs"].append({"error": "MemoryError"})
            except BaseException as e:  # one failing test input, recorded with its error
                report["outputs"].append({"error": f"{type(e).__name__}: {e}"[:300]})
    data = (json.dumps(report) + "\n").encode()
    while data:
        data = data[os.write(result_fd, data):]
    os._exit(0)  # skip atexit handlers and finalizers the code may have registered


if __name__ == "__main__":
    main()
