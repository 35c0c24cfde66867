"""Decoding throughput: tokens per second by engine, sampling precision and batch size.

SmolLM2-135M-Instruct, one prompt, B completions of exactly 128 tokens (no end-of-sequence, so every row
decodes every step), temperature 1. Each engine is measured after one warm-up call, one at a time.

    python bench/decode.py
    python bench/decode.py --batches 8,64 --tokens 64
    python bench/decode.py --variants fast-fp16,fast-fp16-fbgemm   # grpolab's fp16 kernels against fbgemm's

Writes bench/results/decode.json and bench/results/decode.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from common import RESULTS, SYSTEM_PROMPT, machine, write_json, write_table  # noqa: E402

FLOP_PER_TOKEN = 2 * 134.5e6


def main() -> None:
    from grpolab.config import Config
    from grpolab.models import encode_prompt, load_model
    from grpolab.rollout import SamplingParams, build_engine

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", default="8,32,64")
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--variants", default="hf,fast,fast-fp16,fast-int8",
                   help="engine[-quant[-fbgemm]]: hf, fast, fast-fp16, fast-fp16-fbgemm (fbgemm's fp16 kernel), fast-int8")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS / "decode.json")
    a = p.parse_args()
    cfg = Config.from_flat(task="arithmetic", digits=2)
    model, tok = load_model(cfg.model, for_training=False)
    model.eval()
    prompt = encode_prompt(tok, SYSTEM_PROMPT, "What is 47 + 38?")
    rows = []
    from grpolab.rollout import kernels

    for variant in a.variants.split(","):
        kind, _, quant = variant.partition("-")
        quant, _, backend = quant.partition("-")
        os.environ["GRPOLAB_NATIVE"] = "0" if backend == "fbgemm" else "1"
        kernels.reset()
        engine = build_engine(kind, model, [], tok.pad_token_id, quant or "none")
        for B in (int(b) for b in a.batches.split(",")):
            params = SamplingParams(B, a.tokens, 1.0)
            gen = torch.Generator().manual_seed(0)
            engine.generate([prompt], SamplingParams(B, 4, 1.0), gen)  # warm-up (and lazy weight packing)
            rates = []
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                ro = engine.generate([prompt], params, gen)
                dt = time.perf_counter() - t0
                rates.append(float(ro.mask.sum()) / dt)
            rate = statistics.median(rates)
            rows.append({"variant": variant, "batch": B, "tokens": a.tokens, "tokens_per_s": rate,
                         "gflops": rate * FLOP_PER_TOKEN / 1e9})
            print(f"{variant:10s} batch {B:3d}: {rate:6.0f} tokens/s", flush=True)
        del engine
    write_json(a.out, {"machine": machine(), "rows": rows, "command": " ".join(sys.argv)})
    batches = sorted({r["batch"] for r in rows})
    lines = ["| engine | " + " | ".join(f"batch {b}" for b in batches) + " |", "|---|" + "---|" * len(batches)]
    for variant in dict.fromkeys(r["variant"] for r in rows):
        cells = [next((f"{r['tokens_per_s']:.0f}" for r in rows if r["variant"] == variant and r["batch"] == b), "-")
                 for b in batches]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + f"\n\nTokens per second, {a.tokens} new tokens per row, temperature 1, no EOS."
    write_table(a.out, table)


if __name__ == "__main__":
    main()
