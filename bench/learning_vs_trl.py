"""Time to accuracy: grpolab and TRL's GRPOTrainer learning the same task side by side, held-out accuracy vs
training wall time.

Identical settings: SmolLM2-135M-Instruct fp32, full fine-tune, G=8, one prompt per step, 64 new tokens,
lr 1e-5 (constant; --lr changes it for both; `--schedule cosine` decays it for both over the training clock, to
`--min-lr-ratio` of the peak at the end of the budget), no KL, temperature 1, TRL's default loss (token mean, group-std advantages), AdamW
(0.9, 0.999), grad clip 1, the same system prompt, the same data order and the same reward (grpolab's
lenient verifier: the <answer> tags, else the last number). Both are evaluated by the same code
(grpolab.evaluate: greedy, eval mode, the fast decoder, which is token-identical to `generate`) on the same
held-out problems every `--eval-every` minutes of training time, the clock paused while evaluating.

    python bench/learning_vs_trl.py --tasks add1,add2 --seeds 0,1 --minutes 25
    python bench/learning_vs_trl.py --report-only      # rebuild the table and plot from saved runs
    python bench/learning_vs_trl.py --tasks add1 --minutes 5 --eval-every 0.5 --schedule cosine --out bench/results/x

One folder holds runs of one schedule: the table compares each run with the TRL run of its folder.

Writes bench/results/learning/<task>-seed<k>-<system>.json, learning.md and learning.png.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (RESULTS, SYSTEM_PROMPT, TASKS, build_task, machine, peak_rss_gb, run_worker,  # noqa: E402
                    trl_dataset, trl_reward, write_json)

OUT = RESULTS / "learning"
LR, G, T = 1e-5, 8, 64


def _evaluator(task, tokenizer):
    """The one evaluation both systems use: greedy held-out accuracy with grpolab's verifier."""
    from grpolab.evaluate import evaluate
    from grpolab.models import eos_token_ids
    from grpolab.rollout import build_engine

    def run(model) -> dict[str, float]:
        engine = build_engine("auto", model, eos_token_ids(model, tokenizer), tokenizer.pad_token_id)
        r = evaluate(model, engine, tokenizer, task.eval_examples(), SYSTEM_PROMPT, task.verifier, T, 64)
        return {"accuracy": r.accuracy, "accuracy_strict": r.accuracy_strict, "length": r.mean_length}

    return run


