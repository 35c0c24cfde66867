import pytest

from grpolab.errors import UserError
from grpolab.rewards import (build_reward_terms, extract_answer, has_answer_format, last_number,
                             parse_reward_spec, register_reward_term, score, total, verify_numeric)
from grpolab.tasks import Example

EX = Example("7+5", "What is 7 + 5?", "12")


@pytest.mark.parametrize("text,mode,expected", [
    ("The answer is 12.", "lenient", ("12", "last-number")),
    ("The answer is 12.", "strict", (None, "none")),
    ("<answer>12</answer>", "strict", ("12", "tags")),
    ("<answer> 3 </answer> then <answer>12</answer>", "strict", ("12", "tags")),
    ("7 + 5 = 12, so 13", "lenient", ("13", "last-number")),
    ("no digits here", "lenient", (None, "none")),
    ("", "lenient", (None, "none")),
    ("<ANSWER>12</ANSWER>", "strict", ("12", "tags")),
])
def test_extract_answer(text, mode, expected):
    assert extract_answer(text, mode) == expected


@pytest.mark.parametrize("text,expected", [
    ("costs 1,234 dollars", "1,234"), ("-5 degrees", "-5"), ("2.5 kg", "2.5"), ("5-3=2", "2"), ("x", None),
    ("v1.2.3", "3"), ("it is 12.", "12"),
])
def test_last_number(text, expected):
    assert last_number(text) == expected


@pytest.mark.parametrize("text,correct,reason", [
    ("7 + 5 = 12", True, "correct"),
    ("<answer>12</answer>", True, "correct"),
    ("<answer>twelve</answer>", False, "not a number"),
    ("I think 11", False, "not equal"),
    ("no idea", False, "no answer found"),
    ("the total is $12.00", True, "correct"),
    ("12.0", True, "correct"),
    ("<answer>12</answer> wait, 13", True, "correct"),  # tags win over the last number
])
def test_verify_numeric(text, correct, reason):
    v = verify_numeric(text, EX, "lenient")
    assert (v.correct, v.reason) == (correct, reason)


def test_strict_mode_needs_tags():
    assert not verify_numeric("7 + 5 = 12", EX, "strict").correct
    assert verify_numeric("so <answer>12</answer>", EX, "strict").correct


def test_negative_and_thousands():
    assert verify_numeric("the result is -1,000", Example("a", "q", "-1000"), "lenient").correct


@pytest.mark.parametrize("text,ok", [
    ("think... <answer>12</answer>", True), ("<answer>12</answer> extra", False), ("<answer></answer>", False),
    ("<answer>1</answer><answer>2</answer>", False), ("12", False),
])
def test_format(text, ok):
    assert has_answer_format(text) == ok


def test_reward_spec_and_weighted_total():
    assert parse_reward_spec("correct:1, format:0.25") == [("correct", 1.0), ("format", 0.25)]
    assert parse_reward_spec("correct") == [("correct", 1.0)]
    terms = build_reward_terms("correct:1,format:0.5", "numeric", "lenient")
    texts = ["<answer>12</answer>", "12", "nope"]
    s = score(terms, texts, [EX] * 3)
    assert s == {"correct": [1.0, 1.0, 0.0], "format": [1.0, 0.0, 0.0]}
    assert total(terms, s) == [1.5, 1.0, 0.0]


def test_unknown_and_duplicate_terms():
    with pytest.raises(UserError, match="unknown reward term 'corect'.*Did you mean 'correct'"):
        build_reward_terms("corect", "numeric", "lenient")
    with pytest.raises(UserError, match="names a term twice"):
        build_reward_terms("correct,correct:2", "numeric", "lenient")


def test_a_raising_or_nan_term_names_itself_and_the_example():
    register_reward_term("test_raises", lambda v, m: (lambda c, e: 1 / 0))
    register_reward_term("test_nan", lambda v, m: (lambda c, e: float("nan")))
    with pytest.raises(UserError, match="'test_raises' raised ZeroDivisionError.*'7\\+5'"):
        score(build_reward_terms("test_raises", "numeric", "lenient"), ["x"], [EX])
    with pytest.raises(UserError, match="'test_nan' returned nan on example '7\\+5'"):
        score(build_reward_terms("test_nan", "numeric", "lenient"), ["x"], [EX])
