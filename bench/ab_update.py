"""Step-matched A/B: TRL's GRPOTrainer trains as usual, and grpolab's update is fed the very batches TRL sampled.

Both start from the same weights. Each step, TRL generates, scores and updates its model; the same prompt ids,
completion ids, masks and advantages then go through grpolab's `policy_update` on a second copy (race settings:
token-mean loss, AdamW (0.9, 0.999), grad clip 1, no KL). If the two updates are the same algorithm, the copies
stay equal up to float rounding: `drift` (||theta_trl - theta_grpolab|| / ||theta_trl - theta_0||) stays near 0
and the losses and gradient norms agree. Any difference in the update math (loss normalisation, advantages,
masking, optimizer) shows up here within a few steps, apart from sampling.

    python bench/ab_update.py --steps 12                      # fp32 update on both sides
    python bench/ab_update.py --steps 12 --autocast bf16      # grpolab's update under bf16 autocast

Writes bench/results/ab_update[-<label>].json and .md.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from common import (RESULTS, SYSTEM_PROMPT, TASKS, build_task, machine, trl_dataset, trl_reward,  # noqa: E402
                    write_json, write_table)

G, T, LR = 8, 64, 1e-5


def _flat(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _grpolab_batch(inp: dict, cfg):
    from grpolab.update import UpdateBatch

    pm = inp["prompt_mask"].bool()
    prompts = [inp["prompt_ids"][i][pm[i]].tolist() for i in range(pm.shape[0])]  # TRL left-pads prompts
    return UpdateBatch(prompts=prompts, completion_ids=inp["completion_ids"].clone(),
                       mask=inp["completion_mask"].float().clone(), advantages=inp["advantages"].float().clone(),
                       sampler_logp=None, max_len=cfg.rollout.max_new_tokens)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="add1", choices=sorted(TASKS))
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--autocast", default="off", choices=["off", "bf16"])
    ap.add_argument("--label", default="")
    a = ap.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from grpolab.config import Config
    from grpolab.models import embedded_model_dir, encode_prompt, quiet_transformers
    from grpolab.algo import group_advantages
    from grpolab.rewards import verify_numeric
    from grpolab.trainer import _optimizer
    from grpolab.update import policy_update

    quiet_transformers()
    path = embedded_model_dir()
    tok = AutoTokenizer.from_pretrained(path)
    model_t = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model_g = copy.deepcopy(model_t)
    theta0 = _flat(model_t)
    task = build_task(a.task, a.seed)
    cfg = Config.from_flat(**TASKS[a.task], system_prompt=SYSTEM_PROMPT, group_size=G, prompts_per_step=1,
                           max_new_tokens=T, lr=LR, beta=0.0, loss_aggregation="token-mean", adam_beta2=0.999,
                           grad_clip=1.0, temperature=1.0, seed=a.seed, autocast=a.autocast)
    opt_g, sched_g, _ = _optimizer(model_g, cfg)
    batches: list[dict] = []
    rows: list[dict] = []

    def check_prompt(inp: dict, step: int) -> bool:
        ex = task.train_example(step)
        ours = encode_prompt(tok, SYSTEM_PROMPT, ex.prompt)
        pm = inp["prompt_mask"].bool()
        return all(inp["prompt_ids"][i][pm[i]].tolist() == ours for i in range(pm.shape[0]))

    def ab_step(step: int, logs: dict) -> None:
        """grpolab's update on the batch TRL just trained on (called from TRL's per-step log)."""
        inp = batches[-1]
        texts = tok.batch_decode([inp["completion_ids"][i][inp["completion_mask"][i].bool()] for i in range(G)],
                                 skip_special_tokens=True)
        ex = task.train_example(step - 1)
        rewards = torch.tensor([float(verify_numeric(t, ex, "lenient").correct) for t in texts])
        ours = group_advantages(rewards, G, "mean", "group-std", 1e-4)
        model_g.train()
        st = policy_update(model_g, _grpolab_batch(inp, cfg), cfg.algo, opt_g, sched_g, temperature=1.0,
                           pad_id=tok.pad_token_id, micro_batch=cfg.train.micro_batch, grad_clip=1.0,
                           empty_steps="momentum", autocast=a.autocast)
        th_t, th_g = _flat(model_t), _flat(model_g)
        moved = float((th_t - theta0).norm())
        rows.append({
            "step": step, "prompt_same": check_prompt(inp, step - 1),
            "adv_max_diff": float((ours - inp["advantages"].float()).abs().max()),
            "reward_mean": float(rewards.mean()), "tokens": int(inp["completion_mask"].sum()),
            "trl_loss": logs.get("loss"), "grpolab_loss": st.get("loss"),
            "trl_grad_norm": logs.get("grad_norm"), "grpolab_grad_norm": st.get("grad_norm"),
            "trl_moved": moved, "drift": float((th_t - th_g).norm()) / max(moved, 1e-30),
            "cosine": float(torch.nn.functional.cosine_similarity((th_t - theta0).double(), (th_g - theta0).double(), dim=0)),
        })
        print({k: rows[-1][k] for k in ("step", "trl_grad_norm", "grpolab_grad_norm", "drift", "cosine")}, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        args = GRPOConfig(
            output_dir=tmp, per_device_train_batch_size=G, num_generations=G, max_completion_length=T,
            learning_rate=LR, beta=0.0, temperature=1.0, top_p=1.0, top_k=0, max_steps=a.steps, logging_steps=1,
            save_strategy="no", report_to="none", use_cpu=True, bf16=False, seed=a.seed,
            lr_scheduler_type="constant", disable_tqdm=True, dataloader_num_workers=0, shuffle_dataset=False)
        trainer = GRPOTrainer(model=model_t, reward_funcs=trl_reward("correct"), args=args,
                              train_dataset=trl_dataset(task, 1000), processing_class=tok)
        original = trainer._generate_and_score_completions

        def recording(inputs):
            out = original(inputs)
            batches.append({k: (v.detach().clone() if torch.is_tensor(v) else v) for k, v in out.items()})
            return out

        trainer._generate_and_score_completions = recording
        original_log = trainer.log

        def log(values, *args_, **kw):
            if "grad_norm" in values:  # the per-step training log, written right after TRL's optimizer step
                ab_step(trainer.state.global_step, values)
            return original_log(values, *args_, **kw)

        trainer.log = log
        trainer.train()

    name = "ab_update" + (f"-{a.label}" if a.label else "")
    write_json(RESULTS / f"{name}.json", {"machine": machine(), "args": vars(a), "rows": rows})
    head = "| step | prompt same | adv max diff | reward | tokens | loss TRL | loss grpolab | grad norm TRL | grad norm grpolab | drift | cosine |\n"
    head += "|---|---|---|---|---|---|---|---|---|---|---|\n"
    for r in rows:
        head += (f"| {r['step']} | {r['prompt_same']} | {r['adv_max_diff']:.1e} | {r['reward_mean']:.3f} | "
                 f"{r['tokens']} | {r['trl_loss'] or 0:.4f} | {r['grpolab_loss'] or 0:.4f} | {r['trl_grad_norm'] or 0:.4f} | {r['grpolab_grad_norm'] or 0:.4f} | "
                 f"{r['drift']:.2e} | {r['cosine']:.6f} |\n")
    write_table(RESULTS / f"{name}.json", head)


if __name__ == "__main__":
    main()