def worker_trl(a: argparse.Namespace) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from grpolab.models import embedded_model_dir, quiet_transformers

    quiet_transformers()
    path = embedded_model_dir()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(path)
    task = build_task(a.task, a.seed)
    evaluate = _evaluator(task, tok)
    curve = [{"train_seconds": 0.0, "step": 0, **evaluate(model)}]
    clock = {"train": 0.0, "since": time.perf_counter(), "next": a.eval_every * 60}

    def lr_factor(_step: int) -> float:
        """The learning-rate multiplier after the step now ending, from the training clock at this moment: the
        same rule as grpolab's time-budgeted schedule (`trainer.LRFactor`, progress = training time / budget)."""
        if a.schedule == "constant":
            return 1.0
        p = min(1.0, (clock["train"] + time.perf_counter() - clock["since"]) / (a.minutes * 60))
        return a.min_lr_ratio + (1.0 - a.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))

    class Race(TrainerCallback):
        def on_train_begin(self, args, state, control, lr_scheduler=None, **kw):
            # the constant LambdaLR TRL built steps after every optimizer step: its multiplier now reads the clock
            lr_scheduler.lr_lambdas = [lr_factor for _ in lr_scheduler.lr_lambdas]

        def on_step_end(self, args, state, control, **kw):
            now = time.perf_counter()
            clock["train"] += now - clock["since"]
            if clock["train"] >= clock["next"] or clock["train"] >= a.minutes * 60:
                clock["next"] = (clock["train"] // (a.eval_every * 60) + 1) * a.eval_every * 60
                lr = kw["optimizer"].param_groups[0]["lr"] if kw.get("optimizer") is not None else None
                curve.append({"train_seconds": clock["train"], "step": state.global_step, "lr": lr, **evaluate(model)})
            if clock["train"] >= a.minutes * 60:
                control.should_training_stop = True
            clock["since"] = time.perf_counter()  # evaluation time is not training time

    with tempfile.TemporaryDirectory() as tmp:
        args = GRPOConfig(
            output_dir=tmp, per_device_train_batch_size=G, num_generations=G, max_completion_length=T,
            learning_rate=a.lr, beta=0.0, temperature=1.0, top_p=1.0, top_k=0, max_steps=100_000, logging_steps=10,
            save_strategy="no", report_to="none", use_cpu=True, bf16=False, seed=a.seed,
            lr_scheduler_type="constant", disable_tqdm=True, dataloader_num_workers=0, shuffle_dataset=False,
            steps_per_generation=a.spg)
        trainer = GRPOTrainer(model=model, reward_funcs=trl_reward("correct"), args=args,
                              train_dataset=trl_dataset(task, 20_000), processing_class=tok, callbacks=[Race()])
        clock["since"] = time.perf_counter()
        trainer.train()
        steps = trainer.state.global_step
    return {"system": "trl" if a.spg == 1 else f"trl-s{a.spg}", "task": a.task, "seed": a.seed, "curve": curve,
            "steps": steps,
            "peak_rss_gb": peak_rss_gb()}


def worker_grpolab(a: argparse.Namespace) -> dict[str, Any]:
    from grpolab.config import Config
    from grpolab.report.jsonl import read_jsonl
    from grpolab.trainer import train

    with tempfile.TemporaryDirectory() as tmp:
        settings = dict(
            **TASKS[a.task], system_prompt=SYSTEM_PROMPT, group_size=G, prompts_per_step=1, max_new_tokens=T,
            lr=a.lr, beta=0.0, loss_aggregation="token-mean", adam_beta2=0.999, grad_clip=1.0, temperature=1.0,
            steps=100_000, max_minutes=a.minutes, eval_every_minutes=a.eval_every, seed=a.seed, out_dir=tmp,
            quiet=True, export=False, checkpoint_every=0, log_rollouts=False, rollout_quant=a.quant,
            lr_schedule=a.schedule, min_lr_ratio=a.min_lr_ratio if a.schedule != "constant" else 0.0)
        settings.update(json.loads(a.extra or "{}"))  # experiments may override any of the above
        result = train(Config.from_flat(settings))
        records = read_jsonl(result.run_dir / "metrics.jsonl")
        shutil.copy(result.run_dir / "metrics.jsonl", a.out.with_suffix(".metrics.jsonl"))  # per-step record, kept
    curve, lr = [], None
    for r in records:  # evaluation records carry no lr: report the rate of the step just before
        lr = r.get("lr", lr)
        if "eval_accuracy" in r:
            curve.append({"train_seconds": r["train_seconds"], "step": r["step"], "accuracy": r["eval_accuracy"],
                          "accuracy_strict": r["eval_accuracy_strict"], "length": r["eval_length"], "lr": lr})
    name = "grpolab" + ("-int8" if a.quant == "int8" else "") + (f"-{a.label}" if a.label else "")
    return {"system": name, "task": a.task, "seed": a.seed, "curve": curve, "steps": result.steps_done,
            "peak_rss_gb": peak_rss_gb()}


# ---------------------------------------------------------------------------------------------------------------
def _at(curve: list[dict], seconds: float, interval: float) -> float | None:
    """Accuracy of the last evaluation due at or before `seconds` of training time. An evaluation due at a mark
    (a multiple of `interval` seconds) runs at the end of the step that crossed it, a few seconds later."""
    seen = [c for c in curve if math.floor(c["train_seconds"] / interval + 1e-9) * interval <= seconds + 1e-6]
    return seen[-1]["accuracy"] if seen else None


def _time_to(curve: list[dict], target: float) -> float | None:
    for c in curve:
        if c["accuracy"] >= target - 1e-9:
            return c["train_seconds"]
    return None


def report(out_dir: Path, minutes: float) -> str:
    runs = [json.loads(p.read_text()) for p in sorted(out_dir.glob("*-seed*-*.json"))]
    if not runs:
        return "no runs yet"
    marks = [m for m in (1, 2, 3, 5, 8, 10, 15, 20, 25, 30) if m <= minutes]
    intervals = {r.get("settings", {}).get("eval_every", 1.0) for r in runs}
    if len(intervals) == 1:  # show only the marks at which an evaluation was due
        e = intervals.pop()
        marks = [m for m in marks if abs(m / e - round(m / e)) < 1e-9] or marks
    lines = ["| task | seed | system | steps | base | " + " | ".join(f"{m} min" for m in marks) +
             " | best | time to TRL's best | vs TRL time | end - best |",
             "|---|---|---|---|---|" + "---|" * len(marks) + "---|---|---|---|"]
    for (task, seed) in sorted({(r["task"], r["seed"]) for r in runs}):
        group = [r for r in runs if r["task"] == task and r["seed"] == seed]
        trl = next((r for r in group if r["system"] == "trl"), None)
        trl_best = max(c["accuracy"] for c in trl["curve"]) if trl else None
        trl_t = _time_to(trl["curve"], trl_best) if trl else None
        for r in sorted(group, key=lambda r: r["system"] != "trl"):
            c = r["curve"]
            best = max(x["accuracy"] for x in c)
            t_best = _time_to(c, trl_best) if trl_best is not None else None
            ratio = f"{t_best / trl_t:.2f}" if t_best is not None and trl_t else "-"
            budget = r.get("settings", {}).get("minutes", minutes)
            every = 60 * r.get("settings", {}).get("eval_every", 1.0)
            cells = [f"{100 * v:.1f}" if m <= budget + 1e-9 and (v := _at(c, 60 * m, every)) is not None else "-"
                     for m in marks]
            lines.append(f"| {task} | {seed} | {r['system']} | {r['steps']} | {100 * c[0]['accuracy']:.1f} | "
                         + " | ".join(cells) + f" | {100 * best:.1f} | "
                         f"{'-' if t_best is None else f'{t_best / 60:.1f} min'} | {ratio} | "
                         f"{100 * (c[-1]['accuracy'] - best):+.1f} |")
    table = "\n".join(lines)
    (out_dir / "learning.md").write_text(table + "\n")
    _plot(runs, out_dir / "learning.png")
    return table


def _plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in runs})
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    colors = {"trl": "tab:gray", "trl-s4": "black", "grpolab": "tab:blue", "grpolab-int8": "tab:orange", "grpolab-fp16": "tab:green"}
    for ax, task in zip(axes[0], tasks):
        for r in (r for r in runs if r["task"] == task):
            xs = [c["train_seconds"] / 60 for c in r["curve"]]
            ys = [100 * c["accuracy"] for c in r["curve"]]
            ax.plot(xs, ys, marker="o", ms=3, color=colors.get(r["system"], None),
                    linestyle="-" if r["seed"] == 0 else "--", label=f"{r['system']} seed {r['seed']}")
        ax.set_title(f"{task}: held-out accuracy (greedy)")
        ax.set_xlabel("training wall time, minutes (evaluation excluded)")
        ax.set_ylabel("accuracy %")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="add1,add2")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--systems", default="trl,grpolab",
                   help="trl, trl-s4 (TRL with steps_per_generation=4), grpolab, grpolab-int8")
    p.add_argument("--minutes", type=float, default=25.0, help="training wall budget per run")
    p.add_argument("--eval-every", type=float, default=1.0, help="minutes of training time between evaluations")
    p.add_argument("--lr", type=float, default=LR, help="peak learning rate, both systems")
    p.add_argument("--schedule", default="constant", choices=["constant", "cosine"],
                   help="both systems: keep --lr, or decay it by cosine over the training clock of the budget")
    p.add_argument("--min-lr-ratio", type=float, default=0.1, help="where --schedule cosine ends, fraction of --lr")
    p.add_argument("--extra", default="", help="JSON of extra grpolab settings (experiments)")
    p.add_argument("--label", default="", help="suffix for grpolab runs with --extra")
    p.add_argument("--skip-done", action="store_true", help="keep runs already saved")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--out", type=Path, default=OUT, help="results folder")
    a = p.parse_args()
    out_dir = a.out
    out_dir.mkdir(parents=True, exist_ok=True)
    if not a.report_only:
        for task in a.tasks.split(","):
            for seed in (int(s) for s in a.seeds.split(",")):
                for system in a.systems.split(","):
                    name = system + (f"-{a.label}" if a.label and not system.startswith("trl") else "")
                    out = out_dir / f"{task}-seed{seed}-{name}.json"
                    if a.skip_done and out.exists():
                        continue
                    args = ["--system", "trl" if system.startswith("trl") else "grpolab", "--task", task, "--seed", str(seed),
                            "--minutes", str(a.minutes), "--eval-every", str(a.eval_every),
                            "--quant", "int8" if system == "grpolab-int8" else "none", "--lr", str(a.lr),
                            "--schedule", a.schedule, "--min-lr-ratio", str(a.min_lr_ratio)]
                    if system == "trl-s4":
                        args += ["--spg", "4"]
                    if not system.startswith("trl") and a.extra:
                        args += ["--extra", a.extra, "--label", a.label]
                    print(f"{time.strftime('%H:%M:%S')} {task} seed {seed} {name} ...", flush=True)
                    res = run_worker(Path(__file__), args, out_dir / "tmp" / out.name)
                    steps_log = (out_dir / "tmp" / out.name).with_suffix(".metrics.jsonl")
                    if steps_log.exists():  # grpolab's per-step record, kept beside the result
                        shutil.copy(steps_log, out.with_suffix(".metrics.jsonl"))
                    res["machine"] = machine()
                    res["settings"] = {"lr": a.lr, "G": G, "T": T, "minutes": a.minutes, "eval_every": a.eval_every,
                                       "extra": a.extra, "schedule": a.schedule,
                                       "min_lr_ratio": a.min_lr_ratio if a.schedule != "constant" else None}
                    write_json(out, res)
                    print(f"   best {100 * max(c['accuracy'] for c in res['curve']):.1f}% in {res['steps']} steps",
                          flush=True)
    print(report(out_dir, a.minutes))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        wp = argparse.ArgumentParser()
        wp.add_argument("worker")
        wp.add_argument("--system", required=True)
        wp.add_argument("--task", required=True)
        wp.add_argument("--seed", type=int, default=0)
        wp.add_argument("--minutes", type=float, default=25)
        wp.add_argument("--eval-every", type=float, default=1.0)
        wp.add_argument("--quant", default="none")
        wp.add_argument("--lr", type=float, default=LR)
        wp.add_argument("--schedule", default="constant")
        wp.add_argument("--min-lr-ratio", type=float, default=0.1)
        wp.add_argument("--extra", default="")
        wp.add_argument("--label", default="")
        wp.add_argument("--spg", type=int, default=1, help="TRL's steps_per_generation")
        wp.add_argument("--out", type=Path, required=True)
        wa = wp.parse_args()
        write_json(wa.out, worker_trl(wa) if wa.system == "trl" else worker_grpolab(wa))
    else:
        main()
