import subprocess
import sys

import pytest

from grpolab.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "grpolab", *args], capture_output=True, text=True)


def test_help_lists_commands_and_flags():
    out = run_cli("--help")
    assert out.returncode == 0 and "train" in out.stdout and "demo" in out.stdout
    out = run_cli("train", "--help")
    assert out.returncode == 0
    for flag in ("--group-size", "--recipe", "--lora-rank", "--max-new-tokens", "--resume", "--config"):
        assert flag in out.stdout


@pytest.mark.parametrize("args,needle", [
    (["--group-size", "1"], "--group-size 1 is too small"),
    (["--max-new-tokens", "0"], "--max-new-tokens 0"),
    (["--recipe", "ppo"], "unknown recipe 'ppo'"),
    (["--task", "chess"], "unknown task 'chess'"),
    (["--model", "no-such-model"], "unknown model 'no-such-model'"),
    (["--out-dir", "/proc/grpolab-cannot-write-here"], "cannot write the run directory"),
])
def test_user_errors_are_one_line_with_exit_code_2(args, needle, tmp_path):
    out = run_cli("train", "--quiet", "--out-dir", str(tmp_path), *args)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("grpolab: error:") and needle in lines[0], out.stderr
    assert "Traceback" not in out.stderr


def test_recipes_lists_every_recipe(capsys):
    from grpolab.recipes import RECIPES

    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    for name in RECIPES:
        assert name in out


def test_train_then_eval_through_the_cli(tiny_model_dir, tmp_path, capsys):
    from grpolab.rewards import reward_term_names

    assert "test_vowels" in reward_term_names()
    code = main(["train", "--model", str(tiny_model_dir), "--rewards", "test_vowels", "--steps", "1", "--group-size",
                 "2", "--max-new-tokens", "6", "--eval-size", "4", "--out-dir", str(tmp_path), "--run-name", "cli",
                 "--quiet"])
    assert code == 0
    assert (tmp_path / "cli" / "final" / "config.json").is_file()
    code = main(["eval", "--model", str(tmp_path / "cli" / "final"), "--eval-size", "4", "--max-new-tokens", "6"])
    assert code == 0
    assert "held-out accuracy" in capsys.readouterr().out


def test_resume_refuses_changed_settings(tmp_path):
    code = main(["train", "--resume", str(tmp_path), "--lr", "1"])
    assert code == 2
