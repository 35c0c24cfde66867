"""--reward-fn: TRL-style reward functions from a file or a module, with errors that name function and example."""

from pathlib import Path

import pytest

from grpolab.config import Config
from grpolab.errors import UserError
from grpolab.rewards import build_reward_terms, score, total
from grpolab.rewards.custom import columns, parse_reward_fn_spec
from grpolab.tasks import Example

FIX = Path(__file__).parent / "fixtures" / "trl_rewards.py"
GSM = [Example("g1", "How many?", "72", {"row": {"question": "How many?", "answer": "... #### 72"}, "level": None}),
       Example("g2", "And now?", "5", {"row": {"question": "And now?", "answer": "... #### 5"}, "level": None})]


def terms(fns, spec="", fmt="standard"):
    return build_reward_terms(spec, "numeric", "lenient", ",".join(f"{FIX}:{f}" for f in fns), fmt)


@pytest.mark.parametrize("spec,expected", [
    ("a.py:f", [("a.py", "f", 1.0)]),
    ("a.py:f:0.5, pkg.mod:g", [("a.py", "f", 0.5), ("pkg.mod", "g", 1.0)]),
    ("dir/r.py:f:-1", [("dir/r.py", "f", -1.0)]),
    ("", []),
])
def test_parse_spec(spec, expected):
    assert parse_reward_fn_spec(spec) == expected


@pytest.mark.parametrize("spec,needle", [
    ("a.py", "must be 'file.py:function'"), ("a.py:f:x", "weight 'x' is not a number"), ("a.py:f:inf", "finite"),
    ("a.py:f:1:2", "must be 'file.py:function'"),
])
def test_bad_specs(spec, needle):
    with pytest.raises(UserError, match=needle):
        parse_reward_fn_spec(spec)


def test_trl_functions_score_next_to_builtin_terms():
    ts = terms(["reward_len", "ends_with_answer:0.5"], spec="correct")
    assert [(t.name, t.weight) for t in ts] == [("correct", 1.0), ("reward_len", 1.0), ("ends_with_answer", 0.5)]
    texts = ["so it is 72", "x" * 20]
    s = score(ts, texts, GSM)
    assert s == {"correct": [1.0, 0.0], "reward_len": [-9.0, 0.0], "ends_with_answer": [1.0, 0.0]}
    assert total(ts, s) == [1.0 - 9.0 + 0.5, 0.0]


def test_columns_are_row_fields_plus_the_reference_answer():
    assert columns(GSM) == {"question": ["How many?", "And now?"], "answer": ["72", "5"]}
    cd = Example("c", "p", "24", {"nums": [4, 6, 1], "target": 24, "solution": "4*6*1", "level": 1})
    assert columns([cd]) == {"nums": [[4, 6, 1]], "target": [24], "solution": ["4*6*1"], "level": [1], "answer": ["24"]}


def test_generated_task_columns_reach_the_function():
    ex = [Example("c1", "p", "24", {"nums": [4, 6, 1], "target": 24}),
          Example("c2", "p", "9", {"nums": [9, 1], "target": 9})]
    assert score(terms(["countdown_columns"]), ["a", "b"], ex) == {"countdown_columns": [24.03, 9.02]}


def test_function_without_kwargs_gets_only_named_columns_and_conversational_format():
    assert score(terms(["named_columns_only"]), ["a", "b"], GSM)["named_columns_only"] == [2.0, 1.0]
    conv = terms(["conversational_len"], fmt="conversational")
    assert score(conv, ["abc", "hello"], GSM)["conversational_len"] == [3.0, 5.0]


def test_none_means_no_score():
    assert score(terms(["first_only"]), ["a", "b"], GSM)["first_only"] == [1.0, 0.0]


def test_a_module_path_works(monkeypatch):
    monkeypatch.syspath_prepend(str(FIX.parent))
    ts = build_reward_terms("", "numeric", "lenient", "trl_rewards:format_reward:2")
    assert [(t.name, t.weight) for t in ts] == [("format_reward", 2.0)]
    assert score(ts, ["<think>a</think><answer>1</answer>", "1"], GSM)["format_reward"] == [1.0, 0.0]


@pytest.mark.parametrize("fn,needle", [
    ("raises_on_x",
     r"'raises_on_x' raised ZeroDivisionError: division by zero on example 'g2' \(completion starts 'x'\)"),
    ("returns_nan", r"'returns_nan' returned nan on example 'g2'"),
    ("wrong_length", r"'wrong_length' returned length 1; it must return a list of 2 floats"),
    ("returns_text", r"'returns_text' returned the text '1.0', not a number for example 'g1'"),
    ("needs_difficulty",
     r"'needs_difficulty' needs argument\(s\) difficulty, but the data has columns question, answer"),
])
def test_bad_functions_are_errors_naming_function_and_example(fn, needle):
    with pytest.raises(UserError, match=needle):
        score(terms([fn]), ["fine", "x"], GSM)


@pytest.mark.parametrize("spec,needle", [
    ("missing.py:f", "file 'missing.py' does not exist"),
    (f"{FIX}:nope", "has no function 'nope'; functions there: conversational_len, countdown_columns"),
    ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
])
def test_loading_errors(spec, needle):
    with pytest.raises(UserError, match=needle):
        build_reward_terms("correct", "numeric", "lenient", spec)


def test_duplicate_and_empty():
    with pytest.raises(UserError, match="names a term twice"):
        terms(["reward_len", "reward_len"])
    with pytest.raises(UserError, match="names no reward term"):
        build_reward_terms("", "numeric", "lenient", "")
    with pytest.raises(UserError, match="--rewards is empty and no --reward-fn"):
        Config.from_flat(rewards="")
    cfg = Config.from_flat(rewards="", reward_fn=f"{FIX}:reward_len", reward_fn_format="conversational")
    assert (cfg.reward.reward_fn, cfg.reward.reward_fn_format) == (f"{FIX}:reward_len", "conversational")


def test_training_uses_the_custom_function(tiny_cfg):
    from grpolab.report.jsonl import read_jsonl
    from grpolab.trainer import train

    cfg = tiny_cfg(rewards="", reward_fn=f"{FIX}:reward_len:0.5", steps=1, eval_size=2, max_new_tokens=6,
                   export=False, run_name="custom")
    result = train(cfg)
    steps = [r for r in read_jsonl(result.run_dir / "metrics.jsonl") if "reward" in r]
    rollouts = read_jsonl(result.run_dir / "rollouts.jsonl")
    assert [r["step"] for r in steps] == [1]
    for r in rollouts:
        assert r["rewards"] == {"reward_len": -abs(20 - len(r["completion"]))}
        assert r["reward"] == 0.5 * r["rewards"]["reward_len"]
    assert steps[0]["reward_reward_len"] == sum(r["rewards"]["reward_len"] for r in rollouts) / len(rollouts)
