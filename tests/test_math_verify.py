"""The math verifier: extraction, normalisation, equivalence (exact, numeric, symbolic), structures, reasons."""

import threading
import time

import pytest

from grpolab.rewards import get_verifier
from grpolab.rewards.mathnorm import normalize, structure
from grpolab.rewards.mathparse import ParseError, evaluate, to_python
from grpolab.rewards.mathverify import extract_math_answer, math_equal, verify_math
from grpolab.rewards.symbolic import SympyWorker
from grpolab.tasks import Example
from grpolab.tasks.boxed import last_boxed


@pytest.mark.parametrize("text,expected", [
    (r"so \boxed{5}.", "5"),
    (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
    (r"first \boxed{1} then \boxed{\sqrt{\frac{3}{4}}}", r"\sqrt{\frac{3}{4}}"),
    (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),  # escaped braces do not close the box
    (r"\boxed 7 is it", "7"),
    (r"\boxed{2} and an unclosed \boxed{3", "2"),
    (r"\fbox{x+1}", "x+1"),
    ("no box here", None),
    ("", None),
])
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


@pytest.mark.parametrize("text,mode,expected", [
    (r"<answer>\boxed{3}</answer>", "strict", "3"),
    (r"<answer>x = 4</answer> but \boxed{5}", "lenient", "x = 4"),
    (r"The answer is \boxed{\frac{1}{2}}.", "strict", None),
    (r"The answer is \boxed{\frac{1}{2}}.", "lenient", r"\frac{1}{2}"),
    ("it is 42 apples", "lenient", "42"),
    ("so x = -14/3.", "lenient", "-14/3"),
    (r"The answer is $\frac{1}{2}$.", "lenient", r"\frac{1}{2}"),
    ("3x = 15, so x = 5 apples", "lenient", "5"),
    ("so x = -14/3.", "strict", None),
    ("nothing", "lenient", None),
])
def test_extract_math_answer(text, mode, expected):
    assert extract_math_answer(text, mode) == expected


@pytest.mark.parametrize("raw,expected", [
    (r"$\dfrac{3}{4}$", r"\frac{3}{4}"),
    (r"\left( 1, 2 \right)", "( 1, 2 )"),
    (r"10\text{ cm}", "10"),
    (r"5 \text{ inches}^2", "5"),
    ("12 square units", "12"),
    (r"\text{Tuesday}", "Tuesday"),
    (r"90^{\circ}", "90"),
    (r"25\%", "25"),
    (r"\$18.90", "18.90"),
    ("1,234,567", "1234567"),
    (r"1{,}000", "1000"),
    ("x = 5", "5"),
    (r"\theta = \frac{\pi}{2}", r"\frac{\pi}{2}"),
    (r"x \in [2, 5)", "[2, 5)"),
    (r"\frac12", r"\frac{1}{2}"),
    (r"\sqrt2", r"\sqrt{2}"),
    (".5", "0.5"),
    (r"\text{(C)}", "C"),
    ("\u22127", "-7"),
    ("y = 2x + 3", "2x + 3"),
    (r"\boxed{7}", "7"),
])
def test_normalize(raw, expected):
    assert normalize(raw) == expected


EQUAL = [
    (r"\frac{1}{2}", "0.5"), (r"\dfrac12", r"\frac{1}{2}"), ("3/4", r"\frac{3}{4}"), ("-0.5", r"\frac{-1}{2}"),
    (r"-\frac12", r"\frac{-1}{2}"), ("x = 5", "5"), (r"\left( 3, -1 \right)", "(3,-1)"), (r"10\text{ cm}", "10"),
    (r"30^\circ", "30"), (r"50\%", "50"), ("1,000", "1000"), (r"1{,}000", "1000"), (r"\$18.90", "18.9"),
    (r"2\sqrt{2}", r"\sqrt{8}"), (r"\frac{\sqrt{3}}{2}", r"\frac{1}{2}\sqrt{3}"), (r"\sqrt{2}/2", r"\frac{\sqrt2}{2}"),
    (r"2^{10}", "1024"), ("2^10", "1024"), (r"10^{-3}", "0.001"), (r"e^{i\pi}", "-1"), ("3 + 4i", "4i+3"),
    (r"\sqrt[3]{8}", "2"), ("6!", "720"), (r"\binom{6}{2}", "15"), (r"\log_2 8", "3"), (r"\pi", r"\frac{2\pi}{2}"),
    (r"\text{(C)}", "C"), (r"\text{Monday}", r"\text{monday}"), (r"\infty", r"\infty"),
    (r"\{1,2\}", "2, 1"), ("x=1, x=2", r"\{2, 1\}"), (r"1 \pm \sqrt{2}", r"1+\sqrt2, 1-\sqrt2"),
    (r"\left[ 2, 5 \right)", "[2,5)"), (r"x \in [2, 5)", "[2,5)"), (r"(-\infty, 0)", r"(-\infty,0)"),
    (r"(-\infty, 3] \cup (5, \infty)", r"(5,\infty) \cup (-\infty,3]"),
    (r"\begin{pmatrix} 1 \\ -2 \end{pmatrix}", r"\begin{pmatrix}1\\-2\end{pmatrix}"),
    (r"\begin{pmatrix} 0.5 & 2 \end{pmatrix}", r"\begin{pmatrix}\frac12&2\end{pmatrix}"),
    ("y = 2x + 3", "y=3+2x"), ("1, 2", "(1, 2)"), ("\u22125", "-5"),
    (r"(x+1)^2", r"x^2+2x+1"), (r"\frac{x+1}{x-1}", r"\frac{1+x}{-1+x}"), (r"\sin^2 x + \cos^2 x", "1"),
    (r"\frac{a}{2} + \frac{a}{2}", "a"),
]


@pytest.mark.parametrize("pred,gold", EQUAL)
def test_equivalent_answers(pred, gold):
    assert math_equal(pred, gold) == "correct"


NOT_EQUAL = [
    ("0.333", r"\frac{1}{3}", "not equal"), ("1.414", r"\sqrt{2}", "not equal"), ("[1,2)", "(1,2)", "not equal"),
    ("(1,2)", "(2,1)", "not equal"), ("(1, 2)", "[1, 2]", "not equal"), (r"\{1,2\}", r"\{1,2,3\}", "not equal"),
    ("1, 2", "1, 2, 2", "not equal"), ("x^2+2x", "(x+1)^2", "not equal"), ("1/2", "2", "not equal"),
    ("0.5", r"50\%", "not equal"), (r"\frac{\pi}{6}", r"30^\circ", "not equal"), ("3", "-3", "not equal"),
    ("2x", "2y", "not equal"), (r"1+\sqrt{2}", r"1 \pm \sqrt2", "not equal"), ("1000", "1,001", "not equal"),
    (r"\infty", r"-\infty", "not equal"), ("3+4i", "3-4i", "not equal"), ("Monday", "dynamo", "not equal"),
    ("x+1", "3", "not equal"), (r"\sqrt{x^2}", "x", "not equal"), ("5", r"\text{Tuesday}", "not equal"),
    (r"\begin{pmatrix} 1 \\ 3 \end{pmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}", "not equal"),
    ("(1, 2)", "(1, 2, 3)", "not equal"), ("1/0", "5", "not equal"), (r"\{3\}", "3", "not equal"),
    ("the answer", "5", "parse error"), ("5 @ 3", "8", "parse error"), (r"\foo{3}", "3", "parse error"),
    ("(((((((((((((((((((((((((((((((1)))))))))))))))))))))))))))))))", "1", "parse error"),
    ("", "3", "no answer found"),
]


@pytest.mark.parametrize("pred,gold,reason", NOT_EQUAL)
def test_not_equivalent_answers_with_reason(pred, gold, reason):
    assert math_equal(pred, gold) == reason


@pytest.mark.parametrize("text,correct,reason,extracted", [
    (r"So the answer is $\boxed{\dfrac{3}{4}}$.", True, "correct", r"\dfrac{3}{4}"),
    (r"<answer>0.75</answer>", True, "correct", "0.75"),
    ("I think it is 7", False, "not equal", "7"),
    ("no idea", False, "no answer found", None),
    ("<answer></answer>", False, "no answer found", None),
    (r"\boxed{x @ 2}", False, "parse error", "x @ 2"),
])
def test_verify_math_verdicts(text, correct, reason, extracted):
    v = get_verifier("math")(text, Example("m1", "q", r"\frac{3}{4}"), "lenient")
    assert (v.correct, v.reason, v.extracted) == (correct, reason, extracted)


def test_strict_mode_reads_only_tags():
    ex = Example("m1", "q", "5")
    assert verify_math(r"\boxed{5}", ex, "strict").reason == "no answer found"
    assert verify_math(r"<answer>\boxed{5}</answer>", ex, "strict").correct


@pytest.mark.parametrize("raw,kind,items", [
    ("(1, 2]", "tuple", ("1", "2")), (r"\{a, b\}", "set", ("a", "b")), ("1, 2", "list", ("1", "2")),
    ("5", "scalar", ("5",)), (r"1 \pm 2", "list", ("1 + 2", "1 - 2")),
])
def test_structure(raw, kind, items):
    s = structure(normalize(raw))
    assert (s.kind, s.items) == (kind, items)


def test_parser_refuses_text_and_never_evals():
    for bad in ("__import__('os')", "Monday", "x @ y", "a.b"):
        with pytest.raises(ParseError):
            to_python(bad)
    assert to_python(r"2\sqrt{3}x^2") == "2*sqrt((3))*(s_x)**(2)"
    assert evaluate(to_python(r"\frac{6}{4}")) == evaluate(to_python("1.5"))


def test_sympy_time_limit_works_off_the_main_thread_and_recovers():
    worker = SympyWorker()
    slow = (to_python("(10^{7})!"), to_python("5"))  # sympy computes the 65-million-digit factorial: > 30 s
    worker.equal("1", "1", timeout=60)  # start-up (importing sympy) is not part of any limit
    out = {}

    def run():
        t = time.perf_counter()
        out["result"] = worker.equal(*slow, timeout=0.5)
        out["seconds"] = time.perf_counter() - t

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    assert out["result"].reason == "timeout" and not out["result"].equal
    assert 0.5 <= out["seconds"] < 3.0
    again = worker.equal(to_python("(x+1)^2"), to_python("x^2+2x+1"), timeout=60)  # a fresh worker answers
    assert (again.equal, again.reason) == (True, "equal")
    worker.close()


def test_verify_math_reports_timeout():
    ex = Example("t", "q", "5")
    v = verify_math(r"\boxed{(10^{7})!}", ex, "lenient", timeout=0.3)
    assert (v.correct, v.reason) == (False, "timeout")
