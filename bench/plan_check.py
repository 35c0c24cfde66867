"""Does `grpolab plan` predict right? Predicted vs measured peak RSS and seconds per step on a grid.

The planner is calibrated once on this machine (`grpolab.plan.calibrate`, the same measurement
`grpolab plan --calibrate` makes), then each setting runs for real in its own process: SmolLM2-135M, the
two-digit addition prompts, completions forced to full length (EOS suppressed) and a reward with spread in
every group, so every row decodes max_new_tokens and trains, which is what the prediction assumes.

    python bench/plan_check.py                   # the default grid (~12 minutes)
    python bench/plan_check.py --report-only
    python bench/plan_check.py --repredict       # same measurements, predictions from the planner as it is now

Writes bench/results/plan_check.json and bench/results/plan_check.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (RESULTS, SYSTEM_PROMPT, machine, peak_rss_gb, register_spread_reward, run_worker,  # noqa: E402
                    write_json, write_table)

OUT = RESULTS / "plan_check.json"
# (G, max new tokens, LoRA rank, rollout quant, allocator)
GRID = [(8, 64, 0, "none", "fast"), (8, 128, 0, "none", "fast"), (16, 128, 0, "none", "fast"),
        (8, 128, 0, "fp16", "fast"), (8, 128, 16, "none", "fast"), (16, 128, 16, "none", "fast"),
        (8, 128, 0, "none", "lean"), (8, 128, 16, "none", "lean"), (16, 128, 16, "none", "lean")]


def _config(G: int, T: int, lora: int, quant: str, steps: int, out_dir: str, allocator: str = "fast"):
    from grpolab.config import Config

    return Config.from_flat(
        task="arithmetic", digits=2, system_prompt=SYSTEM_PROMPT, group_size=G, max_new_tokens=T, ignore_eos=True,
        rewards="bench_spread", lr=1e-5, beta=0.0, loss_aggregation="token-mean", steps=steps,
        eval_before_after=False, export=False, checkpoint_every=0, quiet=True, out_dir=out_dir, lora_rank=lora,
        seed=0, rollout_quant=quant, allocator=allocator)


def worker(a: argparse.Namespace) -> dict:
    from grpolab.trainer import train

    register_spread_reward()
    records: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        train(_config(a.group_size, a.tokens, a.lora, a.quant, a.warmup + a.steps, tmp, a.allocator),
              on_step=records.append)
    timed = records[a.warmup:]
    return {"s_per_step": statistics.median(r["step_seconds"] for r in timed),
            "rows_trained": statistics.median(r["rows_trained"] for r in timed), "peak_rss_gb": peak_rss_gb()}


def _setting(G: int, T: int, n_prompt: int, lora: int, quant: str, allocator: str):
    """The planner's description of one grid setting: one prompt per step, no micro-batching, checkpointing or KL."""
    from grpolab import plan as P

    return P.Setting(G, 1, T, n_prompt, lora, 0, False, False, quant, allocator=allocator)


