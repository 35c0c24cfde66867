"""The policy update in fp32 and under `--autocast bf16`: forward, backward and the whole `policy_update` call.

SmolLM2-135M-Instruct fp32, full fine-tune, one prompt of 37 tokens shared by G completions of T tokens (every
row trained, advantages +-1), AdamW, `--allocator fast`. The two precisions alternate, each measured `--repeats`
times after one warm-up, so a machine whose speed drifts affects both alike. On a CPU without AMX or
AVX512-BF16 only fp32 is measured (bf16 would be refused by the trainer).

    python bench/update_precision.py
    python bench/update_precision.py --group-size 16 --tokens 64 --repeats 5

Writes bench/results/update_precision.json and .md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from common import RESULTS, machine, write_json, write_table  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=RESULTS / "update_precision.json")
    a = p.parse_args()

    from grpolab.config import Config
    from grpolab.logprobs import token_logprobs
    from grpolab.models import load_model
    from grpolab.runtime import autocast, native_bf16, set_allocator
    from grpolab.update import UpdateBatch, policy_update

    set_allocator("fast")
    cfg = Config.from_flat(beta=0.0, loss_aggregation="token-mean")
    model, tok = load_model(cfg.model)
    model.train()
    device = next(model.parameters()).device
    kinds = ["off", "bf16"] if native_bf16(device) else ["off"]
    g = torch.Generator().manual_seed(0)
    G, T = a.group_size, a.tokens
    prompt = torch.randint(10, 1000, (37,), generator=g).tolist()
    ids = torch.randint(10, 1000, (G, T), generator=g)
    mask = torch.ones(G, T)
    adv = torch.tensor([1.0, -1.0] * (G // 2) + [1.0] * (G % 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-12)  # steps, but the weights barely move
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)

    def fwd_bwd(kind: str) -> tuple[float, float]:
        t0 = time.perf_counter()
        with autocast(kind, device):
            lp, _ = token_logprobs(model, [prompt] * G, ids, mask, 1.0, tok.pad_token_id)
        t1 = time.perf_counter()
        lp.sum().backward()
        t2 = time.perf_counter()
        model.zero_grad(set_to_none=True)
        return t1 - t0, t2 - t1

    def update(kind: str) -> float:
        batch = UpdateBatch([prompt] * G, ids, mask, adv, None, T)
        t0 = time.perf_counter()
        policy_update(model, batch, cfg.algo, optimizer, scheduler, temperature=1.0, pad_id=tok.pad_token_id,
                      micro_batch=0, grad_clip=1.0, autocast=kind)
        return time.perf_counter() - t0

    times: dict[str, dict[str, list[float]]] = {k: {"forward": [], "backward": [], "policy_update": []} for k in kinds}
    for kind in kinds:  # warm-up: allocator, oneDNN kernels for these shapes, AdamW state
        fwd_bwd(kind)
        update(kind)
    for _ in range(a.repeats):
        for kind in kinds:
            f, b = fwd_bwd(kind)
            times[kind]["forward"].append(f)
            times[kind]["backward"].append(b)
            times[kind]["policy_update"].append(update(kind))
    rows = [{"autocast": k, **{part: statistics.median(v) for part, v in parts.items()}, "all": parts}
            for k, parts in times.items()]
    write_json(a.out, {"machine": machine(), "G": G, "T": T, "rows": rows, "command": " ".join(sys.argv)})
    lines = [f"G={G}, T={T}, prompt 37 tokens shared, full fine-tune; median of {a.repeats}, seconds", "",
             "| autocast | forward | backward | forward + backward | policy_update (incl. AdamW, clip) |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['autocast']} | {r['forward']:.2f} | {r['backward']:.2f} | "
                     f"{r['forward'] + r['backward']:.2f} | {r['policy_update']:.2f} |")
    table = "\n".join(lines)
    write_table(a.out, table)


if __name__ == "__main__":
    main()
