"""Every verifier is total: seeded junk (LaTeX fragments, tags, operators, unicode) never raises, and each verdict
carries a reason from the verifier's documented set."""

import random

import pytest

from grpolab.rewards import get_verifier
from grpolab.rewards.code import extract_code
from grpolab.tasks import Example

PIECES = ["\\boxed{", "}", "{", "\\frac", "\\sqrt", "[", "]", "(", ")", "\\{", "\\}", "^", "_", "x", "e", "i", "\\pi",
          "\\infty", "1", "23", "0", ".", ",", "=", "+", "-", "*", "/", "!", "|", "\\left", "\\right", "\\text{", "cm",
          " ", "$", "%", "\\pm", "\\cup", "\\in", "<answer>", "</answer>", "\\begin{pmatrix}", "\\end{pmatrix}", "&",
          "\\\\", "\\log", "\\sin", "^{\\circ}", "1,000", "\u2212", "\\binom", "10^{10}", "999!", "abc", "\n", "#### ",
          "$5", "×", "```python\n", "```", "def f(", "\x00", "\udcff"]
CASES = {
    "math": (Example("m", "q", r"\frac{3}{4}"), {"correct", "no answer found", "parse error", "not equal", "timeout"}),
    "numeric": (Example("n", "q", "-7"), {"correct", "no answer found", "not a number", "not equal"}),
    "countdown": (Example("c", "q", "24", {"nums": [4, 6, 1], "target": 24}),
                  {"correct", "no answer found", "parse error", "disallowed syntax", "division by zero", "wrong numbers",
                   "not equal"}),
    "list": (Example("s", "q", "apple, fig"), {"correct", "no answer found", "wrong order", "wrong items"}),
}


def junk(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(PIECES) for _ in range(rng.randint(0, 16))) for _ in range(n)]


@pytest.mark.parametrize("name", sorted(CASES))
def test_verifier_never_raises_on_junk(name):
    example, reasons = CASES[name]
    verify = get_verifier(name)
    seen = set()
    for text in junk(1, 400):
        for mode in ("lenient", "strict"):
            v = verify(text, example, mode)
            assert v.reason in reasons and v.correct == (v.reason == "correct"), (text, v)
            seen.add(v.reason)
    assert {"no answer found"} < seen  # the junk reaches past extraction


def test_code_extraction_never_raises_on_junk():
    found = [extract_code(text, mode, "f") for text in junk(2, 400) for mode in ("lenient", "strict")]
    assert any(code is not None for code in found) and any(code is None for code in found)
