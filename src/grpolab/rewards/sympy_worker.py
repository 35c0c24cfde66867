"""Symbolic equality in a separate process (run as a script; imports only the standard library and sympy).

Protocol: one JSON request per line on stdin, {"a": expr, "b": expr} in the Python syntax of
`grpolab.rewards.mathparse.to_python`; one JSON reply per line: {"equal": true|false} or {"error": "..."}.
Expressions are rebuilt from their AST with a whitelist (never eval). The parent kills this process when a
comparison runs past its time limit; a watchdog thread exits when the parent is gone.
"""

import ast
import json
import os
import sys
import threading
import time


def _watchdog(parent: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(0)


def _builder(sp):  # type: ignore[no-untyped-def]
    functions = {"sqrt": sp.sqrt, "root": sp.root, "sin": sp.sin, "cos": sp.cos, "tan": sp.tan, "cot": sp.cot,
                 "sec": sp.sec, "csc": sp.csc, "asin": sp.asin, "acos": sp.acos, "atan": sp.atan,
                 "log": sp.log, "exp": sp.exp, "Abs": sp.Abs, "factorial": sp.factorial, "binomial": sp.binomial,
                 "floor": sp.floor, "ceiling": sp.ceiling}
    constants = {"pi": sp.pi, "E": sp.E, "I": sp.I, "oo": sp.oo}
    ops = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
           ast.Div: lambda a, b: a / b, ast.Pow: lambda a, b: a**b}

    def build(node):  # type: ignore[no-untyped-def]
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return sp.Integer(node.value)
        if isinstance(node, ast.Name):
            if node.id in constants:
                return constants[node.id]
            if node.id.startswith("s_"):
                return sp.Symbol(node.id[2:])
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -build(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            return ops[type(node.op)](build(node.left), build(node.right))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in functions:
            return functions[node.func.id](*[build(a) for a in node.args])
        raise ValueError(f"unsupported {ast.dump(node)[:60]}")

    return lambda text: build(ast.parse(text, mode="eval").body)


def _equal(sp, a, b) -> bool:  # type: ignore[no-untyped-def]
    if sp.simplify(a - b) == 0:
        return True
    return bool(a.equals(b))


def main() -> None:
    threading.Thread(target=_watchdog, args=(os.getppid(),), daemon=True).start()
    try:  # an answer like 2^(2^40) must fail with MemoryError here, not take the machine's memory
        import resource

        limit = int(os.environ.get("GRPOLAB_SYMPY_MEMORY_MB", "2048")) * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):
        pass  # no such limit on this platform: the time limit still applies
    import sympy as sp

    build = _builder(sp)
    sys.stdout.write('{"ready": true}\n')
    sys.stdout.flush()
    for line in sys.stdin:
        request = json.loads(line)
        try:
            a, b = build(request["a"]), build(request["b"])
        except Exception as e:  # reported to the parent as a parse failure, never swallowed
            reply = {"error": f"build: {type(e).__name__}: {e}"}
        else:
            try:
                reply = {"equal": _equal(sp, a, b)}
            except Exception as e:  # sympy could not decide: reported, the parent says 'not equal'
                reply = {"error": f"compare: {type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
