import pytest

from grpolab.config import Config
from grpolab.errors import UserError
from grpolab.tasks import build_task
from grpolab.tasks.arithmetic import ArithmeticTask, _evaluate


def test_precedence_without_eval():
    assert _evaluate([2, 3, 4], ["+", "*"]) == 14
    assert _evaluate([2, 3, 4], ["*", "-"]) == 2
    assert _evaluate([10, 3, 4], ["-", "-"]) == 3


def test_deterministic_and_disjoint():
    a = ArithmeticTask(digits=2, eval_size=50, seed=1)
    b = ArithmeticTask(digits=2, eval_size=50, seed=1)
    assert [e.id for e in a.eval_examples()] == [e.id for e in b.eval_examples()]
    assert [a.train_example(i).id for i in range(20)] == [b.train_example(i).id for i in range(20)]
    held = {e.id for e in a.eval_examples()}
    assert len(held) == 50
    assert not held & {a.train_example(i).id for i in range(2000)}


def test_seed_changes_training_order_not_the_held_out_split():
    a, b = ArithmeticTask(digits=2, seed=1), ArithmeticTask(digits=2, seed=2)
    assert [e.id for e in a.eval_examples()] == [e.id for e in b.eval_examples()]
    assert [a.train_example(i).id for i in range(10)] != [b.train_example(i).id for i in range(10)]


def test_one_digit_addition_space_and_answers():
    t = ArithmeticTask(digits=1, eval_size=40)
    assert t.space_size == 100
    for i in range(50):
        ex = t.train_example(i)
        assert int(ex.answer) == sum(ex.meta["operands"])
        assert 0 <= min(ex.meta["operands"]) and max(ex.meta["operands"]) <= 9


def test_held_out_split_too_large_for_the_space():
    with pytest.raises(UserError, match="only 100 distinct problems"):
        ArithmeticTask(digits=1, eval_size=60)


def test_bad_operator():
    with pytest.raises(UserError, match="--operators '\\+/'"):
        ArithmeticTask(operators="+/")


def test_unknown_task_name():
    cfg = Config.from_flat(task="arithmetc")
    with pytest.raises(UserError, match="Did you mean 'arithmetic'"):
        build_task(cfg.task, 0)
