"""Recipe expansion and validation of a configuration tree (see config.py).

Every check raises UserError naming the value, what is allowed, and the fix.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from grpolab.errors import UserError, unknown_choice
from grpolab.recipes import BASE_KNOBS, RECIPES


def expand_recipe(algo: Any) -> None:
    """Fill every knob left as None from the named recipe, then make the KL knobs consistent.

    A KL estimator without a KL weight is a contradiction the user must resolve; an estimator that only came
    from a recipe follows the weight (k3 when beta > 0, 'none' when beta is 0).
    """
    if algo.recipe not in RECIPES:
        raise unknown_choice("recipe", algo.recipe, RECIPES, "See `grpolab recipes`.")
    user_set = {k for k in BASE_KNOBS if getattr(algo, k) is not None}
    for key, value in RECIPES[algo.recipe].expanded().items():
        if getattr(algo, key) is None:
            setattr(algo, key, value)
    if algo.beta == 0 and algo.kl_estimator != "none":
        if "kl_estimator" in user_set:
            where = "--beta is 0" if "beta" in user_set else f"recipe '{algo.recipe}' has beta 0"
            raise UserError(
                f"--kl-estimator {algo.kl_estimator} was set but {where}, so no KL term is computed. "
                "Fix: add --beta 0.04 (or another value > 0), or drop --kl-estimator."
            )
        algo.kl_estimator = "none"
    if algo.beta > 0 and algo.kl_estimator == "none":
        if "kl_estimator" in user_set:
            raise UserError(f"--beta {algo.beta} asks for a KL penalty but --kl-estimator is 'none'. "
                            "Fix: --kl-estimator k3 (or k1, k2, k3-unbiased), or --beta 0.")
        algo.kl_estimator = "k3"


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def validate(cfg: Any) -> None:
    """Raise UserError naming the value, what is allowed, and the fix, for the first bad setting found."""
    for section in ("model", "task", "reward", "rollout", "algo", "train", "eval", "run"):
        obj = getattr(cfg, section)
        for f in fields(obj):
            choices = f.metadata.get("choices")
            value = getattr(obj, f.name)
            if choices and value is not None and value not in choices:
                raise unknown_choice(f"value for --{f.name.replace('_', '-')}", value, choices)
    r, t, a, m = cfg.rollout, cfg.train, cfg.algo, cfg.model
    _check(r.group_size >= 2, f"--group-size {r.group_size} is too small: GRPO compares completions within a group, "
           "so it needs at least 2. Fix: --group-size 8")
    _check(r.max_new_tokens >= 1, f"--max-new-tokens {r.max_new_tokens} leaves no room for an answer; it must be "
           "at least 1. Fix: --max-new-tokens 64")
    _check(r.temperature > 0, f"--temperature {r.temperature} must be > 0 for sampling (greedy rollouts make every "
           "completion in a group identical, so nothing is learned). Fix: --temperature 1.0")
    _check(0 < r.top_p <= 1, f"--top-p {r.top_p} must be in (0, 1]. Fix: --top-p 1.0 (off) or e.g. 0.95")
    _check(r.top_k >= 0, f"--top-k {r.top_k} must be >= 0 (0 = off). Fix: --top-k 0")
    _check(t.steps >= 1, f"--steps {t.steps} must be at least 1")
    _check(t.max_minutes >= 0, f"--max-minutes {t.max_minutes} must be >= 0 (0 = no limit)")
    _check(t.prompts_per_step >= 1, f"--prompts-per-step {t.prompts_per_step} must be at least 1")
    _check(t.steps_per_generation >= 1, f"--steps-per-generation {t.steps_per_generation} must be at least 1 "
           "(1 = sample fresh completions every step)")
    _check(t.lr > 0, f"--lr {t.lr} must be > 0. Fix: --lr 1e-5 (full fine-tune) or 1e-4 (LoRA)")
    _check(t.micro_batch >= 0, f"--micro-batch {t.micro_batch} must be >= 0 (0 = all completions at once)")
    _check(t.grad_clip >= 0, f"--grad-clip {t.grad_clip} must be >= 0 (0 = off)")
    _check(t.warmup_steps >= 0, f"--warmup-steps {t.warmup_steps} must be >= 0")
    _check(0 <= t.min_lr_ratio <= 1, f"--min-lr-ratio {t.min_lr_ratio} must be in [0, 1] (a fraction of --lr). "
           "Fix: --min-lr-ratio 0.1")
    _check(t.min_lr_ratio == 0 or t.lr_schedule != "constant",
           f"--min-lr-ratio {t.min_lr_ratio} only acts with a decaying schedule, but --lr-schedule is 'constant'. "
           "Fix: --lr-schedule cosine (or linear), or drop --min-lr-ratio")
    _check(0 <= t.adam_beta1 < 1 and 0 <= t.adam_beta2 < 1, "--adam-beta1/--adam-beta2 must be in [0, 1)")
    _check(m.lora_rank >= 0, f"--lora-rank {m.lora_rank} must be >= 0 (0 = full fine-tune)")
    _check(0 <= m.lora_dropout < 1, f"--lora-dropout {m.lora_dropout} must be in [0, 1)")
    _check(cfg.task.eval_size >= 1, f"--eval-size {cfg.task.eval_size} must be at least 1")
    t = cfg.task
    _check(0 < t.curriculum_promote <= 1, f"--curriculum-promote {t.curriculum_promote} must be in (0, 1], e.g. 0.7")
    _check(0 <= t.curriculum_min_pass <= 1, f"--curriculum-min-pass {t.curriculum_min_pass} must be in [0, 1], e.g. 0.15")
    _check(t.curriculum_window >= 1 and t.curriculum_problems >= 1,
           f"--curriculum-window {t.curriculum_window} and --curriculum-problems {t.curriculum_problems} must be "
           "at least 1")
    _check(t.curriculum_start >= 0, f"--curriculum-start {t.curriculum_start} must be a level, or 0 for automatic")
    k = cfg.task
    _check(k.level >= 0, f"--level {k.level} must be >= 0 (0 = the task's easiest level or all rows)")
    _check(0 <= k.eval_fraction < 1, f"--eval-fraction {k.eval_fraction} must be in [0, 1) (0 = use --eval-size)")
    _check(k.code_timeout > 0 and k.code_memory_mb >= 64,
           f"--code-timeout {k.code_timeout} must be > 0 and --code-memory-mb {k.code_memory_mb} at least 64")
    _check(not (k.data_path and k.hf_dataset), f"--data-path {k.data_path} and --hf-dataset {k.hf_dataset} both "
           "name the data. Fix: keep one")
    _check(not k.hf_eval_split or bool(k.hf_dataset), f"--hf-eval-split {k.hf_eval_split} needs --hf-dataset. Fix: "
           "--eval-path FILE for a local held-out file")
    _check(bool(cfg.reward.rewards.strip() or cfg.reward.reward_fn.strip()),
           "--rewards is empty and no --reward-fn is given, so nothing would score completions. Fix: --rewards correct")
    _check(cfg.task.digits >= 1 and cfg.task.terms >= 2,
           f"arithmetic needs --digits >= 1 and --terms >= 2 (got {cfg.task.digits} and {cfg.task.terms})")
    _check(cfg.eval.eval_every_minutes >= 0, f"--eval-every-minutes {cfg.eval.eval_every_minutes} must be >= 0")
    _check(cfg.eval.eval_every >= 0 and cfg.eval.eval_max_new_tokens >= 0 and cfg.eval.eval_batch >= 1,
           "--eval-every and --eval-max-new-tokens must be >= 0 and --eval-batch >= 1")
    _check(cfg.run.checkpoint_every >= 0 and cfg.run.keep_checkpoints >= 1,
           "--checkpoint-every must be >= 0 and --keep-checkpoints >= 1")
    # algorithm knobs (already expanded)
    _check(a.clip_low >= 0 and a.clip_high >= 0, f"clip epsilons must be >= 0 (got --clip-low {a.clip_low}, "
           f"--clip-high {a.clip_high})")
    _check(a.clip_high >= a.clip_low or a.objective == "cispo",
           f"--clip-high {a.clip_high} is below --clip-low {a.clip_low}; clip-higher needs clip_high >= clip_low. "
           f"Fix: --clip-high {a.clip_low} (symmetric) or larger")
    _check(a.objective != "clip" or a.clip_low < 1,
           f"--clip-low {a.clip_low} must be < 1 with the clip objective (the ratio's lower bound is 1 - clip_low)")
    _check(a.beta >= 0, f"--beta {a.beta} must be >= 0")
    _check(a.std_eps >= 0, f"--std-eps {a.std_eps} must be >= 0")
    _check(a.num_updates >= 1, f"--num-updates {a.num_updates} must be at least 1")
    _check(a.tis_cap == 0 or a.tis_cap >= 1, f"--tis-cap {a.tis_cap} must be 0 (off) or >= 1")
    _check(a.offpolicy_mask_delta >= 0, f"--offpolicy-mask-delta {a.offpolicy_mask_delta} must be >= 0")
    _check(a.resample_budget >= 0, f"--resample-budget {a.resample_budget} must be >= 0")
    _check(a.overlong_buffer >= 0 and a.overlong_buffer < r.max_new_tokens,
           f"--overlong-buffer {a.overlong_buffer} must be in [0, max_new_tokens={r.max_new_tokens})")
    _check(a.advantage_baseline != "leave-one-out" or a.advantage_scale == "none",
           f"--advantage-baseline leave-one-out (RLOO) is defined without std scaling, but --advantage-scale is "
           f"{a.advantage_scale}. Fix: --advantage-scale none")
    _check(not (a.ratio_level == "sequence" and a.objective != "clip"),
           f"--ratio-level sequence (GSPO) works with the clip objective, not '{a.objective}'")
    if a.resample_budget > 0 and a.zero_variance != "filter":
        raise UserError(f"--resample-budget {a.resample_budget} only acts when zero-variance groups are filtered, "
                        f"but --zero-variance is '{a.zero_variance}'. Fix: --zero-variance filter, or --resample-budget 0")
