"""Data tasks: loaders (JSONL/JSON/CSV/Parquet/HF), formats (GSM8K, MATH, Countdown, mapped fields), bad rows,
the seeded held-out split and the per-epoch data order."""

import json
import sys
import types
from pathlib import Path

import pytest

from grpolab.config import Config
from grpolab.errors import UserError
from grpolab.rewards import get_verifier
from grpolab.tasks import Example, build_task
from grpolab.tasks.dataset import split_examples
from grpolab.tasks.loaders import read_rows

FIX = Path(__file__).parent / "fixtures"


def task(**kw):
    return build_task(Config.from_flat(**kw).task, kw.pop("seed", 0))


def write_jsonl(path, rows):
    path.write_bytes(b"\n".join(r if isinstance(r, bytes) else json.dumps(r).encode() for r in rows) + b"\n")
    return path


def test_gsm8k_fixture_answers_and_gold_self_consistency():
    t = task(task="gsm8k", data_path=str(FIX / "gsm8k_sample.jsonl"), eval_size=4)
    rows = t.train + list(t.held_out)
    assert (len(t.train), len(t.held_out), t.verifier) == (12, 4, "numeric")
    assert sorted(ex.answer for ex in rows) == sorted(
        ["72", "10", "5", "42", "624", "35", "48", "16", "41", "990", "121", "5", "1080", "850000", "-7", "-47"])
    verify = get_verifier(t.verifier)
    for ex in rows:  # the worked solution itself, and the tagged final answer with its original commas
        solution = ex.meta["row"]["answer"]
        assert verify(solution, ex, "lenient").correct, ex.id
        assert verify(f"<answer>{solution.rsplit('####', 1)[1].strip()}</answer>", ex, "strict").correct, ex.id
    assert t.reports[0].line() == f"'{FIX / 'gsm8k_sample.jsonl'}': 16 rows, 16 loaded, 0 bad (skipped)"


def test_math_fixture_answers_levels_and_gold_self_consistency():
    t = task(task="math", data_path=str(FIX / "math_sample.jsonl"), eval_size=2)
    rows = sorted(t.train + list(t.held_out), key=lambda e: int(e.id.split(":")[1]))
    assert [ex.answer for ex in rows] == [
        r"\frac{3}{4}", "4", "3, -3", r"2\sqrt{2}", r"(2, \infty)", r"\{-1, 0, 1\}", r"\frac{1}{3}", r"120^\circ",
        r"\begin{pmatrix} 4 \\ 6 \end{pmatrix}", "x^2+2x+1"]
    assert [ex.meta["level"] for ex in rows] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    verify = get_verifier("math")
    for ex in rows:
        assert verify(f"so \\boxed{{{ex.answer}}}", ex, "lenient").correct, ex.id
        if "solution" in ex.meta["row"]:
            assert verify(ex.meta["row"]["solution"], ex, "lenient").correct, ex.id
    level3 = task(task="math", data_path=str(FIX / "math_sample.jsonl"), level=3, eval_size=1)
    assert sorted(e.answer for e in level3.train + list(level3.held_out)) == [r"(2, \infty)", r"\{-1, 0, 1\}"]
    assert level3.reports[0].level_filtered == 8


def test_countdown_file_both_styles():
    t = task(task="countdown", data_path=str(FIX / "countdown_sample.jsonl"), eval_size=1)
    rows = sorted(t.train + list(t.held_out), key=lambda e: int(e.id.split(":")[1]))
    assert [(ex.meta["nums"], ex.meta["target"]) for ex in rows] == [
        ([4, 6, 1], 24), ([44, 19, 35], 98), ([2, 3, 4], 10), ([3, 5, 7], 22), ([25, 4, 9], 64), ([2, 8, 5], 21)]
    assert [ex.meta["solution"] for ex in rows][3:] == ["", "(25 - 9) * 4", "2 * 8 + 5"]
    verify = get_verifier("countdown")
    assert verify("<answer>(25 - 9) * 4</answer>", rows[4], "strict").correct
    assert verify("<answer>4 * 6 * 1</answer>", rows[0], "strict").correct


def test_mapped_fields_json_and_csv(tmp_path):
    data = [{"q": f"What is {i} + {i}?", "a": 2 * i} for i in range(10)]
    (tmp_path / "d.json").write_text(json.dumps({"data": data}))
    (tmp_path / "d.csv").write_text("q,a\n" + "".join(f"\"What is {i} + {i}?\",{2 * i}\n" for i in range(10)))
    for name in ("d.json", "d.csv"):
        t = task(task="file", data_path=str(tmp_path / name), prompt_field="q", answer_field="a", eval_size=3)
        got = sorted((ex.prompt, ex.answer) for ex in t.train + list(t.held_out))
        assert got == sorted((f"What is {i} + {i}?", str(2 * i)) for i in range(10)), name
        assert t.verifier == "math"
    assert task(task="file", data_path=str(tmp_path / "d.json"), prompt_field="q", answer_field="a", eval_size=3,
                verifier="numeric").verifier == "numeric"


