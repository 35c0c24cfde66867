"""The numeric verifier on GSM8K-style answers: thousands separators, negatives, decimals, currency."""

import pytest

from grpolab.rewards import last_number, verify_numeric
from grpolab.rewards.verify import parse_number
from grpolab.tasks import Example


@pytest.mark.parametrize("text,expected", [
    ("1,234", "1234"), ("-5", "-5"), ("$3.50", "3.50"), ("-$3.50", "-3.50"), ("$-3.50", "-3.50"), ("- $3", "-3"),
    ("€ 7", "7"), ("£12", "12"), ("7.", "7"), ("12%", "12"), ("50\\%", "50"), ("+4", "4"), ("\u22122", "-2"),
    ("1,234,567.89", "1234567.89"), ("USD 40", "40"), ("40 dollars", "40"), ("\\$40", "40"), ("1{,}000", "1000"),
    ("0.50", "0.50"),
])
def test_parse_number(text, expected):
    from decimal import Decimal

    assert parse_number(text) == Decimal(expected)


@pytest.mark.parametrize("text", ["1/2", "5 apples and 3 pears", "abc", "", "1,5,3", "1.2.3"])
def test_not_a_single_number(text):
    assert parse_number(text) is None


@pytest.mark.parametrize("text,expected", [
    ("she lost -$5 in total", "-5"), ("the change is \u221212", "-12"), ("costs $1,080.", "1,080"),
])
def test_last_number_signs_and_currency(text, expected):
    assert last_number(text) == expected


@pytest.mark.parametrize("completion,gold,correct,reason", [
    ("Total: $1,080.", "1080", True, "correct"),
    ("<answer>850,000</answer>", "850000", True, "correct"),
    ("The sum is -47.", "-47", True, "correct"),
    ("<answer>-$47</answer>", "-47", True, "correct"),
    ("<answer>\u221247</answer>", "-47", True, "correct"),
    ("It is 47.", "-47", False, "not equal"),
    ("<answer>10.00</answer>", "10", True, "correct"),
    ("<answer>10.01</answer>", "10", False, "not equal"),
    ("<answer>18 dollars</answer>", "18", True, "correct"),
    ("<answer>1,08</answer>", "108", False, "not a number"),
    ("<answer>about 3 or 4</answer>", "3", False, "not a number"),
    ("#### 72", "72", True, "correct"),
])
def test_gsm8k_style_verdicts(completion, gold, correct, reason):
    v = verify_numeric(completion, Example("g", "q", gold), "lenient")
    assert (v.correct, v.reason) == (correct, reason)
