"""Predict peak RAM and step time of a setting before running it, and recommend settings that fit.

Memory is counted part by part from the model's config (weights, gradients, AdamW state, a reference copy,
the KV cache of the rollouts, activations kept for backward, the log-prob chunks, the Python/torch
runtime). Time comes from a short calibration on this machine: one decode measurement and one
forward/backward measurement, scaled by the FLOPs and decode steps of the setting.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from grpolab.errors import UserError

GB = 1e9
RUNTIME_BYTES = 0.30 * GB  # python + torch + transformers + grpolab after import, measured on CPU Linux
ALLOCATOR_SLACK = 1.10  # freed-but-held heap memory; measured 5-15% on glibc
# Under `--allocator fast` (large blocks kept in the heap, never trimmed) the freed activations of one update
# stay resident as a fragmented heap; the trainable state (gradients, AdamW moments) created after backward
# reuses part of it. Fitted on bench/results/plan_check (LoRA rows, where nothing reuses it): the heap keeps
# ~0.7x the activations beyond the part-by-part count (bench/NOTES.md, section 6b).
FAST_HEAP_KEPT = 0.70
# forward/backward time relative to `fast` (page faults on fresh blocks; bench/NOTES.md section 3, G=8 T=128)
MATH_ATTENTION_BYTES = 256 << 20  # the cap of logprobs.MATH_ATTENTION_BYTES (plan.py imports no torch)
UPDATE_SLOWDOWN = {"fast": 1.0, "system": 8.7 / 6.7, "lean": 10.5 / 6.7}


@dataclass(frozen=True)
class Arch:
    """What the planner needs from a causal LM config."""

    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    tied: bool

    @classmethod
    def from_config(cls, c: Any) -> "Arch":
        heads = c.num_attention_heads
        return cls(vocab=c.vocab_size, hidden=c.hidden_size, layers=c.num_hidden_layers, heads=heads,
                   kv_heads=getattr(c, "num_key_value_heads", None) or heads,
                   head_dim=getattr(c, "head_dim", None) or c.hidden_size // heads,
                   intermediate=c.intermediate_size, tied=bool(getattr(c, "tie_word_embeddings", False)))

    @property
    def linear_params_per_layer(self) -> int:
        d, q, kv, i = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        return d * q + 2 * d * kv + q * d + 3 * d * i

    @property
    def params(self) -> int:
        emb = self.vocab * self.hidden * (1 if self.tied else 2)
        return emb + self.layers * (self.linear_params_per_layer + 2 * self.hidden) + self.hidden

    def lora_params(self, rank: int) -> int:
        d, q, kv, i = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        shapes = [(d, q), (d, kv), (d, kv), (q, d), (d, i), (d, i), (i, d)]
        return self.layers * sum(rank * (a + b) for a, b in shapes)

    @property
    def activation_floats_per_token(self) -> int:
        """Floats kept for backward per token, all layers (fp32 eager/SDPA Llama block)."""
        d, kv, i = self.hidden, self.kv_heads * self.head_dim, self.intermediate
        return self.layers * (8 * d + 3 * kv + 4 * i + self.heads)

    @property
    def kv_floats_per_token(self) -> int:
        return self.layers * 2 * self.kv_heads * self.head_dim


@dataclass
class Setting:
    group_size: int
    prompts_per_step: int
    max_new_tokens: int
    prompt_tokens: int
    lora_rank: int
    micro_batch: int  # 0 = all rows
    gradient_checkpointing: bool
    reference_copy: bool  # full fine-tune with KL: a frozen copy of the weights
    rollout_quant: str
    bytes_per_param: int = 4
    allocator: str = "fast"
    autocast: str = "off"
    steps_per_generation: int = 1  # one rollout call samples the rows of this many steps

    @classmethod
    def from_config(cls, cfg: Any, prompt_tokens: int = 48) -> "Setting":
        return cls(cfg.rollout.group_size, cfg.train.prompts_per_step, cfg.rollout.max_new_tokens, prompt_tokens,
                   cfg.model.lora_rank, cfg.train.micro_batch, cfg.model.gradient_checkpointing,
                   cfg.algo.beta > 0 and cfg.model.lora_rank == 0, cfg.rollout.rollout_quant,
                   allocator=cfg.train.allocator, autocast=cfg.train.autocast,
                   steps_per_generation=cfg.train.steps_per_generation)

    @property
    def rows(self) -> int:
        return self.group_size * self.prompts_per_step


@dataclass
class MemoryPlan:
    parts: dict[str, float]  # bytes
    peak: float

    def table(self) -> str:
        rows = [f"  {k:30s} {v / GB:6.2f} GB" for k, v in self.parts.items()]
        return "\n".join(rows + [f"  {'predicted peak RSS':30s} {self.peak / GB:6.2f} GB"])


def predict_memory(arch: Arch, s: Setting) -> MemoryPlan:
    b = s.bytes_per_param
    trainable = arch.lora_params(s.lora_rank) if s.lora_rank else arch.params
    weights = arch.params * b + (arch.lora_params(s.lora_rank) * b if s.lora_rank else 0)
    parts: dict[str, float] = {
        "runtime (python, torch)": RUNTIME_BYTES,
        "weights": weights,
        "gradients": trainable * b,
        "AdamW state": 2 * trainable * b,
    }
    if s.reference_copy:
        parts["reference copy"] = arch.params * b
    if s.autocast == "bf16":  # autocast keeps a bf16 copy of each decoder weight it multiplies until backward
        parts["bf16 weight copies (autocast)"] = 2 * arch.layers * arch.linear_params_per_layer
    if s.rollout_quant in ("int8", "fp16", "bf16"):
        per = 1 if s.rollout_quant == "int8" else 2
        parts[f"{s.rollout_quant} sampler weights"] = per * (arch.layers * arch.linear_params_per_layer +
                                                              arch.vocab * arch.hidden)
    kv = s.rows * s.steps_per_generation * (s.prompt_tokens + s.max_new_tokens) * arch.kv_floats_per_token * 4
    rows = s.micro_batch or s.rows
    # tokens in one micro-batch's graph: the completions plus one prompt pass per group it touches
    groups = min(s.prompts_per_step, rows) if not s.gradient_checkpointing else rows
    tokens = rows * s.max_new_tokens + groups * s.prompt_tokens
    if s.gradient_checkpointing:
        acts = tokens * arch.layers * arch.hidden * 4 + tokens * arch.activation_floats_per_token // arch.layers * 4
    else:
        acts = tokens * arch.activation_floats_per_token * 4
    logits = 3 * min(256, rows * s.max_new_tokens) * arch.vocab * 4
    lm_head_grad = arch.vocab * arch.hidden * 4 if not s.lora_rank else 0  # dense grad of the head, then summed
    parts["rollout KV cache"] = kv
    # under bf16 autocast on a CPU, short passes keep the plain attention kernel's probabilities for backward
    # (logprobs.py caps them)
    L = s.prompt_tokens + s.max_new_tokens
    if s.autocast == "bf16" and not s.gradient_checkpointing:
        acts += min(rows * arch.heads * L * L * 4 * arch.layers, MATH_ATTENTION_BYTES)
    parts["activations (one micro-batch)"] = acts
    parts["log-prob chunks"] = logits + lm_head_grad
    static = sum(v for k, v in parts.items() if k not in ("rollout KV cache", "activations (one micro-batch)",
                                                           "log-prob chunks", "gradients"))
    # what the `fast` heap keeps of earlier updates' activations, less what the trainable state reuses
    kept = max(0.0, FAST_HEAP_KEPT * acts - 3 * trainable * b) if s.allocator == "fast" else 0.0
    if kept:
        parts["heap kept (--allocator fast)"] = kept
    generation_peak = static + kv
    # backward frees each layer's saved activations as it creates that layer's gradients: at any point the
    # two together are about the larger of them (measured: full fine-tune under `lean`, bench/NOTES.md 6c)
    update_peak = static + max(parts["gradients"], acts) + logits + lm_head_grad + kept
    return MemoryPlan(parts, ALLOCATOR_SLACK * max(generation_peak, update_peak))


# ---------------------------------------------------------------------------------------------------------------
# time
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Calibration:
    """Seconds per decode step at a few batch sizes, and training throughput, measured on this machine."""

    decode_step_s: dict[int, float] = field(default_factory=dict)  # rows -> seconds per token step
    train_gflops: float = 120.0  # sustained forward+backward GFLOP/s
    train_gflops_bf16: float = 0.0  # the same under --autocast bf16 (0 = not measured: the CPU lacks native bf16)
    optimizer_s_per_gparam: float = 0.6  # AdamW step seconds per 1e9 trainable parameters
    machine: str = ""

    def decode_s(self, rows: int) -> float:
        if not self.decode_step_s:
            return 0.0
        pts = sorted(self.decode_step_s.items())
        if rows <= pts[0][0]:
            return pts[0][1]
        for (r0, t0), (r1, t1) in zip(pts, pts[1:]):
            if rows <= r1:
                return t0 + (t1 - t0) * (rows - r0) / (r1 - r0)
        (r0, t0), (r1, t1) = pts[-2], pts[-1]
        return t1 + (t1 - t0) / (r1 - r0) * (rows - r1)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> "Calibration | None":
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        data["decode_step_s"] = {int(k): v for k, v in data["decode_step_s"].items()}
        return cls(**data)


@dataclass
class TimePlan:
    generation_s: float
    update_s: float

    @property
    def step_s(self) -> float:
        return self.generation_s + self.update_s


# Decode time against fp32 by sampling weights, at 8 and at 32+ rows, linear in between (bench/NOTES.md 12, 14:
# at 8 rows decoding is bound by the bytes of weights read; at 32+ by arithmetic, where grpolab's fp16 kernel
# runs at fp32's rate and AMX's bf16 at ~1.6x)
QUANT_SPEEDUP = {"int8": (0.35, 0.6), "fp16": (0.5, 1.0), "bf16": (0.7, 0.62)}


def quant_speedup(quant: str, rows: int) -> float:
    if quant not in QUANT_SPEEDUP:
        return 1.0
    at8, at32 = QUANT_SPEEDUP[quant]
    f = min(1.0, max(0.0, (rows - 8) / 24))
    return at8 + (at32 - at8) * f


def predict_time(arch: Arch, s: Setting, cal: Calibration, decode_fraction: float = 1.0) -> TimePlan:
    """Seconds per step when every row generates `decode_fraction` of max_new_tokens and every row trains."""
    steps = s.max_new_tokens * decode_fraction
    # one rollout call decodes the rows of steps_per_generation steps together; its time is shared by them
    S = s.steps_per_generation
    generation = steps * cal.decode_s(s.rows * S) * quant_speedup(s.rollout_quant, s.rows * S) / S
    flop_token = 2 * arch.params
    tokens = s.rows * s.max_new_tokens * decode_fraction + s.prompts_per_step * s.prompt_tokens
    mult = 2 if s.lora_rank else 3  # LoRA: no gradient for the frozen weights
    if s.gradient_checkpointing:
        mult += 1
    trainable = arch.lora_params(s.lora_rank) if s.lora_rank else arch.params
    rate = cal.train_gflops_bf16 if s.autocast == "bf16" and cal.train_gflops_bf16 else cal.train_gflops
    compute = tokens * flop_token * mult / (rate * 1e9) * UPDATE_SLOWDOWN.get(s.allocator, 1.0)
    update = compute + trainable / 1e9 * cal.optimizer_s_per_gparam
    return TimePlan(generation, update)


def calibrate(model: Any, tokenizer: Any, rows: tuple[int, ...] = (8, 32, 64)) -> Calibration:
    """A short measurement (~20-40 s for SmolLM2-135M): decode steps at a few batch sizes, one fwd/bwd."""
    import torch

    from grpolab.logprobs import token_logprobs
    from grpolab.rollout import build_engine, SamplingParams
    from grpolab.runtime import autocast, native_bf16, set_allocator

    set_allocator("fast")  # the trainer's default heap policy; predictions for others scale from it
    engine = build_engine("auto", model, [], tokenizer.pad_token_id)
    prompt = tokenizer("calibration prompt for the planner")["input_ids"]
    gen = torch.Generator().manual_seed(0)
    cal = Calibration()
    for n in rows:
        engine.generate([prompt], SamplingParams(n, 4, 1.0), gen)  # warm-up
        t0 = time.perf_counter()
        engine.generate([prompt], SamplingParams(n, 24, 1.0), gen)
        t1 = time.perf_counter()
        engine.generate([prompt], SamplingParams(n, 8, 1.0), gen)
        t2 = time.perf_counter()
        cal.decode_step_s[n] = max(((t1 - t0) - (t2 - t1)) / 16, 1e-4)  # per step, prefill cancelled out
    ids = torch.randint(10, 1000, (8, 64), generator=gen)
    model.train()
    arch = Arch.from_config(model.get_base_model().config if hasattr(model, "get_base_model") else model.config)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    mult = 3 if trainable > arch.params / 2 else 2
    device = next(model.parameters()).device

    def gflops(kind: str) -> float:
        for i in range(2):
            t0 = time.perf_counter()
            with autocast(kind, device):
                lp, _ = token_logprobs(model, [prompt] * 8, ids, torch.ones(8, 64), 1.0, tokenizer.pad_token_id)
            lp.sum().backward()
            dt = time.perf_counter() - t0
        model.zero_grad(set_to_none=True)
        return (8 * 64 + len(prompt)) * 2 * arch.params * mult / dt / 1e9

    cal.train_gflops = gflops("off")
    if native_bf16(device):
        cal.train_gflops_bf16 = gflops("bf16")
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.zeros_like(p)
    opt = torch.optim.AdamW(params, lr=1e-12)
    opt.step()
    t0 = time.perf_counter()
    opt.step()
    cal.optimizer_s_per_gparam = (time.perf_counter() - t0) / (trainable / 1e9)
    model.zero_grad(set_to_none=True)
    return cal


def available_memory() -> float:
    import psutil

    return float(psutil.virtual_memory().available)


def parse_size(text: str) -> float:
    t = text.strip().upper().replace("IB", "B")
    units = {"TB": 1e12, "GB": 1e9, "MB": 1e6, "T": 1e12, "G": 1e9, "M": 1e6}
    for suffix, mult in units.items():
        if t.endswith(suffix):
            try:
                return float(t[: -len(suffix)]) * mult
            except ValueError:
                break
    raise UserError(f"--memory '{text}' is not a size; write e.g. 8GB or 512MB")


def recommend(arch: Arch, s: Setting, limit: float) -> list[tuple[str, Setting, float]]:
    """Settings near `s` that fit in `limit` bytes, cheapest change first: (what changed, setting, peak)."""
    from dataclasses import replace

    options: list[tuple[str, Setting]] = []
    if s.autocast != "off":  # the same updates in fp32, without autocast's bf16 weight copies
        options.append(("--autocast off", replace(s, autocast="off")))
    if s.allocator == "fast":  # same updates, only slower (bench/NOTES.md section 3: update 6.7 -> 10.5 s)
        options.append(("--allocator lean", replace(s, allocator="lean")))
    for mb in (4, 2, 1):
        if mb < (s.micro_batch or s.rows):
            options.append((f"--micro-batch {mb}", replace(s, micro_batch=mb)))
    options.append(("--gradient-checkpointing --micro-batch 1",
                    replace(s, gradient_checkpointing=True, micro_batch=1)))
    if not s.lora_rank:
        options.append(("--lora-rank 16 --lr 1e-4", replace(s, lora_rank=16, reference_copy=False)))
        options.append(("--lora-rank 16 --micro-batch 1", replace(s, lora_rank=16, micro_batch=1,
                                                                   reference_copy=False)))
    for T in (s.max_new_tokens // 2, s.max_new_tokens // 4):
        if T >= 16:
            options.append((f"--max-new-tokens {T} --micro-batch 1", replace(s, max_new_tokens=T, micro_batch=1)))
    fits = []
    for what, opt in options:
        peak = predict_memory(arch, opt).peak
        if peak <= limit:
            fits.append((what, opt, peak))
    return fits


# ---------------------------------------------------------------------------------------------------------------
# entry points used by the CLI and the trainer
# ---------------------------------------------------------------------------------------------------------------
def arch_for(model_name: str) -> Arch:
    """Read the model's config (no weights) and return its planner description."""
    from transformers import AutoConfig

    from grpolab.models import resolve_model_path

    return Arch.from_config(AutoConfig.from_pretrained(resolve_model_path(model_name)))


