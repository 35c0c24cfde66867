"""The difficulty curriculum: start level from the base pass rate, promotion rule, held-out safety, resume."""

import pytest

from grpolab.config import Config
from grpolab.curriculum import Curriculum, choose_start, curriculum_levels
from grpolab.errors import UserError
from grpolab.report.jsonl import read_jsonl
from grpolab.tasks import build_task
from grpolab.trainer import train


def _task_cfg(**kw):
    return Config.from_flat(task="arithmetic", **kw).task


def test_levels_run_from_the_easiest_to_the_configured_one():
    assert curriculum_levels(_task_cfg(digits=3)) == ("digits", [1, 2, 3])
    assert curriculum_levels(_task_cfg(digits=1)) == ("digits", [1])
    with pytest.raises(UserError, match="--digits 7 is not a level of task 'arithmetic'"):
        curriculum_levels(_task_cfg(digits=7))
    with pytest.raises(UserError, match="needs a task with difficulty levels"):
        curriculum_levels(Config.from_flat(task="code").task)


def test_training_problems_come_from_the_current_level_and_evaluation_from_the_target():
    cur = Curriculum(_task_cfg(digits=2, eval_size=20), seed=0, start=1, promote=0.5, window=4)
    ex = cur.train_example(0)
    assert ex.meta["level"] == 1 and ex == build_task(_task_cfg(digits=1, eval_size=1), 0).train_example(0)
    assert list(cur.eval_examples()) == list(build_task(_task_cfg(digits=2, eval_size=20), 0).eval_examples())
    assert cur.verifier == "numeric"


def test_promotion_needs_a_full_window_at_the_threshold_and_stops_at_the_target():
    cur = Curriculum(_task_cfg(digits=3), seed=0, start=1, promote=0.8, window=4)
    assert cur.observe([1.0, 1.0, 1.0]) is None and cur.level == 1  # window not full yet
    assert cur.observe([0.0]) is None  # [1,1,1,0]: 0.75, below 0.8
    for _ in range(3):  # [1,1,0,1], [1,0,1,1], [0,1,1,1]
        assert cur.observe([1.0]) is None and cur.level == 1
    assert cur.observe([1.0]) == 2 and cur.level == 2  # [1,1,1,1]


def test_promotion_at_the_threshold():
    cur = Curriculum(_task_cfg(digits=3), seed=0, start=1, promote=0.75, window=4)
    assert cur.observe([1.0, 1.0, 0.5, 0.5]) == 2 and cur.level == 2 and list(cur.recent) == []
    assert cur.observe([0.5, 1.0, 1.0]) is None
    assert cur.observe([1.0]) == 3  # mean 0.875 over the last four
    assert cur.observe([1.0] * 8) is None and cur.level == 3  # the target: no further


def test_state_round_trips():
    cur = Curriculum(_task_cfg(digits=3), seed=0, start=2, promote=0.9, window=3)
    cur.observe([0.5, 0.25])
    other = Curriculum(_task_cfg(digits=3), seed=0, start=1, promote=0.9, window=3)
    other.load_state_dict(cur.state_dict())
    assert (other.level, list(other.recent)) == (2, [0.5, 0.25])
    with pytest.raises(UserError, match="--curriculum-start 4 is not among the levels"):
        Curriculum(_task_cfg(digits=3), seed=0, start=4, promote=0.9, window=3)


def test_lower_levels_never_serve_a_held_out_prompt():
    cur = Curriculum(_task_cfg(digits=2), seed=0, start=1, promote=0.9, window=3)
    first = cur.train_example(0)
    cur._held_out.add(first.prompt)  # as if the lower level's first problem were held out at the target
    replaced = cur.train_example(0)
    assert replaced.prompt != first.prompt and replaced.prompt not in cur._held_out
    assert cur.train_example(0) == replaced  # deterministic


@pytest.mark.parametrize("rates,start,measured", [
    ({3: 0.05, 2: 0.4, 1: 0.9}, 2, [3, 2]),  # hardest level with signal; level 1 never measured
    ({3: 0.2}, 3, [3]),
    ({3: 0.0, 2: 0.0, 1: 0.1}, 1, [3, 2, 1]),  # none reaches the bar: the easiest
])
def test_start_is_the_hardest_level_with_signal(rates, start, measured):
    cur = Curriculum(_task_cfg(digits=3), seed=0, start=0, promote=0.9, window=3)
    level, got = choose_start(cur, lambda lv: rates[lv], 0.15)
    assert level == start and list(got) == measured


def test_bad_curriculum_settings_are_refused():
    with pytest.raises(UserError, match="--curriculum-promote 1.5 must be in"):
        Config.from_flat(curriculum=True, curriculum_promote=1.5)
    with pytest.raises(UserError, match="--curriculum-window 0"):
        Config.from_flat(curriculum=True, curriculum_window=0)


def test_training_with_a_curriculum_promotes_logs_and_resumes(tiny_cfg):
    kw = dict(task="arithmetic", digits=2, curriculum=True, curriculum_problems=2, curriculum_min_pass=1.0,
              curriculum_promote=0.01, curriculum_window=2, export=False, checkpoint_every=1)
    result = train(tiny_cfg(run_name="cur", steps=2, **kw))
    records = [r for r in read_jsonl(result.run_dir / "metrics.jsonl") if "reward" in r]
    # min-pass 1.0 is never reached by the random model: start at the easiest; the vowel reward is > 0, so the
    # window of two groups (one step) promotes to the target
    assert [r["curriculum_level"] for r in records] == [1.0, 2.0]
    straight = train(tiny_cfg(run_name="cur-straight", steps=3, **kw))
    resumed = train(None, resume=result.run_dir, overrides={"steps": 3})
    a = [r for r in read_jsonl(straight.run_dir / "metrics.jsonl") if "reward" in r]
    b = [r for r in read_jsonl(resumed.run_dir / "metrics.jsonl") if "reward" in r]
    strip = ("step_seconds", "update_seconds", "sync_seconds", "train_seconds", "gen_seconds", "gen_tokens_per_s", "tokens_per_s")
    assert [{k: v for k, v in r.items() if k not in strip} for r in a] == \
        [{k: v for k, v in r.items() if k not in strip} for r in b]
