"""`grpolab calibrate`: Wilson intervals with known answers, verdicts, and a run on the tiny random model."""

import json

import pytest

from grpolab.calibrate import calibrate, score_level, verdict, wilson_interval
from grpolab.cli import main
from grpolab.errors import UserError
from grpolab.rewards import register_verifier
from grpolab.rewards.verify import Verdict
from grpolab.tasks import Example

register_verifier("test_even_length", lambda text, ex, mode: Verdict(len(text) % 2 == 0, "even" if len(text) % 2 == 0
                                                                     else "odd", text))


@pytest.mark.parametrize("k,n,low,high", [
    (5, 10, 0.236593, 0.763407), (0, 10, 0.0, 0.277533), (10, 10, 0.722467, 1.0), (1, 100, 0.001767, 0.054486),
    (0, 0, 0.0, 1.0),
])
def test_wilson_interval_known_values(k, n, low, high):
    lo, hi = wilson_interval(k, n)
    assert (round(lo, 6), round(hi, 6)) == (low, high)


@pytest.mark.parametrize("rate,expected", [(0.0, "too hard"), (0.09, "too hard"), (0.1, "train"), (0.5, "train"),
                                           (0.9, "train"), (0.95, "too easy"), (1.0, "too easy")])
def test_verdict(rate, expected):
    assert verdict(rate, 0.1, 0.9) == expected


def test_score_level_counts():
    exs = [Example("a", "q", "x"), Example("b", "q", "y")]
    texts = ["ab", "a", "ab", "cd"]  # problem a: 1 of 2 correct (mixed); problem b: 2 of 2
    r = score_level(3, exs, texts, "test_even_length", "lenient", 2, 0.1, 0.9)
    assert (r.level, r.problems, r.samples, r.correct, r.pass_rate, r.solved_any, r.mixed, r.verdict) == (
        3, 2, 2, 3, 0.75, 1.0, 0.5, "train")
    assert (r.ci_low, r.ci_high) == wilson_interval(3, 4)
    assert [rec["correct"] for rec in r.records] == [True, False, True, True]


def test_calibrate_on_the_tiny_model(tiny_cfg):
    cfg = tiny_cfg(task="multiply", verifier="test_even_length", max_new_tokens=5, eval_size=10)
    seen = []
    result = calibrate(cfg, levels=[1, 2], problems=3, samples=3, on_level=seen.append)
    assert [r.level for r in result.levels] == [1, 2] and seen == result.levels
    for r in result.levels:
        assert (r.problems, r.samples, len(r.records)) == (3, 3, 9)
        assert r.correct == sum(len(rec["completion"]) % 2 == 0 for rec in r.records)
        assert r.pass_rate == r.correct / 9 and (r.ci_low, r.ci_high) == wilson_interval(r.correct, 9)
        assert r.verdict == verdict(r.pass_rate, 0.1, 0.9)
    assert result.recommended == [r.level for r in result.levels if r.verdict == "train"]
    factors = [rec["id"].split("*") for rec in result.levels[1].records]
    assert all(len(a) == 2 and len(b) == 2 for a, b in factors)  # level 2 multiplies two-digit numbers
    again = calibrate(cfg, levels=[1, 2], problems=3, samples=3)
    assert [rec["completion"] for r in again.levels for rec in r.records] == [
        rec["completion"] for r in result.levels for rec in r.records]  # seeded: the same completions


def test_calibrate_errors(tiny_cfg):
    with pytest.raises(UserError, match="task 'gsm8k' has no difficulty levels"):
        calibrate(tiny_cfg(task="gsm8k"), levels=[1])
    with pytest.raises(UserError, match="--target-low 0.9 and --target-high 0.1"):
        calibrate(tiny_cfg(), low=0.9, high=0.1)


def test_calibrate_cli(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "cal.json"
    code = main(["calibrate", "--model", str(tiny_model_dir), "--task", "multiply", "--levels", "1,2",
                 "--problems", "2",
                 "--samples", "2", "--max-new-tokens", "4", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "task multiply" in text and "level  pass rate" in text
    data = json.loads(out.read_text())
    assert [lv["level"] for lv in data["levels"]] == [1, 2] and data["target"] == [0.1, 0.9]
    assert [lv["correct"] for lv in data["levels"]] == [0, 0]  # a random model multiplies nothing right
    assert data["recommended"] == [] and "no level has a pass rate in [0.1, 0.9]" in text
    assert main(["calibrate", "--levels", "one"]) == 2
