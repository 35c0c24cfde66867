"""grpolab vs TRL's GRPOTrainer: seconds per step, completions per second, peak RSS, generation speed.

Identical settings on both sides: SmolLM2-135M-Instruct fp32, the same prompts, G completions of exactly T
tokens (EOS suppressed on both sides so per-step work is equal), lr 1e-5, no KL, TRL's default token-mean
loss, a reward with spread in every group so every row trains on both sides. Each system runs in its own
process (clean peak RSS).

    python bench/vs_trl.py                      # G in {8, 16}, T=128, full fine-tune and LoRA r=16
    python bench/vs_trl.py --groups 8 --steps 3 # quicker
    python bench/vs_trl.py --quants fp16,int8   # low-precision rollout variants (default: fp16)
    python bench/vs_trl.py --quants fp16,fp16-fbgemm  # grpolab's fp16 kernels against fbgemm's
    python bench/vs_trl.py --variants lean      # also grpolab with the memory knobs (--allocator lean
                                                # --gradient-checkpointing): the lowest peak RSS, slower steps
    python bench/vs_trl.py --variants bf16      # also both systems with bf16 autocast (CPUs with AMX or
                                                # AVX512-BF16): TRL bf16=True, grpolab --autocast bf16 + fp16 rollouts
    python bench/vs_trl.py --variants s4        # also grpolab sampling 4 steps per rollout call
                                                # (--steps-per-generation 4; a step is a round's mean)
    python bench/vs_trl.py --variants s4,s4-ckpt  # ... and the same with --gradient-checkpointing (lower RSS)

Writes bench/results/vs_trl.json and bench/results/vs_trl.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from grpolab.runtime import native_bf16  # noqa: E402

from common import (RESULTS, SYSTEM_PROMPT, build_task, machine, peak_rss_gb, register_spread_reward,  # noqa: E402
                    run_worker, trl_dataset, trl_reward, write_json, write_table)

FLOP_PER_TOKEN = 2 * 134.5e6  # SmolLM2-135M: 2 x parameters


# ---------------------------------------------------------------------------------------------------------------
# workers (one process each)
# ---------------------------------------------------------------------------------------------------------------
def worker_grpolab(a: argparse.Namespace) -> dict:
    from grpolab.config import Config
    from grpolab.trainer import train

    register_spread_reward()
    records: list[dict] = []
    S = a.spg  # with steps_per_generation S, warm-up and timed steps count whole rounds of S steps
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Config.from_flat(
            task="arithmetic", digits=2, system_prompt=SYSTEM_PROMPT, group_size=a.group_size,
            max_new_tokens=a.tokens, ignore_eos=True, rewards="bench_spread", lr=1e-5, beta=0.0,
            loss_aggregation="token-mean", adam_beta2=0.999, steps=S * (a.warmup + a.steps), eval_before_after=False,
            export=False, checkpoint_every=0, quiet=True, out_dir=tmp, lora_rank=a.lora, seed=0,
            rollout_quant=a.quant, engine=a.engine, autocast=a.autocast, steps_per_generation=S,
            allocator="lean" if a.lean else a.allocator, gradient_checkpointing=a.lean or a.ckpt,
            micro_batch=a.micro_batch)
        train(cfg, on_step=records.append)
    timed = records[S * a.warmup:]
    # one step's share of a round: the mean over whole rounds (a round's first step carries all its sampling)
    per_step = statistics.median if S == 1 else statistics.mean
    return {
        "s_per_step": per_step(r["step_seconds"] for r in timed),
        "gen_s_per_step": per_step(r["gen_seconds"] for r in timed),
        "sync_s_per_step": per_step(r["sync_seconds"] for r in timed),
        "update_s_per_step": per_step(r["update_seconds"] for r in timed),
        "gen_tokens_per_s": statistics.median(r["gen_tokens_per_s"] for r in timed if r["gen_seconds"] > 0),
        "rows_trained": statistics.median(r["rows_trained"] for r in timed),
        "peak_rss_gb": peak_rss_gb(), "steps": [r["step_seconds"] for r in records],
    }


def worker_trl(a: argparse.Namespace) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from grpolab.models import embedded_model_dir, quiet_transformers

    quiet_transformers()
    path = embedded_model_dir()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(path)
    gen_times: list[float] = []
    original_generate = model.generate

    def timed_generate(*args, **kw):
        t0 = time.perf_counter()
        out = original_generate(*args, **kw)
        gen_times.append(time.perf_counter() - t0)
        return out

    model.generate = timed_generate
    step_times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            step_times.append(time.perf_counter() - self.t0)

    peft_config = None
    if a.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=a.lora, lora_alpha=2 * a.lora, target_modules="all-linear", task_type="CAUSAL_LM")
    task = build_task("add2", 0)
    with tempfile.TemporaryDirectory() as tmp:
        args = GRPOConfig(
            output_dir=tmp, per_device_train_batch_size=a.group_size, num_generations=a.group_size,
            max_completion_length=a.tokens, learning_rate=1e-5, beta=0.0, temperature=1.0, top_p=1.0, top_k=0,
            generation_kwargs={"min_new_tokens": a.tokens}, max_steps=a.warmup + a.steps, logging_steps=1,
            save_strategy="no", report_to="none", use_cpu=True, bf16=a.autocast == "bf16", seed=0,
            lr_scheduler_type="constant",
            disable_tqdm=True, dataloader_num_workers=0)
        trainer = GRPOTrainer(model=model, reward_funcs=trl_reward("spread"), args=args,
                              train_dataset=trl_dataset(task, a.group_size * (a.warmup + a.steps) + 64),
                              processing_class=tok, peft_config=peft_config, callbacks=[Clock()])
        trainer.train()
    timed = step_times[a.warmup:]
    gens = gen_times[a.warmup:]
    n_tok = a.group_size * a.tokens
    return {
        "s_per_step": statistics.median(timed), "gen_s_per_step": statistics.median(gens),
        "gen_tokens_per_s": n_tok / statistics.median(gens), "rows_trained": a.group_size,
        "peak_rss_gb": peak_rss_gb(), "steps": step_times,
    }


# ---------------------------------------------------------------------------------------------------------------
# machine floor
# ---------------------------------------------------------------------------------------------------------------
def gemm_rates(rows: int) -> tuple[float, float]:
    """(large-GEMM GFLOP/s, decode-shaped GFLOP/s at `rows` rows over 30 cold weight matrices)."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    t0 = time.perf_counter()
    for _ in range(10):
        a @ b
    big = 10 * 2 * 2048**3 / (time.perf_counter() - t0) / 1e9
    ws = [torch.randn(3072, 576) for _ in range(30)]
    x = torch.randn(rows, 576)
    for w in ws:
        torch.nn.functional.linear(x, w)
    t0 = time.perf_counter()
    for _ in range(5):
        for w in ws:
            torch.nn.functional.linear(x, w)
    decode = 5 * 30 * 2 * rows * 576 * 3072 / (time.perf_counter() - t0) / 1e9
    return big, decode


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--groups", default="8,16", help="group sizes G to measure")
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--lora", default="0,16", help="LoRA ranks to measure (0 = full fine-tune)")
    p.add_argument("--steps", type=int, default=4, help="timed steps after the warm-up step")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--quants", default="fp16",
                   help="comma list of low-precision rollout variants also measured (fp16, fp16-fbgemm, int8; '' for none)")
    p.add_argument("--variants", default="",
                   help="'lean': also measure grpolab with --allocator lean --gradient-checkpointing (fp32 rollouts); "
                        "'bf16': also TRL with bf16=True and grpolab with --autocast bf16 and fp16 rollouts; "
                        "'s4': also grpolab with --steps-per-generation 4 (bf16 rollouts and --autocast bf16 on "
                        "CPUs with native bf16, else fp16 rollouts); 's4-ckpt': the same plus --gradient-checkpointing")
    p.add_argument("--out", type=Path, default=RESULTS / "vs_trl.json")
    a = p.parse_args()
    extra_variants = set(a.variants.split(",")) - {""}
    unknown = extra_variants - {"lean", "bf16", "s4", "s4-ckpt"}
    if unknown:
        p.error(f"--variants {a.variants!r}: unknown {sorted(unknown)}; allowed: 'lean', 'bf16', 's4', 's4-ckpt' "
                "(or '' for none)")
    if "bf16" in extra_variants and not native_bf16(torch.device("cpu")):
        p.error("--variants bf16 needs a CPU with AMX or AVX512-BF16 (grpolab refuses --autocast bf16 without them)")
    rows = []
    for lora in (int(x) for x in a.lora.split(",")):
        for G in (int(x) for x in a.groups.split(",")):
            common_args = ["--group-size", str(G), "--tokens", str(a.tokens), "--lora", str(lora), "--steps",
                           str(a.steps), "--warmup", str(a.warmup)]
            variants = [("trl", ["--system", "trl"]), ("grpolab", ["--system", "grpolab"])]
            for q in (q for q in a.quants.split(",") if q):
                variants.append((f"grpolab-{q}", ["--system", "grpolab", "--quant", q]))
            if "lean" in extra_variants:
                variants.append(("grpolab-lean", ["--system", "grpolab", "--lean"]))
            if "bf16" in extra_variants:
                variants.append(("trl-bf16", ["--system", "trl", "--autocast", "bf16"]))
                variants.append(("grpolab-fp16-bf16", ["--system", "grpolab", "--quant", "fp16", "--autocast", "bf16"]))
            # the fast sampler of this CPU: bf16 weights and autocast where bf16 beats fp32 (AMX), else fp16 rollouts
            fast = (["--quant", "bf16", "--autocast", "bf16"] if native_bf16(torch.device("cpu"), fast=True)
                    else ["--quant", "fp16"])
            if "s4" in extra_variants:
                variants.append((f"grpolab-{fast[1]}-s4", ["--system", "grpolab", *fast, "--spg", "4"]))
            if "s4-ckpt" in extra_variants:  # the same plus the one memory knob that costs little time
                variants.append((f"grpolab-{fast[1]}-s4-ckpt", ["--system", "grpolab", *fast, "--spg", "4", "--ckpt"]))
            res = {}
            for name, extra in variants:
                tmp_out = RESULTS / "tmp" / f"vs_trl-{name}-G{G}-lora{lora}.json"
                print(f"running {name} G={G} lora={lora} ...", flush=True)
                res[name] = run_worker(Path(__file__), common_args + extra, tmp_out)
                print(f"  {res[name]['s_per_step']:.2f} s/step, {res[name]['peak_rss_gb']:.2f} GB", flush=True)
            big, decode = gemm_rates(G)
            prompt_len = 37
            gen_floor = G * a.tokens * FLOP_PER_TOKEN / (decode * 1e9)
            train_mult = 3 if lora == 0 else 2  # LoRA skips the frozen weights' gradient GEMMs
            train_floor = G * (prompt_len + a.tokens) * FLOP_PER_TOKEN * train_mult / (big * 1e9)
            for name, r in res.items():
                rows.append({"system": name, "G": G, "T": a.tokens, "lora": lora, **{k: v for k, v in r.items() if k != "steps"},
                             "completions_per_s": G / r["s_per_step"], "floor_s": gen_floor + train_floor,
                             "floor_fraction": (gen_floor + train_floor) / r["s_per_step"], "step_times": r["steps"],
                             "gemm_gflops": big, "decode_gemm_gflops": decode})
    write_json(a.out, {"machine": machine(), "rows": rows, "command": " ".join(sys.argv)})
    lines = ["| setting | system | s/step | completions/s | vs TRL | peak RSS GB | RSS vs TRL | gen tokens/s | floor s | floor reached |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        trl = next(x for x in rows if x["system"] == "trl" and x["G"] == r["G"] and x["lora"] == r["lora"])
        setting = f"G={r['G']} T={r['T']} {'LoRA r=' + str(r['lora']) if r['lora'] else 'full FT'}"
        lines.append(f"| {setting} | {r['system']} | {r['s_per_step']:.2f} | {r['completions_per_s']:.2f} | "
                     f"{r['completions_per_s'] / trl['completions_per_s']:.2f}x | {r['peak_rss_gb']:.2f} | "
                     f"{r['peak_rss_gb'] / trl['peak_rss_gb']:.2f}x | {r['gen_tokens_per_s']:.0f} | {r['floor_s']:.2f} | "
                     f"{100 * r['floor_fraction']:.0f}% |")
    table = "\n".join(lines)
    write_table(a.out, table)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        wp = argparse.ArgumentParser()
        wp.add_argument("worker")
        wp.add_argument("--system", required=True)
        wp.add_argument("--group-size", type=int, required=True)
        wp.add_argument("--tokens", type=int, required=True)
        wp.add_argument("--lora", type=int, default=0)
        wp.add_argument("--steps", type=int, default=4)
        wp.add_argument("--warmup", type=int, default=1)
        wp.add_argument("--quant", default="none")
        wp.add_argument("--engine", default="auto")
        wp.add_argument("--lean", action="store_true", help="--allocator lean --gradient-checkpointing")
        wp.add_argument("--ckpt", action="store_true", help="grpolab --gradient-checkpointing")
        wp.add_argument("--allocator", default="fast", help="grpolab --allocator")
        wp.add_argument("--micro-batch", type=int, default=0, help="grpolab --micro-batch (0: its default)")
        wp.add_argument("--autocast", default="off", help="bf16: grpolab --autocast bf16, TRL bf16=True")
        wp.add_argument("--spg", type=int, default=1, help="grpolab --steps-per-generation")
        wp.add_argument("--out", type=Path, required=True)
        wa = wp.parse_args()
        if wa.quant.endswith("-fbgemm"):  # fbgemm's fp16 kernel instead of grpolab's own (rollout/kernels.py)
            import os

            os.environ["GRPOLAB_NATIVE"] = "0"
            wa.quant = wa.quant.removesuffix("-fbgemm")
        result = worker_trl(wa) if wa.system == "trl" else worker_grpolab(wa)
        write_json(wa.out, result)
    else:
        main()
