"""Generated tasks with difficulty levels: countdown, multiply, linear, sort, code. Known answers, determinism,
disjoint splits, and the levels registry used by `grpolab calibrate`."""

from fractions import Fraction

import pytest

from grpolab.config import Config
from grpolab.errors import UserError
from grpolab.rewards import get_verifier
from grpolab.tasks import build_task, task_info, task_names
from grpolab.tasks.countdown import evaluate_expression, solve
from grpolab.tasks.linear import side


def make(name, seed=0, **kw):
    return build_task(Config.from_flat(task=name, **kw).task, seed)


@pytest.mark.parametrize("name,levels,verifier", [
    ("countdown", (1, 2, 3, 4), "countdown"), ("multiply", (1, 2, 3, 4, 5), "numeric"),
    ("linear", (1, 2, 3, 4), "math"),
    ("sort", (1, 2, 3, 4), "list"), ("arithmetic", (1, 2, 3, 4), "numeric"), ("math", (1, 2, 3, 4, 5), None),
    ("code", (), "code"), ("gsm8k", (), None), ("file", (), None),
])
def test_registry_levels_and_verifiers(name, levels, verifier):
    assert name in task_names()
    assert task_info(name).levels == levels
    if verifier:
        assert make(name, eval_size=20).verifier == verifier


@pytest.mark.parametrize("name,level", [
    ("countdown", 1), ("countdown", 3), ("multiply", 1), ("multiply", 5), ("linear", 1), ("linear", 4), ("sort", 1),
    ("sort", 4), ("code", 0),
])
def test_deterministic_disjoint_and_seeded(name, level):
    a, b = make(name, level=level, eval_size=20), make(name, level=level, eval_size=20)
    held = [e.id for e in a.eval_examples()]
    assert held == [e.id for e in b.eval_examples()] and len(set(held)) == 20
    train = [a.train_example(i).id for i in range(60)]
    assert train == [b.train_example(i).id for i in range(60)]
    assert not set(held) & set(train)
    other = make(name, seed=1, level=level, eval_size=20)
    assert [e.id for e in other.eval_examples()] == held
    assert [other.train_example(i).id for i in range(60)] != train


def test_level_outside_the_range():
    with pytest.raises(UserError, match="--level 7 does not exist for task 'countdown'; allowed: 1, 2, 3, 4"):
        make("countdown", level=7)


@pytest.mark.parametrize("level,digits", [(1, (2, 1)), (2, (2, 2)), (3, (3, 2)), (4, (3, 3)), (5, (4, 4))])
def test_multiply_answers_and_digits(level, digits):
    t = make("multiply", level=level, eval_size=10)
    for i in range(30):
        ex = t.train_example(i)
        a, b = ex.meta["a"], ex.meta["b"]
        assert (len(str(a)), len(str(b))) == digits and ex.answer == str(a * b)
        assert ex.prompt == f"What is {a} * {b}?"


@pytest.mark.parametrize("name,level,first_two,first_held_out", [
    ("multiply", 2, [("60*30", "1800"), ("43*31", "1333")], "41*36"),
    ("linear", 4, [("7x-1=10x+13", "-14/3"), ("-5x+9=3x+12", "-3/8")], "12x+17=9x-12"),
    ("sort", 1, [("pillow,onion,granite", "granite, onion, pillow"), ("coral,eagle,oak", "coral, eagle, oak")],
     "apricot,jasmine,stone"),
    ("countdown", 1, [("2,2,6->2", "2"), ("2,2,10->10", "10")], "1,8,10->3"),
])
def test_pinned_data_order(name, level, first_two, first_held_out):
    """The data order is part of resuming runs across versions: a change here must be deliberate."""
    t = make(name, level=level, eval_size=10)
    assert [(t.train_example(i).id, t.train_example(i).answer) for i in range(2)] == first_two
    assert t.eval_examples()[0].id == first_held_out


