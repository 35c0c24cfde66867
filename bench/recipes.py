"""Every named recipe on the same task, seed and step budget: reward and held-out accuracy vs step.

    python bench/recipes.py                              # all recipes, two-digit addition, 120 steps each
    python bench/recipes.py --recipes grpo,dapo --steps 40
    python bench/recipes.py --report-only

Settings shared by all recipes: SmolLM2-135M-Instruct, full fine-tune, G=8, one prompt per step, 64 new
tokens, lr 1e-5, temperature 1, fp16 rollouts, held-out accuracy (greedy, 100 problems) every 30 steps.
Everything else (advantages, aggregation, clipping, KL, filtering, ...) is what the recipe says.
Writes bench/results/recipes/<recipe>.json, recipes.png and docs/recipes.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, ROOT, SYSTEM_PROMPT, TASKS, machine, peak_rss_gb, run_worker, write_json  # noqa: E402

OUT = RESULTS / "recipes"


def worker(a: argparse.Namespace) -> dict:
    from grpolab.config import Config
    from grpolab.report.jsonl import read_jsonl
    from grpolab.trainer import train

    with tempfile.TemporaryDirectory() as tmp:
        cfg = Config.from_flat(**TASKS[a.task], system_prompt=SYSTEM_PROMPT, recipe=a.recipe, group_size=8,
                               max_new_tokens=64, lr=1e-5, steps=a.steps, eval_every=a.eval_every, seed=a.seed,
                               rollout_quant="fp16", out_dir=tmp, quiet=True, export=False, checkpoint_every=0,
                               log_rollouts=False)
        t0 = time.time()
        result = train(cfg)
        wall = time.time() - t0
        records = read_jsonl(result.run_dir / "metrics.jsonl")
    steps = [r for r in records if "reward" in r]
    evals = [r for r in records if "eval_accuracy" in r]
    return {"recipe": a.recipe, "task": a.task, "seed": a.seed, "knobs": cfg.to_dict()["algo"],
            "steps": [{k: r.get(k) for k in ("step", "reward", "completion_length", "zero_variance_frac",
                                             "rows_trained", "clip_fraction", "kl", "entropy", "grad_norm",
                                             "groups_filtered", "groups_resampled", "train_seconds")} for r in steps],
            "evals": [{k: r[k] for k in ("step", "eval_accuracy", "eval_accuracy_strict", "eval_length",
                                         "train_seconds")} for r in evals],
            "wall_seconds": wall, "train_seconds": result.train_seconds, "peak_rss_gb": peak_rss_gb()}


def report(out_dir: Path) -> str:
    runs = [json.loads(p.read_text()) for p in sorted(out_dir.glob("*.json"))]
    if not runs:
        return "no runs"
    lines = ["| recipe | base | " + " | ".join(f"step {e['step']}" for e in runs[0]["evals"][1:]) +
             " | best | final reward (last 20 steps) | mean length (last 20) | train min | s/step |",
             "|---|---|" + "---|" * (len(runs[0]["evals"]) - 1) + "---|---|---|---|---|"]
    for r in runs:
        ev = r["evals"]
        tail = r["steps"][-20:]
        reward = sum(s["reward"] for s in tail) / len(tail)
        length = sum(s["completion_length"] for s in tail) / len(tail)
        lines.append(f"| `{r['recipe']}` | {100 * ev[0]['eval_accuracy']:.0f}% | " +
                     " | ".join(f"{100 * e['eval_accuracy']:.0f}%" for e in ev[1:]) +
                     f" | {100 * max(e['eval_accuracy'] for e in ev):.0f}% | {reward:.2f} | {length:.0f} | "
                     f"{r['train_seconds'] / 60:.1f} | {r['train_seconds'] / len(r['steps']):.1f} |")
    table = "\n".join(lines)
    _plot(runs, out_dir / "recipes.png")
    return table


def _plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for r in runs:
        steps = r["steps"]
        window = 10
        smooth = [sum(s["reward"] for s in steps[max(0, i - window + 1):i + 1]) / len(steps[max(0, i - window + 1):i + 1])
                  for i in range(len(steps))]
        ax[0].plot([s["step"] for s in steps], smooth, label=r["recipe"])
        ax[1].plot([e["step"] for e in r["evals"]], [100 * e["eval_accuracy"] for e in r["evals"]], marker="o",
                   ms=3, label=r["recipe"])
    ax[0].set_title("training reward (10-step moving mean)")
    ax[1].set_title("held-out accuracy (greedy, %)")
    for a in ax:
        a.set_xlabel("step")
        a.grid(alpha=0.3)
    ax[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    from grpolab.recipes import RECIPES

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", default=",".join(RECIPES))
    p.add_argument("--task", default="add2")
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--eval-every", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--skip-done", action="store_true")
    p.add_argument("--report-only", action="store_true")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    if not a.report_only:
        for recipe in a.recipes.split(","):
            out = a.out / f"{recipe}.json"
            if a.skip_done and out.exists():
                continue
            print(f"{time.strftime('%H:%M:%S')} {recipe} ...", flush=True)
            res = run_worker(Path(__file__), ["--recipe", recipe, "--task", a.task, "--steps", str(a.steps),
                                              "--eval-every", str(a.eval_every), "--seed", str(a.seed)],
                             a.out / "tmp" / out.name)
            res["machine"] = machine()
            write_json(out, res)
            print(f"   best {100 * max(e['eval_accuracy'] for e in res['evals']):.0f}%", flush=True)
    table = report(a.out)
    print(table)
    if a.out == OUT:
        _write_doc(table, a)


def _write_doc(table: str, a: argparse.Namespace) -> None:
    from grpolab.recipes import BASE_KNOBS, RECIPES

    rows = []
    for r in RECIPES.values():
        knobs = ", ".join(f"`{k}={v}`" for k, v in r.expanded().items() if v != BASE_KNOBS[k] or k in r.knobs)
        rows.append(f"| `{r.name}` | {r.source} | {knobs} | {r.notes} |")
    doc = f"""# The recipe book

