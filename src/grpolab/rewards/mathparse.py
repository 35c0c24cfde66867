"""LaTeX math (as answers are written) -> a Python-syntax expression, and its exact or numeric value.

`to_python('2\\sqrt{3}x^2')` gives `'(2)*sqrt(3)*s_x**(2)'`. The output uses only numbers, `+ - * / **`,
the names of `FUNCTIONS` and `CONSTANTS`, and symbols `s_<name>`; `evaluate` walks its AST with that
whitelist (Fractions where exact, complex numbers otherwise), and the sympy worker rebuilds it the same way.
Nothing is ever passed to `eval`. Runs of three or more plain letters are text, not a product of variables.
"""

from __future__ import annotations

import ast
import cmath
import math
import re
from fractions import Fraction
from typing import Callable

MAX_CHARS = 400
MAX_EXPONENT = 10_000  # larger integer powers are refused rather than computed
MAX_FACTORIAL = 1000
MAX_DEPTH = 30  # keeps parsing and evaluation far from Python's recursion limit

FUNCTIONS = {"sqrt": 1, "root": 2, "sin": 1, "cos": 1, "tan": 1, "cot": 1, "sec": 1, "csc": 1, "asin": 1,
             "acos": 1, "atan": 1, "log": 2, "exp": 1, "Abs": 1, "factorial": 1, "binomial": 2, "floor": 1,
             "ceiling": 1}
CONSTANTS = {"pi", "E", "I", "oo"}
_TEX_FUNCS = {"sin": "sin", "cos": "cos", "tan": "tan", "cot": "cot", "sec": "sec", "csc": "csc",
              "arcsin": "asin", "arccos": "acos", "arctan": "atan", "ln": "log", "log": "log", "exp": "exp"}
_GREEK = {"alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta", "vartheta", "iota",
          "kappa", "lambda", "mu", "nu", "xi", "rho", "sigma", "tau", "upsilon", "phi", "varphi", "chi", "psi", "omega",
          "Gamma", "Delta", "Theta", "Lambda", "Xi", "Sigma", "Phi", "Psi", "Omega"}
_WORDS = {"pi": "\\pi", "sqrt": "\\sqrt", "inf": "\\infty", "infty": "\\infty", "infinity": "\\infty",
          **{k: "\\" + k for k in _TEX_FUNCS}}
_TOKEN = re.compile(r"\s*(\d+\.\d*|\.\d+|\d+|\\[a-zA-Z]+|\\[{}|]|[a-zA-Z]+|\*\*|[-+*/^_!(){}\[\]|,=])")


class ParseError(ValueError):
    """The text is not a math expression this parser understands."""


def tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ParseError(f"unexpected character {text[pos]!r}")
        tok, pos = m.group(1), m.end()
        if tok.isalpha() and len(tok) > 1:  # plain words: known names, or single-letter variables side by side
            if tok in _WORDS:
                tokens.append(_WORDS[tok])
                continue
            if len(tok) > 2:
                raise ParseError(f"text {tok!r} is not math")
            tokens.extend(tok)
            continue
        tokens.append(tok)
    return tokens