def preflight(cfg: Any, prompt_tokens: int = 48) -> MemoryPlan:
    """Refuse a setting that cannot fit in the memory available now, before anything is loaded."""
    arch = arch_for(cfg.model.model)
    setting = Setting.from_config(cfg, prompt_tokens)
    plan = predict_memory(arch, setting)
    available = available_memory()
    if plan.peak > available:
        fits = recommend(arch, setting, available)
        hint = "; ".join(f"{what} (~{peak / GB:.1f} GB)" for what, _, peak in fits[:3]) or \
            "a smaller model or fewer rollouts (--group-size) and tokens (--max-new-tokens)"
        raise UserError(f"this setting needs about {plan.peak / GB:.1f} GB of RAM at its peak but {available / GB:.1f} GB "
                        f"is available (G={setting.group_size}, B={setting.prompts_per_step}, "
                        f"T={setting.max_new_tokens}). Settings that fit: {hint}. See `grpolab plan`.")
    return plan


def grid(arch: Arch, base: Setting, cal: Calibration | None, groups=(4, 8, 16),
         tokens=(128, 256, 512, 1024)) -> str:
    """A text table: rollouts (G) x max new tokens -> predicted peak RAM (and seconds per step)."""
    from dataclasses import replace

    head = "rollouts \\ max tokens " + "".join(f"{t:>16d}" for t in tokens)
    lines = [head]
    for g in groups:
        cells = []
        for t in tokens:
            s = replace(base, group_size=g, max_new_tokens=t)
            mem = predict_memory(arch, s).peak / GB
            cell = f"{mem:.1f} GB"
            if cal is not None:
                cell += f" {predict_time(arch, s, cal).step_s:5.0f}s"
            cells.append(f"{cell:>16s}")
        lines.append(f"{g:>22d}" + "".join(cells))
    return "\n".join(lines)
