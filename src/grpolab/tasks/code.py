"""A small built-in code task: write one Python function; scored by running it on tests in a sandbox.

Each problem comes from a family (a description and a reference implementation with a parameter, e.g. the
divisor k of 'sum of the numbers divisible by k'); its test inputs are drawn from an RNG seeded by the problem
id, and the expected outputs come from running the reference implementation here. The reference sources are
this module's own constant templates (never model text). `answer` is the reference solution.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from typing import Any, Callable

from grpolab.errors import UserError
from grpolab.tasks.base import Example, register_task
from grpolab.tasks.generated import GeneratedTask, check_generated

NUM_TESTS = 6


def _ints(rng: random.Random, lo: int = -50, hi: int = 50, max_len: int = 8) -> list[int]:
    return [rng.randint(lo, hi) for _ in range(rng.randint(1, max_len))]


def _word(rng: random.Random, letters: str, max_len: int = 12) -> str:
    return "".join(rng.choice(letters) for _ in range(rng.randint(1, max_len)))


@dataclass(frozen=True)
class Family:
    function: str
    signature: str
    description: str  # format string over the parameters
    reference: str  # source of the reference implementation, format string over the parameters
    params: Callable[[], list[dict[str, Any]]]  # every parameter setting of this family
    inputs: Callable[[random.Random, dict[str, Any]], list[list[Any]]]  # argument lists; the first is an edge case


FAMILIES: tuple[Family, ...] = (
    Family("sum_divisible", "sum_divisible(xs)", "returns the sum of the integers in the list xs that are divisible "
           "by {k} (0 for an empty list)", "def sum_divisible(xs):\n    return sum(x for x in xs if x % {k} == 0)\n",
           lambda: [{"k": k} for k in range(2, 10)], lambda rng, p: [[[]]] + [[_ints(rng)] for _ in range(5)]),
    Family("count_letter", "count_letter(s)", "returns how many times the letter '{c}' occurs in the string s",
           "def count_letter(s):\n    return s.count('{c}')\n",
           lambda: [{"c": c} for c in string.ascii_lowercase],
           lambda rng, p: [[""]] + [[_word(rng, "abcdefg" + p["c"] * 3)] for _ in range(5)]),
    Family("clamp", "clamp(x)", "returns x limited to the range [{lo}, {hi}]: {lo} when x is below it, {hi} when x is "
           "above it, x otherwise", "def clamp(x):\n    return min(max(x, {lo}), {hi})\n",
           lambda: [{"lo": lo, "hi": hi} for lo in range(-10, 1) for hi in range(1, 11)],
           lambda rng, p: [[p["lo"]], [p["hi"] + 1]] + [[rng.randint(-20, 20)] for _ in range(4)]),
    Family("power_sum", "power_sum(n)", "returns 1**{p} + 2**{p} + ... + n**{p} for an integer n >= 0 (0 when n is 0)",
           "def power_sum(n):\n    return sum(i ** {p} for i in range(1, n + 1))\n",
           lambda: [{"p": p} for p in range(1, 6)],
           lambda rng, p: [[0], [1]] + [[rng.randint(2, 30)] for _ in range(4)]),
    Family("rotate_left", "rotate_left(xs)", "returns a new list with the items of xs rotated left by {k} positions, "
           "wrapping around (an empty list gives an empty list)",
           "def rotate_left(xs):\n    if not xs:\n        return []\n    k = {k} % len(xs)\n"
           "    return xs[k:] + xs[:k]\n",
           lambda: [{"k": k} for k in range(1, 10)], lambda rng, p: [[[]]] + [[_ints(rng, 0, 9)] for _ in range(5)]),
    Family("fizz", "fizz(n)", "returns 'Fizz' if the integer n is divisible by {a} but not by {b}, 'Buzz' if it is "
           "divisible by {b} but not by {a}, 'FizzBuzz' if it is divisible by both, and otherwise n as a string",
           "def fizz(n):\n    out = ('Fizz' if n % {a} == 0 else '') + ('Buzz' if n % {b} == 0 else '')\n"
           "    return out or str(n)\n",
           lambda: [{"a": a, "b": b} for a in range(2, 8) for b in range(a + 1, 8)],
           lambda rng, p: [[p["a"] * p["b"]], [p["a"]], [p["b"]]] + [[rng.randint(1, 100)] for _ in range(3)]),
    Family("digit_sum", "digit_sum(n)", "returns the sum of the digits of the integer n >= 0 written in base {b}",
           "def digit_sum(n):\n    total = 0\n    while n:\n        total += n % {b}\n        n //= {b}\n"
           "    return total\n",
           lambda: [{"b": b} for b in range(2, 11)],
           lambda rng, p: [[0]] + [[rng.randint(1, 10**6)] for _ in range(5)]),
    Family("caesar", "caesar(s)", "returns s with every lowercase letter shifted {k} places forward in the alphabet "
           "(wrapping from z to a); other characters stay as they are",
           "def caesar(s):\n"
           "    return ''.join(chr((ord(c) - 97 + {k}) % 26 + 97) if 'a' <= c <= 'z' else c for c in s)\n",
           lambda: [{"k": k} for k in range(1, 26)],
           lambda rng, p: [[""], ["xyz"]] + [[_word(rng, string.ascii_lowercase + " .A")] for _ in range(4)]),
    Family("count_greater", "count_greater(xs)", "returns how many numbers in the list xs are greater than {t}",
           "def count_greater(xs):\n    return sum(1 for x in xs if x > {t})\n",
           lambda: [{"t": t} for t in range(-5, 6)],
           lambda rng, p: [[[]], [[p["t"]]]] + [[_ints(rng, -10, 10)] for _ in range(4)]),
    Family("sequence_term", "sequence_term(n)", "returns term number n (counting from 0) of the sequence that starts "
           "{a}, {b} and in which every later term is the sum of the two terms before it",
           "def sequence_term(n):\n    x, y = {a}, {b}\n    for _ in range(n):\n        x, y = y, x + y\n"
           "    return x\n",
           lambda: [{"a": a, "b": b} for a in range(0, 4) for b in range(1, 4)],
           lambda rng, p: [[0], [1]] + [[rng.randint(2, 40)] for _ in range(4)]),
    Family("kth_largest", "kth_largest(xs)", "returns the {k}-th largest distinct value in the list xs (1st = the "
           "largest), or None when xs has fewer than {k} distinct values",
           "def kth_largest(xs):\n    values = sorted(set(xs), reverse=True)\n"
           "    return values[{k} - 1] if len(values) >= {k} else None\n",
           lambda: [{"k": k} for k in range(1, 5)], lambda rng, p: [[[]]] + [[_ints(rng, 0, 9)] for _ in range(5)]),
    Family("mask_vowels", "mask_vowels(s)", "returns s with every vowel (a, e, i, o, u, in either case) replaced by "
           "'{m}'", "def mask_vowels(s):\n    return ''.join('{m}' if c in 'aeiouAEIOU' else c for c in s)\n",
           lambda: [{"m": m} for m in "*_#-"],
           lambda rng, p: [[""]] + [[_word(rng, "abcdeiouxyzAEO ")] for _ in range(5)]),
)


def _reference(family: Family, params: dict[str, Any]) -> tuple[str, Callable[..., Any]]:
    source = family.reference.format(**params)
    namespace: dict[str, Any] = {}
    exec(compile(source, f"<reference {family.function}>", "exec"), namespace)  # our own template, not model text
    return source, namespace[family.function]


def make_example(family: Family, params: dict[str, Any], limits: dict[str, Any]) -> Example:
    pid = f"{family.function}:" + ",".join(f"{k}={v}" for k, v in sorted(params.items()))
    source, fn = _reference(family, params)
    inputs = family.inputs(random.Random(f"code-inputs:{pid}"), params)[:NUM_TESTS]
    expected = [fn(*args) for args in inputs]
    example_call = f"{family.function}({', '.join(map(repr, inputs[-1]))}) returns {expected[-1]!r}"
    prompt = (f"Write a Python function `{family.signature}` that {family.description.format(**params)}. For example, "
              f"{example_call}. Reply with the complete function in a ```python code block.")
    return Example(id=pid, prompt=prompt, answer=source,
                   meta={"function": family.function, "inputs": inputs, "expected": expected, "limits": limits})


SPACE = [(f, p) for f in FAMILIES for p in f.params()]


def make_draw(limits: dict[str, Any]):
    def draw(rng: random.Random) -> Example:
        family, params = SPACE[rng.randrange(len(SPACE))]
        return make_example(family, params, limits)

    return draw


@register_task("code", summary="write a Python function; scored by running tests in a sandbox")
def _build(cfg: Any, seed: int) -> GeneratedTask:
    if check_generated(cfg, "code", ()):
        raise UserError(f"task 'code' has no difficulty levels (--level {cfg.level}). Fix: drop --level")
    limits = {"wall_s": cfg.code_timeout, "memory_mb": cfg.code_memory_mb}
    return GeneratedTask("code", cfg.verifier or "code", make_draw(limits), eval_size=cfg.eval_size,
                         data_seed=cfg.data_seed, seed=seed, system_prompt=cfg.system_prompt, space_size=len(SPACE),
                         info={"families": len(FAMILIES), "problems": len(SPACE)})