class _Parser:
    def __init__(self, tokens: list[str]) -> None:
        self.toks, self.i = tokens, 0

    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (expected is not None and tok != expected):
            raise ParseError(f"expected {expected or 'more'}, found {tok or 'the end'}")
        self.i += 1
        return tok

    def parse(self) -> str:
        out = self.sum()
        if self.peek() is not None:
            raise ParseError(f"unexpected {self.peek()!r}")
        return out

    def sum(self) -> str:
        out = self.product()
        while self.peek() in ("+", "-"):
            op = self.take()
            out = f"{out} {op} {self.product()}"
        return out

    def _starts_atom(self, tok: str | None) -> bool:
        if tok is None:
            return False
        return (tok[0].isdigit() or tok[0] == "." or tok.isalpha() or tok in ("(", "{", "[")
                or (tok.startswith("\\") and tok[1:] not in ("cdot", "times", "div", "pm", "mp")
                    and len(tok) > 2))

    def product(self) -> str:
        out = self.unary()
        while True:
            tok = self.peek()
            if tok in ("*", "/", "\\cdot", "\\times", "\\div"):
                self.take()
                op = "/" if tok in ("/", "\\div") else "*"
                out = f"{out}{op}{self.unary()}"
            elif self._starts_atom(tok):  # implicit multiplication: 2x, 2\pi, x(x+1)
                out = f"{out}*{self.power()}"
            else:
                return out

    def unary(self) -> str:
        if self.peek() in ("-", "+"):
            op = self.take()
            inner = self.unary()
            return f"(-{inner})" if op == "-" else inner
        return self.power()

    def power(self) -> str:
        base = self.postfix()
        if self.peek() in ("^", "**"):
            self.take()
            if self.peek() == "{":
                exponent = self.group()
            elif self.peek() in ("-", "+"):
                exponent = self.unary()
            else:  # plain-text answers write 2^10 for 2^{10}, so a whole number is the exponent
                exponent = self.power()
            return f"({base})**({exponent})"
        return base

    def postfix(self) -> str:
        out = self.atom()
        while self.peek() == "!":
            self.take()
            out = f"factorial({out})"
        return out

    def group(self) -> str:
        """{...} or a single token (LaTeX arguments: \\frac12 means \\frac{1}{2})."""
        if self.peek() == "{":
            self.take("{")
            inner = self.sum()
            self.take("}")
            return f"({inner})"
        tok = self.peek() or ""
        if tok.isdigit() and len(tok) > 1:
            self.toks[self.i:self.i + 1] = [tok[0], tok[1:]]
        return self.atom()

    def atom(self) -> str:
        tok = self.take()
        if tok[0].isdigit() or tok[0] == ".":
            value = Fraction(tok)
            return str(value.numerator) if value.denominator == 1 else f"({value.numerator}/{value.denominator})"
        if tok in ("(", "[", "{"):
            inner = self.sum()
            self.take({"(": ")", "[": "]", "{": "}"}[tok])
            return f"({inner})"
        if tok == "|":
            inner = self.sum()
            self.take("|")
            return f"Abs({inner})"
        if tok.isalpha():
            return self._symbol(tok)
        if tok.startswith("\\"):
            return self._command(tok[1:])
        raise ParseError(f"unexpected {tok!r}")

    def _symbol(self, name: str) -> str:
        if self.peek() == "_":
            self.take()
            sub = self.take()
            if sub == "{":
                parts = []
                while self.peek() not in ("}", None):
                    parts.append(self.take())
                self.take("}")
                sub = "".join(parts)
            if not re.fullmatch(r"[A-Za-z0-9]+", sub):
                raise ParseError(f"subscript {sub!r}")
            name = f"{name}_{sub}"
        elif name == "e":
            return "E"
        elif name == "i":
            return "I"
        return f"s_{name}"

    def _command(self, name: str) -> str:
        if name in ("frac", "binom"):
            a, b = self.group(), self.group()
            return f"({a}/{b})" if name == "frac" else f"binomial({a}, {b})"
        if name == "sqrt":
            if self.peek() == "[":
                self.take("[")
                n = self.sum()
                self.take("]")
                return f"root({self.group()}, {n})"
            return f"sqrt({self.group()})"
        if name == "pi":
            return "pi"
        if name == "infty":
            return "oo"
        if name in _GREEK:
            return self._symbol(name)
        if name in _TEX_FUNCS:
            return self._function(_TEX_FUNCS[name], name)
        raise ParseError(f"unknown command \\{name}")

    def _function(self, fn: str, tex: str) -> str:
        base = None
        if tex == "log" and self.peek() == "_":
            self.take()
            base = self.group()
        power = None
        if self.peek() == "^":  # \sin^2 x
            self.take()
            power = self.group()
        arg = self.group() if self.peek() in ("(", "{") else self.power()
        out = f"log({arg}, {base})" if base is not None else f"{fn}({arg})"
        return f"({out})**({power})" if power is not None else out


def to_python(text: str) -> str:
    """The Python-syntax form of a LaTeX math expression; ParseError when it is not one."""
    if len(text) > MAX_CHARS:
        raise ParseError(f"longer than {MAX_CHARS} characters")
    tokens = tokenize(text)
    if not tokens:
        raise ParseError("empty")
    depth = deepest = 0
    for tok in tokens:
        depth += tok in ("(", "[", "{") or -(tok in (")", "]", "}"))
        deepest = max(deepest, depth)
    if deepest > MAX_DEPTH:
        raise ParseError(f"nested deeper than {MAX_DEPTH} brackets")
    return _Parser(tokens).parse()


Number = Fraction | complex


class NotNumeric(ValueError):
    """The expression has free symbols or cannot be evaluated numerically (too large, undefined)."""


def _approx(v: Number) -> complex:
    try:
        return complex(v.numerator / v.denominator) if isinstance(v, Fraction) else v
    except OverflowError:
        raise NotNumeric("too large for a float") from None


def _exact_root(v: Fraction, n: int) -> Fraction | None:
    if v < 0 or n <= 0:
        return None
    num, den = round(v.numerator ** (1 / n)), round(v.denominator ** (1 / n))
    return Fraction(num, den) if den and num**n == v.numerator and den**n == v.denominator else None


def _pow(a: Number, b: Number) -> Number:
    if isinstance(a, Fraction) and isinstance(b, Fraction) and b.denominator == 1:
        if abs(b) > MAX_EXPONENT or (a.numerator.bit_length() + a.denominator.bit_length()) * abs(b) > 200_000:
            raise NotNumeric("power too large")
        if a == 0 and b < 0:
            raise NotNumeric("division by zero")
        return a**b
    if isinstance(a, Fraction) and isinstance(b, Fraction) and b.denominator <= 12 and a >= 0:
        root = _exact_root(a, b.denominator)
        if root is not None:
            return _pow(root, Fraction(b.numerator))
    try:
        return _approx(a) ** _approx(b)
    except (OverflowError, ZeroDivisionError) as e:
        raise NotNumeric(str(e)) from None