BAD_ROWS = [
    ({"question": "q1", "answer": "#### 1"}, None),
    ({"answer": "#### 2"}, "line 2: field 'question' is missing (the row has: answer)"),
    ({"question": "q3", "answer": ["#### 3"]}, "line 3: field 'answer' is a list, expected text or a number"),
    ({"question": "   ", "answer": "#### 4"}, "line 4: field 'question' is empty"),
    (b'{"question": "q5\xff", "answer": "#### 5"}', "line 5: not valid UTF-8 (byte 0xff at column 17)"),
    (b'{"question": "q6", "answer": ', "line 6: not valid JSON (Expecting value at column 30)"),
    ([1, 2], "line 7: a JSON list, not an object with fields"),
    ({"question": "q8", "answer": "#### eight"}, "line 8: field 'answer' has no number after '####': 'eight'"),
    ({"question": "q9", "answer": "#### 9"}, None),
]


@pytest.mark.parametrize("index", [i for i, (_, err) in enumerate(BAD_ROWS) if err])
def test_each_bad_row_stops_with_file_line_and_field(tmp_path, index):
    rows = [BAD_ROWS[0][0], BAD_ROWS[index][0], BAD_ROWS[-1][0]]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    expected = BAD_ROWS[index][1].replace(f"line {index + 1}", "line 2")
    with pytest.raises(UserError) as err:
        task(task="gsm8k", data_path=str(path), eval_size=1)
    assert str(err.value).startswith(f"'{path}', {expected}. Fix:") and "--skip-bad-rows" in str(err.value)


def test_skip_bad_rows_counts_them(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [r for r, _ in BAD_ROWS])
    t = task(task="gsm8k", data_path=str(path), eval_size=1, skip_bad_rows=True)
    assert sorted(ex.answer for ex in t.train + list(t.held_out)) == ["1", "9"]
    report = t.reports[0]
    assert (report.rows, report.bad_rows) == (9, 7)
    assert report.bad_examples[0] == f"'{path}', line 2: field 'question' is missing (the row has: answer)"
    assert len(report.bad_examples) == 5


def test_csv_bad_rows(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"prompt,answer\nok,1\ntoo,many,fields\n\xfe,3\nempty,\nfine,2\n")
    with pytest.raises(UserError, match="line 3: 3 fields but the header names 2"):
        task(task="file", data_path=str(path), eval_size=1)
    t = task(task="file", data_path=str(path), eval_size=1, skip_bad_rows=True, eval_fraction=0.0)
    assert t.reports[0].bad_examples == [f"'{path}', line 3: 3 fields but the header names 2",
                                         f"'{path}', line 4: field 'prompt' is not valid UTF-8 (byte 0xfe at column 1)",
                                         f"'{path}', line 5: field 'answer' is empty"]


@pytest.mark.parametrize("name,content,needle", [
    ("d.txt", "x", "has suffix '.txt'; allowed: .jsonl, .ndjson, .json, .csv, .parquet"),
    ("d.json", "{\"a\": 1}", "without a list of rows"),
    ("d.json", "[1,", "is not valid JSON"),
    ("empty.jsonl", "\n\n", "gave no usable rows (0 read, 0 bad)"),
])
def test_file_level_errors(tmp_path, name, content, needle):
    (tmp_path / name).write_text(content)
    with pytest.raises(UserError, match=needle.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        task(task="file", data_path=str(tmp_path / name))


def test_missing_file_and_missing_data_path():
    with pytest.raises(UserError, match="does not exist"):
        task(task="gsm8k", data_path="/nonexistent/train.jsonl")
    with pytest.raises(UserError, match="task 'gsm8k' reads data: give --data-path FILE"):
        task(task="gsm8k")


def test_parquet_without_pyarrow_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    (tmp_path / "d.parquet").write_bytes(b"PAR1")
    needle = r"needs pyarrow, which is not installed. Fix: pip install 'grpolab\[datasets\]'"
    with pytest.raises(UserError, match=needle):
        list(read_rows(tmp_path / "d.parquet"))


def test_hf_dataset_missing_package_failure_and_fake(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(UserError, match="--hf-dataset openai/gsm8k:main needs the optional 'datasets' package"):
        task(task="gsm8k", hf_dataset="openai/gsm8k:main")
    calls = []

    def load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        if name == "down/hub":
            raise ConnectionError("hub unreachable\nmore")
        start = 0 if split == "train" else 100
        return [{"question": f"q{i}", "answer": f"work\n#### {i}"} for i in range(start, start + 6)]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    t = task(task="gsm8k", hf_dataset="openai/gsm8k:main", hf_eval_split="test")
    assert calls == [("openai/gsm8k", "main", "train"), ("openai/gsm8k", "main", "test")]
    assert sorted(ex.answer for ex in t.train) == ["0", "1", "2", "3", "4", "5"]
    assert sorted(ex.answer for ex in t.held_out) == ["100", "101", "102", "103", "104", "105"]
    assert t.train[0].id.startswith("train:") and t.held_out[0].id.startswith("test:")
    with pytest.raises(UserError, match="could not load Hugging Face dataset 'down/hub' split 'train': "
                                        "ConnectionError: hub unreachable. Fix:"):
        task(task="gsm8k", hf_dataset="down/hub")


def test_eval_path_removes_overlapping_prompts(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"prompt": f"p{i}", "answer": str(i)} for i in range(8)])
    held = write_jsonl(tmp_path / "held.jsonl", [{"prompt": "p1", "answer": "1"}, {"prompt": "other", "answer": "0"}])
    t = task(task="file", data_path=str(train), eval_path=str(held))
    assert sorted(ex.prompt for ex in t.held_out) == ["other", "p1"]
    assert sorted(ex.prompt for ex in t.train) == ["p0", "p2", "p3", "p4", "p5", "p6", "p7"]
    same = write_jsonl(tmp_path / "same.jsonl", [{"prompt": f"p{i}", "answer": str(i)} for i in range(8)])
    with pytest.raises(UserError, match="every training row also appears in the held-out data"):
        task(task="file", data_path=str(train), eval_path=str(same))