@pytest.mark.parametrize("a,b,text", [(3, -7, "3x - 7"), (-1, 2, "-x + 2"), (1, 0, "x"), (0, 5, "5"), (2, 4, "2x + 4")])
def test_linear_side_text(a, b, text):
    assert side(a, b) == text


@pytest.mark.parametrize("level", [1, 2, 3, 4])
def test_linear_answers_solve_the_equation(level):
    t = make("linear", level=level, eval_size=10)
    verify = get_verifier("math")
    for i in range(40):
        ex = t.train_example(i)
        m = ex.meta
        x = Fraction(ex.answer)
        assert m["a"] * x + m["b"] == m["c"] * x + m["d"]
        assert (x.denominator != 1) == (level == 4)
        assert verify(f"so x = {ex.answer}", ex, "lenient").correct
        assert verify(f"<answer>{float(x) + 1}</answer>", ex, "strict").reason == "not equal"


@pytest.mark.parametrize("level,count", [(1, 3), (2, 5), (3, 8), (4, 12)])
def test_sort_answers(level, count):
    t = make("sort", level=level, eval_size=10)
    for i in range(20):
        ex = t.train_example(i)
        words = ex.meta["items"]
        assert len(words) == len(set(words)) == count
        assert ex.answer == ", ".join(sorted(words))


@pytest.mark.parametrize("text,correct,reason", [
    ("<answer>apple, fig, pear</answer>", True, "correct"),
    ("The sorted list: Apple, Fig and Pear.", True, "correct"),
    ("1. apple\n2. fig\n3. pear", True, "correct"),
    ("[apple, fig, pear]", True, "correct"),
    ("<answer>fig, apple, pear</answer>", False, "wrong order"),
    ("<answer>apple, fig</answer>", False, "wrong items"),
    ("<answer>apple, fig, plum</answer>", False, "wrong items"),
    ("", False, "no answer found"),
])
def test_list_verifier(text, correct, reason):
    from grpolab.tasks import Example

    v = get_verifier("list")(text, Example("s", "q", "apple, fig, pear"), "lenient")
    assert (v.correct, v.reason) == (correct, reason)


@pytest.mark.parametrize("level", [1, 2, 3, 4])
def test_countdown_instances_are_solvable_with_all_numbers(level):
    t = make("countdown", level=level, eval_size=5)
    verify = get_verifier("countdown")
    for i in range(8 if level == 4 else 20):
        ex = t.train_example(i)
        value, used = evaluate_expression(ex.meta["solution"])
        assert value == ex.meta["target"] and sorted(used) == sorted(ex.meta["nums"])
        assert verify(f"<answer>{ex.meta['solution']}</answer>", ex, "strict").correct


@pytest.mark.parametrize("numbers,target,solvable", [
    ([4, 6, 1], 24, True), ([1, 1, 1], 10, False), ([3, 3, 8, 8], 24, True), ([5], 5, True), ([2, 2], 5, False),
])
def test_solver(numbers, target, solvable):
    found = solve(numbers, target)
    assert (found is not None) == solvable
    if found:
        value, used = evaluate_expression(found)
        assert value == target and sorted(used) == sorted(numbers)


def test_solver_needs_fractions_for_8_8_3_3():
    found = solve([3, 3, 8, 8], 24)  # 8 / (3 - 8 / 3): only with a fractional intermediate
    assert evaluate_expression(found)[0] == 24


