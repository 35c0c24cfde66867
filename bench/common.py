"""Shared pieces of the benchmarks: identical task, prompt, reward and evaluation for grpolab and TRL.

TRL is a benchmark-only dependency (`pip install -e .[bench]`). Each system runs in its own subprocess, so
peak RSS and timings of one never include the other.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SYSTEM_PROMPT = "Solve the problem. Give the final number at the end."

# Named tasks of the benchmarks: grpolab task settings and the held-out size.
TASKS: dict[str, dict[str, Any]] = {
    "add1": dict(task="arithmetic", digits=1, terms=2, operators="+", eval_size=40),
    "add2": dict(task="arithmetic", digits=2, terms=2, operators="+", eval_size=100),
    "add2x3": dict(task="arithmetic", digits=2, terms=3, operators="+", eval_size=200),
    "add1x3": dict(task="arithmetic", digits=1, terms=3, operators="+", eval_size=200),
    "sub2": dict(task="arithmetic", digits=2, terms=2, operators="-", eval_size=200),
    "mix1x3": dict(task="arithmetic", digits=1, terms=3, operators="+*", eval_size=200),
}


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far, in GB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__}


def build_task(name: str, seed: int):
    from grpolab.config import Config
    from grpolab.tasks import build_task as _build

    cfg = Config.from_flat(**TASKS[name], system_prompt=SYSTEM_PROMPT)
    return _build(cfg.task, seed)


def trl_dataset(task, n: int):
    """The first n training examples of the task (the run's data order) in TRL's conversational format."""
    from datasets import Dataset

    rows = []
    for i in range(n):
        ex = task.train_example(i)
        rows.append({"prompt": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": ex.prompt}],
                     "answer": ex.answer, "example_id": ex.id})
    return Dataset.from_list(rows)


def trl_reward(kind: str = "correct"):
    """A TRL reward function. 'correct': grpolab's own lenient verifier (identical to grpolab's reward).
    'spread': a score with variance inside every group (digits per character), so every row trains."""
    from grpolab.rewards import verify_numeric
    from grpolab.tasks import Example

    def correct(prompts, completions, answer, **kw):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [1.0 if verify_numeric(t, Example("x", "", a), "lenient").correct else 0.0 for t, a in zip(texts, answer)]

    def spread(prompts, completions, **kw):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [spread_score(t) for t in texts]

    fn = correct if kind == "correct" else spread
    fn.__name__ = kind
    return fn


def spread_score(text: str) -> float:
    return sum(ch.isdigit() for ch in text) / max(len(text), 1)


def register_spread_reward() -> None:
    from grpolab.rewards import register_reward_term

    register_reward_term("bench_spread", lambda verifier, mode: (lambda c, e: spread_score(c)))


def run_worker(script: Path, args: list[str], out: Path, timeout: float | None = None) -> dict[str, Any]:
    """Run `script worker ...` in a fresh process and return the JSON it wrote to `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.unlink()
    cmd = [sys.executable, str(script), "worker", *args, "--out", str(out)]
    t0 = time.time()
    proc = subprocess.run(cmd, timeout=timeout, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"worker failed ({proc.returncode}) after {time.time() - t0:.0f}s: {' '.join(cmd)}\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return json.loads(out.read_text())


def write_table(json_path: Path, table: str) -> None:
    """The markdown table beside a result's JSON (same name, .md), and on the console."""
    json_path.with_suffix(".md").write_text(table + "\n")
    print(table)


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)
