"""One configuration tree for a run: dataclasses with a help text per field, validation, recipe expansion.

The same object is saved as `config.json` at the start of every run and used by the code, so what is logged
is what ran. Field names are unique across sections, so a flat `--group-size 8` or `group_size=8` finds
its section without ambiguity.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from grpolab.errors import UserError, unknown_choice
from grpolab.recipes import BASE_KNOBS, RECIPES


def _f(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class ModelConfig:
    model: str = _f("smollm2-135m", "model: 'smollm2-135m' (embedded, offline), a local HF directory, or a hub id")
    lora_rank: int = _f(0, "LoRA rank; 0 trains all weights (full fine-tune)")
    lora_alpha: float = _f(0.0, "LoRA alpha; 0 means 2 x rank")
    lora_dropout: float = _f(0.0, "dropout on the LoRA path")
    lora_targets: str = _f("all-linear", "modules LoRA wraps: 'all-linear' or a comma list such as q_proj,v_proj")
    device: str = _f("auto", "cuda, mps, cpu, or auto (cuda, then mps, then cpu)")
    dtype: str = _f("auto", "float32, bfloat16, float16, or auto (float32 on CPU and MPS, bfloat16 on CUDA)",
                    ("auto", "float32", "bfloat16", "float16"))
    gradient_checkpointing: bool = _f(False, "recompute activations in backward to save memory")


@dataclass
class TaskConfig:
    task: str = _f("arithmetic", "task name (see `grpolab tasks`)")
    digits: int = _f(1, "arithmetic: digits per operand")
    terms: int = _f(2, "arithmetic: number of operands")
    operators: str = _f("+", "arithmetic: operators to draw from, e.g. '+-*'")
    system_prompt: str = _f("Solve the problem. Give the final number at the end.",
                            "system message placed before every problem ('' for none)")
    eval_size: int = _f(100, "held-out problems used for evaluation")
    data_seed: int = _f(1234, "seed that fixes the held-out split and the data order")
    level: int = _f(0, "difficulty level: countdown 1-4, multiply 1-5, linear 1-4, sort 1-4 (0 = easiest); for "
                    "data files, keep only rows whose 'level' field equals it (MATH 1-5; 0 = all rows)")
    data_path: str = _f("", "data file for gsm8k, math, countdown or file tasks (.jsonl, .json, .csv, .parquet)")
    eval_path: str = _f("", "held-out data file (default: hold out --eval-size rows of --data-path)")
    hf_dataset: str = _f("", "Hugging Face dataset 'owner/name' or 'owner/name:config' instead of --data-path "
                         "(needs the [datasets] extra and the hub)")
    hf_split: str = _f("train", "split of --hf-dataset used for training")
    hf_eval_split: str = _f("", "split of --hf-dataset held out (e.g. test; default: hold out --eval-size rows)")
    prompt_field: str = _f("", "field holding the problem text (default: the format's, e.g. question for gsm8k, "
                           "problem for math, prompt for file)")
    answer_field: str = _f("", "field holding the reference answer (default: the format's, e.g. answer)")
    skip_bad_rows: bool = _f(False, "skip and count malformed data rows instead of stopping at the first one")
    eval_fraction: float = _f(0.0, "fraction of the data's distinct prompts held out (0 = use --eval-size)")
    verifier: str = _f("", "verifier deciding correctness (numeric, math, countdown, list, code; default: the "
                       "task's own)")
    code_timeout: float = _f(5.0, "code task: wall-clock seconds per sandboxed run of a completion's code")
    code_memory_mb: int = _f(512, "code task: address-space limit in MB for the sandboxed code")


@dataclass
class RewardConfig:
    rewards: str = _f("correct", "reward terms with weights, e.g. 'correct:1,format:0.1' ('' = only --reward-fn)")
    reward_fn: str = _f("", "extra reward functions with TRL's signature, comma separated: 'file.py:func' or "
                        "'module:func', each optionally ':weight' (e.g. 'my_rewards.py:length_penalty:0.1')")
    reward_fn_format: str = _f("standard", "what --reward-fn functions receive: 'standard' (prompts and completions "
                               "as strings) or 'conversational' (lists of chat messages)",
                               ("standard", "conversational"))
    answer_mode: str = _f("lenient", "where the answer is read: 'strict' (<answer> tags only) or 'lenient' "
                          "(tags, else the last number)", ("lenient", "strict"))


@dataclass
class RolloutConfig:
    group_size: int = _f(8, "completions sampled per prompt (G)")
    max_new_tokens: int = _f(64, "longest completion in tokens (T max)")
    temperature: float = _f(1.0, "sampling temperature; log-probs are computed at the same temperature")
    top_p: float = _f(1.0, "nucleus sampling mass (1 = off)")
    top_k: int = _f(0, "top-k sampling (0 = off)")
    engine: str = _f("auto", "rollout engine: 'fast' (CPU decoder), 'hf' (transformers generate), or auto",
                     ("auto", "fast", "hf"))
    rollout_quant: str = _f("none", "weights used for sampling: 'none' (same as training) or 'int8'",
                            ("none", "int8"))
    ignore_eos: bool = _f(False, "always generate max_new_tokens (for benchmarks that need equal work per step)")


@dataclass
class AlgoConfig:
    """Algorithm knobs. `None` means 'take the value from the recipe'."""

    recipe: str = _f("grpo", "named recipe that sets the knobs below (see `grpolab recipes`)")
    advantage_baseline: str | None = _f(None, "baseline subtracted from rewards", ("mean", "leave-one-out"))
    advantage_scale: str | None = _f(None, "divide advantages by the group std, the batch std, or not at all",
                                     ("group-std", "batch-std", "none"))
    std_eps: float | None = _f(None, "epsilon added to the std before dividing")
    loss_aggregation: str | None = _f(None, "how per-token losses become one number",
                                      ("seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm",
                                       "seq-mean-token-sum"))
    objective: str | None = _f(None, "policy objective: PPO clip, CISPO (clipped detached IS weight), plain PG",
                               ("clip", "cispo", "pg"))
    ratio_level: str | None = _f(None, "importance ratio per token or per sequence (GSPO)", ("token", "sequence"))
    clip_low: float | None = _f(None, "lower clip epsilon: ratio >= 1 - clip_low")
    clip_high: float | None = _f(None, "upper clip epsilon: ratio <= 1 + clip_high (clip-higher when > clip_low)")
    beta: float | None = _f(None, "KL penalty weight against the reference policy (0 = no KL)")
    kl_estimator: str | None = _f(None, "KL estimator", ("none", "k1", "k2", "k3", "k3-unbiased"))
    num_updates: int | None = _f(None, "optimizer passes over each batch of rollouts (mu)")
    tis_cap: float | None = _f(None, "truncated importance sampling cap on pi_old/pi_sampler (0 = off)")
    offpolicy_mask_delta: float | None = _f(None, "mask A<0 sequences whose mean log-ratio drift exceeds delta "
                                            "(0 = off)")
    keep_sampling_mask: bool | None = _f(None, "re-apply the top-k/top-p mask when scoring log-probs")
    zero_variance: str | None = _f(None, "groups whose rewards are all equal: keep them (they carry no gradient "
                                   "and cost nothing) or filter them out", ("keep", "filter"))
    resample_budget: int | None = _f(None, "extra prompt groups a step may draw to replace filtered groups")
    overlong: str | None = _f(None, "truncated completions: leave, mask from the loss, or soft length penalty",
                              ("none", "mask", "penalty"))
    overlong_buffer: int | None = _f(None, "tokens before max_new_tokens where the soft penalty starts "
                                     "(0 = a quarter of max_new_tokens)")


@dataclass
class TrainConfig:
    steps: int = _f(100, "optimizer steps (each on B x G fresh completions)")
    max_minutes: float = _f(0.0, "stop after this much training wall time, evaluation excluded (0 = no limit)")
    prompts_per_step: int = _f(1, "prompts per step (B); N = B x G completions")
    lr: float = _f(1e-5, "peak learning rate (AdamW)")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    adam_beta1: float = _f(0.9, "AdamW beta1")
    adam_beta2: float = _f(0.99, "AdamW beta2")
    warmup_steps: int = _f(0, "linear warm-up steps, then constant")
    grad_clip: float = _f(1.0, "clip the gradient norm to this (0 = off)")
    micro_batch: int = _f(0, "completions per forward/backward pass (0 = all N at once)")
    seed: int = _f(0, "seed for sampling and every other random draw of the run")


@dataclass
class EvalConfig:
    eval_every: int = _f(0, "evaluate on the held-out split every this many steps (0 = only before and after)")
    eval_every_minutes: float = _f(0.0, "also evaluate each time this many minutes of training time have passed "
                                   "(the clock pauses during evaluation; 0 = off)")
    eval_max_new_tokens: int = _f(0, "token limit for evaluation completions (0 = same as training)")
    eval_batch: int = _f(64, "prompts decoded together during evaluation")
    eval_before_after: bool = _f(True, "evaluate before training and after it (off for timing runs)")


@dataclass
class RunConfig:
    out_dir: str = _f("runs", "directory that holds run directories")
    run_name: str = _f("", "run directory name (default: time stamp, task and recipe)")
    checkpoint_every: int = _f(50, "save a checkpoint every this many steps (0 = only at the end and on Ctrl-C)")
    keep_checkpoints: int = _f(2, "recent checkpoints kept on disk")
    export: bool = _f(True, "export a standard Hugging Face model directory at the end")
    log_rollouts: bool = _f(True, "write every completion with its rewards and advantage to rollouts.jsonl")
    quiet: bool = _f(False, "no progress bar or summary on the console")


SECTIONS: dict[str, type] = {
    "model": ModelConfig, "task": TaskConfig, "reward": RewardConfig, "rollout": RolloutConfig,
    "algo": AlgoConfig, "train": TrainConfig, "eval": EvalConfig, "run": RunConfig,
}


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)

    # ---- construction -------------------------------------------------------------------------------------
    @classmethod
    def from_flat(cls, values: Mapping[str, Any] | None = None, /, **kw: Any) -> "Config":
        """Build from flat field names (`group_size=8`), expand the recipe, validate."""
        cfg = cls()
        cfg.set_flat({**(values or {}), **kw})
        return cfg.finalize()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Config":
        """Build from a nested dict (config.json or TOML sections); flat keys at the top level also work."""
        flat: dict[str, Any] = {}
        for key, value in data.items():
            if key in SECTIONS and isinstance(value, Mapping):
                known = {f.name for f in fields(SECTIONS[key])}
                for k, v in value.items():
                    k = k.replace("-", "_")
                    if k not in known:
                        raise unknown_choice(f"setting '{k}' in section [{key}]", k, sorted(known))
                    flat[k] = v
            else:
                flat[key] = value
        return cls.from_flat(flat)

    @classmethod
    def from_file(cls, path: str | Path) -> "Config":
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as e:
            raise UserError(f"cannot read config file '{path}': {e.strerror}. Fix: give an existing .toml or .json")
        try:
            data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        except (ValueError, tomllib.TOMLDecodeError) as e:
            raise UserError(f"config file '{path}' is not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {e}")
        return cls.from_dict(data)

    def set_flat(self, values: Mapping[str, Any]) -> None:
        index = field_index()
        for raw_key, value in values.items():
            key = raw_key.replace("-", "_")
            if key not in index:
                raise unknown_choice("setting", raw_key, sorted(index), "Run `grpolab train --help` for the list.")
            section, f = index[key]
            setattr(getattr(self, section), key, _coerce(key, value, f))

    def finalize(self) -> "Config":
        """Expand the recipe into concrete knobs and validate everything. Returns self."""
        if self.algo.tis_cap is None and self.rollout.rollout_quant != "none":
            # low-precision sampling makes the batch slightly off-policy: correct it unless told otherwise
            self.algo.tis_cap = 2.0
        expand_recipe(self.algo)
        validate(self)
        return self

    # ---- output -------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def flat(self) -> dict[str, Any]:
        return {k: v for section in self.to_dict().values() for k, v in section.items()}

    def replace(self, **kw: Any) -> "Config":
        """A validated copy with some flat fields changed (the recipe is not re-expanded over set knobs)."""
        new = Config.from_dict(self.to_dict())
        if "kl_estimator" not in kw and new.algo.kl_estimator == "none":
            new.algo.kl_estimator = None  # derived from beta, so let a new beta choose it again
        new.set_flat(kw)
        return new.finalize()


def field_index() -> dict[str, tuple[str, dataclasses.Field]]:
    """Flat field name -> (section name, dataclass field)."""
    out: dict[str, tuple[str, dataclasses.Field]] = {}
    for section, klass in SECTIONS.items():
        for f in fields(klass):
            assert f.name not in out, f"duplicate config field {f.name}"
            out[f.name] = (section, f)
    return out


def _base_type(f: dataclasses.Field) -> str:
    t = str(f.type)
    for name in ("bool", "int", "float", "str"):
        if t.startswith(name):
            return name
    raise AssertionError(f"unsupported config type {t}")


def _coerce(key: str, value: Any, f: dataclasses.Field) -> Any:
    """Convert strings from the command line or TOML into the field's type, with a clear error."""
    kind = _base_type(f)
    if value is None:
        return None
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            s = str(value).strip().lower()
            if s in ("1", "true", "yes", "on"):
                return True
            if s in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        flag = "--" + key.replace("_", "-")
        raise UserError(f"{flag} expects {'true/false' if kind == 'bool' else 'an ' + kind if kind == 'int' else 'a ' + kind}, got '{value}'") from None