@pytest.mark.parametrize("text,mode,correct,reason", [
    ("<answer>(4 + 6) * 1 + 14 - 14</answer>", "strict", False, "wrong numbers"),
    ("<answer>4 * 6 * 1</answer>", "strict", True, "correct"),
    ("<answer>4 * 6 * 1 = 24</answer>", "strict", True, "correct"),
    ("<answer>24 = 6 × 4 ÷ 1</answer>", "strict", True, "correct"),
    ("<answer>4 * 6</answer>", "strict", False, "wrong numbers"),
    ("<answer>4 * 6 * 1 * 1</answer>", "strict", False, "wrong numbers"),
    ("<answer>4 + 6 + 1</answer>", "strict", False, "not equal"),
    ("<answer>4 * 6 / (1 - 1)</answer>", "strict", False, "division by zero"),
    ("<answer>4 ** 6 * 1</answer>", "strict", False, "disallowed syntax"),
    ("<answer>__import__('os').system('x')</answer>", "strict", False, "disallowed syntax"),
    ("<answer>-4 * -6 * 1</answer>", "strict", False, "disallowed syntax"),
    ("<answer>4.0 * 6 * 1</answer>", "strict", False, "disallowed syntax"),
    ("<answer>4 * (6 * 1</answer>", "strict", False, "parse error"),
    ("I try 4 + 6 = 10, no. Then 4 * 6 * 1 = 24.", "lenient", True, "correct"),
    ("I try 4 + 6 = 10, no. Then 4 * 6 * 1 = 24.", "strict", False, "no answer found"),
    ("no idea", "lenient", False, "no answer found"),
    ("<answer>" + "(" * 150 + "4" + ")" * 150 + " * 6 * 1</answer>", "strict", False, "parse error"),
])
def test_countdown_verifier(text, mode, correct, reason):
    from grpolab.tasks import Example

    ex = Example("c", "q", "24", {"nums": [4, 6, 1], "target": 24})
    v = get_verifier("countdown")(text, ex, mode)
    assert (v.correct, v.reason) == (correct, reason)


def test_code_task_gold_solutions_pass_and_wrong_code_fails():
    from grpolab.tasks.code import FAMILIES, make_example

    verify = get_verifier("code")
    limits = {"wall_s": 3.0, "memory_mb": 256}
    for family in FAMILIES:  # the reference solution of every family passes its own tests in the sandbox
        ex = make_example(family, family.params()[-1], limits)
        assert len(ex.meta["inputs"]) == len(ex.meta["expected"]) == 6
        assert verify(f"Here it is:\n```python\n{ex.answer}```", ex, "lenient").correct, ex.id
    wrong = verify(f"```python\ndef {ex.meta['function']}(*args):\n    return None\n```", ex, "lenient")
    assert not wrong.correct and wrong.reason.startswith("tests failed (")
    assert len(make("code").eval_examples()) == 100


def test_code_task_known_problem():
    from grpolab.tasks.code import FAMILIES, make_example

    ex = make_example(FAMILIES[0], {"k": 3}, {"wall_s": 2.0, "memory_mb": 256})
    assert ex.id == "sum_divisible:k=3"
    assert ex.meta["inputs"][0] == [[]] and ex.meta["expected"][0] == 0
    for args, out in zip(ex.meta["inputs"], ex.meta["expected"]):
        assert out == sum(x for x in args[0] if x % 3 == 0)
    assert ex.prompt.startswith("Write a Python function `sum_divisible(xs)` that returns the sum of the integers in "
                                "the list xs that are divisible by 3")


@pytest.mark.parametrize("name,kw,needle", [
    ("multiply", {"data_path": "x.jsonl"}, "task 'multiply' generates its problems, so --data-path does not apply"),
    ("sort", {"prompt_field": "q", "answer_field": "a"}, "so --prompt-field, --answer-field does not apply"),
    ("countdown", {"eval_path": "held.jsonl"}, "task 'countdown' generates its problems, so --eval-path"),
    ("code", {"level": 2}, "task 'code' has no difficulty levels (--level 2)"),
])
def test_flags_that_do_not_apply_are_refused(name, kw, needle):
    with pytest.raises(UserError) as err:
        make(name, **kw)
    assert needle in str(err.value)


def test_hf_eval_split_needs_hf_dataset():
    with pytest.raises(UserError, match="--hf-eval-split test needs --hf-dataset"):
        Config.from_flat(task="gsm8k", data_path="x.jsonl", hf_eval_split="test")