def prompt_tokens() -> int:
    """Length of the chat-formatted two-digit addition prompt, as the trainer encodes it."""
    from grpolab.config import Config
    from grpolab.models import encode_prompt, load_tokenizer, resolve_model_path
    from grpolab.tasks import build_task

    cfg = _config(8, 64, 0, "none", 1, "/tmp")
    tok = load_tokenizer(resolve_model_path(cfg.model.model))
    task = build_task(cfg.task, 0)
    lens = [len(encode_prompt(tok, SYSTEM_PROMPT, task.train_example(i).prompt)) for i in range(32)]
    return round(statistics.mean(lens))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=2, help="timed steps after the warm-up step")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--repredict", action="store_true",
                   help="keep the saved measurements and calibration, recompute the predictions with the planner "
                        "as it is now (for changes to the memory or time model)")
    p.add_argument("--out", type=Path, default=OUT)
    a = p.parse_args()
    if not (a.report_only or a.repredict):
        from grpolab import plan as P
        from grpolab.models import load_model

        cfg = _config(8, 64, 0, "none", 1, "/tmp")
        model, tok = load_model(cfg.model)
        cal = P.calibrate(model, tok)
        arch = P.Arch.from_config(model.config)
        del model
        n_prompt = prompt_tokens()
        rows = []
        for G, T, lora, quant, allocator in GRID:
            setting = _setting(G, T, n_prompt, lora, quant, allocator)
            mem = P.predict_memory(arch, setting).peak / P.GB
            step = P.predict_time(arch, setting, cal).step_s
            name = (f"G={G} T={T} {'LoRA r=' + str(lora) if lora else 'full FT'}"
                    + (f" {quant}" if quant != "none" else "") + f" {allocator}")
            print(f"running {name} ...", flush=True)
            args = ["--group-size", str(G), "--tokens", str(T), "--lora", str(lora), "--quant", quant,
                    "--allocator", allocator, "--steps", str(a.steps), "--warmup", str(a.warmup)]
            m = run_worker(Path(__file__), args, RESULTS / "tmp" / f"plan_check-{G}-{T}-{lora}-{quant}-{allocator}.json")
            rows.append({"setting": name, "G": G, "T": T, "lora": lora, "quant": quant, "allocator": allocator,
                         "predicted_rss_gb": mem,
                         "measured_rss_gb": m["peak_rss_gb"], "predicted_s": step, "measured_s": m["s_per_step"],
                         "rows_trained": m["rows_trained"]})
            print(f"  RSS {mem:.2f} predicted / {m['peak_rss_gb']:.2f} measured GB; "
                  f"step {step:.2f} / {m['s_per_step']:.2f} s", flush=True)
        write_json(a.out, {"machine": machine(), "calibration": cal.__dict__, "prompt_tokens": n_prompt, "rows": rows,
                           "command": " ".join(sys.argv)})
    data = json.loads(a.out.read_text())
    if a.repredict:
        from grpolab import plan as P

        arch = P.arch_for("smollm2-135m")
        cal = P.Calibration(**{**data["calibration"],
                               "decode_step_s": {int(k): v for k, v in data["calibration"]["decode_step_s"].items()}})
        for r in data["rows"]:
            setting = _setting(r["G"], r["T"], data["prompt_tokens"], r["lora"], r["quant"], r.get("allocator", "fast"))
            r["predicted_rss_gb"] = P.predict_memory(arch, setting).peak / P.GB
            r["predicted_s"] = P.predict_time(arch, setting, cal).step_s
        data["repredicted"] = "predictions recomputed from the saved calibration by --repredict"
        write_json(a.out, data)
    lines = ["| setting | RSS predicted GB | RSS measured GB | error | step predicted s | step measured s | error |",
             "|---|---|---|---|---|---|---|"]
    worst_mem = worst_time = 0.0
    for r in data["rows"]:
        em = r["predicted_rss_gb"] / r["measured_rss_gb"] - 1
        et = r["predicted_s"] / r["measured_s"] - 1
        worst_mem, worst_time = max(worst_mem, abs(em)), max(worst_time, abs(et))
        lines.append(f"| {r['setting']} | {r['predicted_rss_gb']:.2f} | {r['measured_rss_gb']:.2f} | {100 * em:+.0f}% | "
                     f"{r['predicted_s']:.2f} | {r['measured_s']:.2f} | {100 * et:+.0f}% |")
    lines.append(f"\nWorst error: memory {100 * worst_mem:.0f}%, step time {100 * worst_time:.0f}% "
                 f"(target: within 20%).")
    table = "\n".join(lines)
    write_table(a.out, table)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        wp = argparse.ArgumentParser()
        wp.add_argument("worker")
        wp.add_argument("--group-size", type=int, required=True)
        wp.add_argument("--tokens", type=int, required=True)
        wp.add_argument("--lora", type=int, default=0)
        wp.add_argument("--quant", default="none")
        wp.add_argument("--allocator", default="fast")
        wp.add_argument("--steps", type=int, default=2)
        wp.add_argument("--warmup", type=int, default=1)
        wp.add_argument("--out", type=Path, required=True)
        wa = wp.parse_args()
        write_json(wa.out, worker(wa))
    else:
        main()