def _examples(prompts):
    return [Example(f"e{i}", p, "1") for i, p in enumerate(prompts)]


def test_split_is_seeded_disjoint_and_keeps_duplicates_together():
    exs = _examples([f"p{i % 30}" for i in range(40)])  # p0..p9 appear twice
    train, held = split_examples(exs, 5, 0.0, data_seed=1)
    assert len(held) == 5 and len({e.prompt for e in held}) == 5
    assert not {e.prompt for e in held} & {e.prompt for e in train}
    assert len(train) + sum(2 if int(e.prompt[1:]) < 10 else 1 for e in held) == 40
    assert [e.id for e in split_examples(exs, 5, 0.0, 1)[1]] == [e.id for e in held]
    assert [e.id for e in split_examples(exs, 5, 0.0, 2)[1]] != [e.id for e in held]
    assert len(split_examples(exs, 5, 0.1, 1)[1]) == 3  # 10% of 30 distinct prompts
    with pytest.raises(UserError, match="--eval-size 30 holds out 30 of 30 distinct prompts"):
        split_examples(exs, 30, 0.0, 1)


def test_data_order_is_a_seeded_permutation_per_epoch_and_resumes_by_index(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"p{i}", "answer": str(i)} for i in range(12)])
    a = task(task="file", data_path=str(path), eval_size=2)
    n = len(a.train)
    first, second = [a.train_example(i).id for i in range(n)], [a.train_example(n + i).id for i in range(n)]
    assert sorted(first) == sorted(second) == sorted(e.id for e in a.train)
    assert first != second
    fresh = task(task="file", data_path=str(path), eval_size=2)  # a resumed run: only the cursor is known
    assert [fresh.train_example(i).id for i in (n + 3, 2, 5 * n + 1)] == [second[3], first[2],
                                                                          a.train_example(5 * n + 1).id]
    other_seed = build_task(Config.from_flat(task="file", data_path=str(path), eval_size=2).task, 7)
    assert [other_seed.train_example(i).id for i in range(n)] != first
    assert [e.id for e in other_seed.eval_examples()] == [e.id for e in a.eval_examples()]


def test_level_filter_errors(tmp_path):
    with pytest.raises(UserError, match="--level 9: no row of .* has that level; present: \\[1, 2, 3, 4, 5\\]"):
        task(task="math", data_path=str(FIX / "math_sample.jsonl"), level=9)
    with pytest.raises(UserError, match="--level 2 filters rows by their 'level' field, but .* has none"):
        task(task="gsm8k", data_path=str(FIX / "gsm8k_sample.jsonl"), level=2)


def test_training_reports_the_rows_it_skipped(tiny_cfg, tmp_path, capsys):
    from grpolab.trainer import train

    rows = [{"prompt": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(6)] + [{"prompt": "no answer"}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    cfg = tiny_cfg(task="file", data_path=str(path), skip_bad_rows=True, eval_size=2, steps=1, max_new_tokens=4,
                   export=False, quiet=False)
    train(cfg)
    squeeze = lambda text: "".join(text.split())  # noqa: E731 - the console wraps long lines
    assert squeeze(f"'{path}': 7 rows, 6 loaded, 1 bad (skipped)") in squeeze(capsys.readouterr().out)
