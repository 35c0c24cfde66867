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
from grpolab.validation import expand_recipe, validate


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
    curriculum: bool = _f(False, "train from an easier level up to the configured one (--digits / --level): start "
                          "where the base pass rate shows signal, promote as the training pass rate rises")
    curriculum_start: int = _f(0, "curriculum: level to start at (0 = choose from the measured base pass rate)")
    curriculum_min_pass: float = _f(0.15, "curriculum: start at the hardest level whose base pass rate reaches this")
    curriculum_problems: int = _f(16, "curriculum: training problems sampled per level to measure the base pass rate")
    curriculum_promote: float = _f(0.7, "curriculum: promote when the pass rate over the window reaches this")
    curriculum_window: int = _f(16, "curriculum: groups in the promotion window")
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
    rollout_quant: str = _f("none", "weights used for sampling: 'none' (fp32, same as training), 'fp16' (fp16 "
                            "weights, fp32 activations: ~2x faster decoding at G=8, nearly on-policy), 'bf16' (bf16 "
                            "weights and activations through oneDNN: for CPUs with AMX or AVX512-BF16, ~1.7x fp16 "
                            "at 32+ rows; refused elsewhere) or 'int8' (fast, but a visibly different policy on "
                            "small models)", ("none", "fp16", "bf16", "int8"))
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
    steps_per_generation: int = _f(1, "sample the prompts of this many steps in one rollout call, then take the "
                                   "steps in order (TRL's steps_per_generation): a wider decoding batch is several "
                                   "times faster per token on a CPU; a group trained j steps after it was sampled "
                                   "is corrected by the clipped ratio to its sampling policy's log-probs")
    lr: float = _f(1e-5, "peak learning rate (AdamW)")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    adam_beta1: float = _f(0.9, "AdamW beta1")
    adam_beta2: float = _f(0.99, "AdamW beta2")
    warmup_steps: int = _f(0, "linear warm-up steps, then the schedule below")
    lr_schedule: str = _f("constant", "after warm-up: keep the peak learning rate, or decay it over the run's budget "
                          "(the larger of steps done / --steps and training time / --max-minutes)",
                          ("constant", "linear", "cosine"))
    min_lr_ratio: float = _f(0.0, "where a decaying schedule ends, as a fraction of --lr")
    grad_clip: float = _f(1.0, "clip the gradient norm to this (0 = off)")
    micro_batch: int = _f(0, "completions per forward/backward pass (0 = all N at once)")
    empty_steps: str = _f("momentum", "a step where no row carries a gradient (every group zero-variance): "
                          "'momentum' still takes the AdamW step with a zero gradient, so its moments keep moving "
                          "the weights (what TRL and other PyTorch trainers do); 'skip' leaves weights, optimizer "
                          "state and schedule untouched", ("momentum", "skip"))
    seed: int = _f(0, "seed for sampling and every other random draw of the run")
    autocast: str = _f("off", "arithmetic of the update's forward and backward: 'off' (fp32, as the weights) or "
                       "'bf16' (torch.autocast: the decoder's matrix products in bfloat16; weights, gradients, AdamW "
                       "state and the log-softmax stay fp32). For CPUs with AMX or AVX512-BF16, where the products "
                       "run ~3x faster (no whole-step gain measured yet: bench/NOTES.md 13); refused on CPUs "
                       "without them, where bf16 is ~100x slower than fp32", ("off", "bf16"))
    allocator: str = _f("fast", "heap policy: 'fast' reuses freed memory (quicker steps, higher peak RAM), 'lean' "
                        "returns it at once (lowest peak RAM), 'system' leaves the C library's default",
                        ("fast", "lean", "system"))


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
        if self.algo.tis_cap is None and (self.rollout.rollout_quant != "none" or self.train.autocast != "off"):
            # sampling and training in different precisions make the batch slightly off-policy: correct it unless
            # told otherwise
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