def _real_fn(f: Callable[[float], float]) -> Callable[[Number], Number]:
    def apply(v: Number) -> Number:
        c = _approx(v)
        if abs(c.imag) > 1e-12:
            raise NotNumeric("complex argument")
        return Fraction(int(f(c.real)))
    return apply


def _factorial(v: Number) -> Number:
    if not (isinstance(v, Fraction) and v.denominator == 1 and 0 <= v <= MAX_FACTORIAL):
        raise NotNumeric("factorial of a non-integer or a huge number")
    return Fraction(math.factorial(int(v)))


def _binomial(n: Number, k: Number) -> Number:
    if not all(isinstance(v, Fraction) and v.denominator == 1 and 0 <= v <= MAX_FACTORIAL for v in (n, k)):
        raise NotNumeric("binomial of non-integers or huge numbers")
    return Fraction(math.comb(int(n), int(k)))


def _sqrt(v: Number) -> Number:
    if isinstance(v, Fraction):
        exact = _exact_root(v, 2)
        if exact is not None:
            return exact
    return cmath.sqrt(_approx(v))


def _log(v: Number, base: Number | None = None) -> Number:
    if _approx(v) == 0 or (base is not None and _approx(base) in (0, 1)):
        raise NotNumeric("log of 0 or to base 0/1")
    out = cmath.log(_approx(v))
    return out / cmath.log(_approx(base)) if base is not None else out


def _unary(fn: Callable[[complex], complex]) -> Callable[[Number], Number]:
    return lambda v: fn(_approx(v))


_FN_IMPL: dict[str, Callable[..., Number]] = {
    "sqrt": _sqrt, "root": lambda v, n: _pow(v, Fraction(1) / n if isinstance(n, Fraction) else 1 / _approx(n)),
    "sin": _unary(cmath.sin), "cos": _unary(cmath.cos), "tan": _unary(cmath.tan),
    "cot": _unary(lambda z: 1 / cmath.tan(z)), "sec": _unary(lambda z: 1 / cmath.cos(z)),
    "csc": _unary(lambda z: 1 / cmath.sin(z)), "asin": _unary(cmath.asin), "acos": _unary(cmath.acos),
    "atan": _unary(cmath.atan), "log": _log, "exp": _unary(cmath.exp),
    "Abs": lambda v: abs(v) if isinstance(v, Fraction) else complex(abs(v)), "factorial": _factorial,
    "binomial": _binomial, "floor": _real_fn(math.floor), "ceiling": _real_fn(math.ceil),
}
_CONST_IMPL: dict[str, Number] = {"pi": complex(math.pi), "E": complex(math.e), "I": 1j, "oo": complex(math.inf)}


def has_symbols(expr: str) -> bool:
    return any(isinstance(n, ast.Name) and n.id.startswith("s_") for n in ast.walk(ast.parse(expr, mode="eval")))


def evaluate(expr: str) -> Number:
    """The value of a `to_python` expression: a Fraction when exact, else a complex number."""
    def walk(node: ast.AST) -> Number:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return Fraction(node.value)
        if isinstance(node, ast.Name):
            if node.id in _CONST_IMPL:
                return _CONST_IMPL[node.id]
            raise NotNumeric(f"free symbol {node.id[2:]}")
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        if isinstance(node, ast.BinOp):
            a, b = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Pow):
                return _pow(a, b)
            if isinstance(node.op, ast.Div):
                if b == 0:
                    raise NotNumeric("division by zero")
                return a / b if isinstance(a, Fraction) and isinstance(b, Fraction) else _approx(a) / _approx(b)
            if isinstance(node.op, (ast.Add, ast.Sub, ast.Mult)):
                op = {ast.Add: lambda x, y: x + y, ast.Sub: lambda x, y: x - y, ast.Mult: lambda x, y: x * y}
                if isinstance(a, Fraction) and isinstance(b, Fraction):
                    return op[type(node.op)](a, b)
                try:
                    return op[type(node.op)](_approx(a), _approx(b))
                except OverflowError as e:
                    raise NotNumeric(str(e)) from None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS:
            try:
                return _FN_IMPL[node.func.id](*[walk(a) for a in node.args])
            except (ValueError, OverflowError, ZeroDivisionError, TypeError) as e:
                if isinstance(e, NotNumeric):
                    raise
                raise NotNumeric(f"{node.func.id}: {e}") from None
        raise NotNumeric(f"unsupported {type(node).__name__}")

    return walk(ast.parse(expr, mode="eval").body)


def numbers_equal(a: Number, b: Number, rel: float = 1e-9) -> bool:
    """Exact when both are exact; otherwise equal within a relative tolerance (infinities equal themselves)."""
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return a == b
    x, y = _approx(a), _approx(b)
    if any(math.isnan(v) for v in (x.real, x.imag, y.real, y.imag)):
        return False
    if any(math.isinf(v) for v in (x.real, x.imag, y.real, y.imag)):
        return x == y
    return abs(x - y) <= rel * max(1.0, abs(x), abs(y))