def expand_recipe(algo: AlgoConfig) -> None:
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


def validate(cfg: Config) -> None:
    """Raise UserError naming the value, what is allowed, and the fix, for the first bad setting found."""
    for section in SECTIONS:
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
    _check(t.lr > 0, f"--lr {t.lr} must be > 0. Fix: --lr 1e-5 (full fine-tune) or 1e-4 (LoRA)")
    _check(t.micro_batch >= 0, f"--micro-batch {t.micro_batch} must be >= 0 (0 = all completions at once)")
    _check(t.grad_clip >= 0, f"--grad-clip {t.grad_clip} must be >= 0 (0 = off)")
    _check(t.warmup_steps >= 0, f"--warmup-steps {t.warmup_steps} must be >= 0")
    _check(0 <= t.adam_beta1 < 1 and 0 <= t.adam_beta2 < 1, "--adam-beta1/--adam-beta2 must be in [0, 1)")
    _check(m.lora_rank >= 0, f"--lora-rank {m.lora_rank} must be >= 0 (0 = full fine-tune)")
    _check(0 <= m.lora_dropout < 1, f"--lora-dropout {m.lora_dropout} must be in [0, 1)")
    _check(cfg.task.eval_size >= 1, f"--eval-size {cfg.task.eval_size} must be at least 1")
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