Each recipe is a name for exact values of the algorithm knobs; `grpolab recipes` prints them and every knob is
also a flag of its own. Every formula has a known-answer test (`tests/test_algo.py`) and every recipe a test
that its expansion matches this table (`tests/test_config.py`).

| recipe | source | knobs (differences from the defaults) | notes |
|---|---|---|---|
{chr(10).join(rows)}

Defaults of every knob: {", ".join(f"`{k}={v}`" for k, v in BASE_KNOBS.items())}.

Choices that differ silently between codebases, made explicit here:
- the group std is Bessel-corrected (ddof=1), as `torch.std` and TRL compute it; a group whose rewards are
  all equal gets advantage exactly 0;
- the clipped surrogate takes the PPO minimum for both signs of the advantage (some scripts take the maximum
  for negative advantages, which removes the pessimistic bound);
- log-probs are computed from logits divided by the sampling temperature;
- `keep_sampling_mask` re-applies the sampler's top-k/top-p kept set when scoring (DeepSeek-V3.2).

## Measured: all recipes on the same task, seed and budget

`python bench/recipes.py --task {a.task} --steps {a.steps} --eval-every {a.eval_every} --seed {a.seed}`
(task `{a.task}`, SmolLM2-135M-Instruct full fine-tune, G=8, 64 new tokens, lr 1e-5, fp16 rollouts,
{a.steps} steps; held-out accuracy is greedy, evaluated every {a.eval_every} steps).

{table}

![reward and held-out accuracy by recipe](../bench/results/recipes/recipes.png)

One seed and {a.steps} steps on a 135M model: differences of a few points are within noise (the held-out split
has 100 problems, so one problem is one point). Read this as "each recipe runs and learns", not as a ranking.
"""
    (ROOT / "docs" / "recipes.md").write_text(doc)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        wp = argparse.ArgumentParser()
        wp.add_argument("worker")
        wp.add_argument("--recipe", required=True)
        wp.add_argument("--task", default="add2")
        wp.add_argument("--steps", type=int, default=120)
        wp.add_argument("--eval-every", type=int, default=30)
        wp.add_argument("--seed", type=int, default=0)
        wp.add_argument("--out", type=Path, required=True)
        wa = wp.parse_args()
        write_json(wa.out, worker(wa))
    else:
        main()
