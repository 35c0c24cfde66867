"""Per-token log-probs of completions under the policy, computed so the (N, T, V) logits never exist.

The decoder runs once over prompt + completion, in the cheaper of two layouts (`_layout`): rows padded to the
longest completion after one shared prompt pass per group, or the rows of a group packed back to back after
their prompt under a mask that keeps them apart (no padding). The vocabulary projection runs only at
completion positions that count (mask = 1), in chunks of rows, inside a custom autograd function that recomputes each
chunk's logits in backward instead of storing them. Log-probs come from logits divided by the sampling
temperature: the distribution the tokens were drawn from.
"""

from __future__ import annotations

import contextlib
from typing import Any, Sequence

import torch

from grpolab.passes import (_hidden_full, _hidden_packed, _hidden_shared, _prefix_lengths,  # noqa: F401
                             _select_cache_rows, pack_rows, packed_lengths)

CHUNK_ROWS = 256  # rows of (rows x V) logits alive at once: 256 x 49k x 4 B = 50 MB for SmolLM2


class _TokenLogprob(torch.autograd.Function):
    """log softmax(h W^T / temp)[target] and the entropy, per row of h, chunk by chunk.

    One (CHUNK_ROWS x V) buffer is reused for every chunk and the softmax is done in place, so the step
    allocates no vocabulary-sized tensors beyond it (fresh large allocations cost page faults on a CPU).
    With `threshold` (one value per row), logits below it are masked out first (the sampler's top-k/top-p
    kept set, DeepSeek-V3.2's "keep sampling mask"); the target token itself is always kept.
    """

    @staticmethod
    def _logits_into(buf: torch.Tensor, h: torch.Tensor, weight: torch.Tensor, temperature: float,
                     targets: torch.Tensor, threshold: torch.Tensor | None) -> torch.Tensor:
        logits = buf[: h.shape[0]]
        torch.matmul(h, weight.t(), out=logits)
        if temperature != 1.0:
            logits.div_(temperature)
        if threshold is not None:
            drop = logits < threshold[:, None]
            drop.scatter_(1, targets[:, None], False)
            logits.masked_fill_(drop, float("-inf"))
        return logits

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                temperature: float, threshold: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        M = hidden.shape[0]
        logp = torch.empty(M, dtype=torch.float32, device=hidden.device)
        entropy = torch.empty_like(logp)
        buf = torch.empty((min(CHUNK_ROWS, M), weight.shape[0]), dtype=hidden.dtype, device=hidden.device)
        for s in range(0, M, CHUNK_ROWS):
            e = min(s + CHUNK_ROWS, M)
            thr = None if threshold is None else threshold[s:e]
            logits = _TokenLogprob._logits_into(buf, hidden[s:e], weight, temperature, targets[s:e], thr)
            picked = logits.gather(1, targets[s:e, None]).squeeze(1)
            top = logits.amax(dim=-1, keepdim=True)
            ex = logits.sub_(top).exp_()  # exp(logit - max), in place
            total = ex.sum(dim=-1)
            lse = top.squeeze(1) + total.log()
            logp[s:e] = picked - lse
            # H = lse - sum p * logit = log(total) - sum(ex * log ex) / total   (0 log 0 = 0)
            entropy[s:e] = total.log() + torch.special.entr(ex).sum(dim=-1) / total
        ctx.save_for_backward(hidden, weight, targets, threshold if threshold is not None else torch.empty(0))
        ctx.has_threshold = threshold is not None
        ctx.temperature = temperature
        ctx.mark_non_differentiable(entropy)
        return logp, entropy

    @staticmethod
    def backward(ctx: Any, grad_logp: torch.Tensor, _grad_entropy: torch.Tensor):
        hidden, weight, targets, threshold = ctx.saved_tensors
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        M = hidden.shape[0]
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = None
        buf = torch.empty((min(CHUNK_ROWS, M), weight.shape[0]), dtype=hidden.dtype, device=hidden.device)
        for s in range(0, M, CHUNK_ROWS):
            e = min(s + CHUNK_ROWS, M)
            h = hidden[s:e]
            g = grad_logp[s:e].to(hidden.dtype)
            thr = threshold[s:e] if ctx.has_threshold else None
            logits = _TokenLogprob._logits_into(buf, h, weight, ctx.temperature, targets[s:e], thr)
            # d logp[target] / d logits = onehot(target) - softmax(logits), then the 1/temperature of the scaling
            probs = logits.sub_(logits.amax(dim=-1, keepdim=True)).exp_()
            probs.mul_((-g / probs.sum(dim=-1))[:, None])
            dlogits = probs.scatter_add_(1, targets[s:e, None], g[:, None])
            if ctx.temperature != 1.0:
                dlogits.div_(ctx.temperature)
            if need_h:
                torch.matmul(dlogits, weight, out=grad_h[s:e])
            if need_w:  # the first chunk writes the gradient, the others add to it: no zero-filled buffer
                grad_w = torch.mm(dlogits.t(), h) if grad_w is None else grad_w.addmm_(dlogits.t(), h)
        return grad_h, grad_w, None, None, None


def _parts(model: Any) -> tuple[Any, Any]:
    """The decoder stack (without the vocabulary projection) and the lm_head of a causal LM (peft or not)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model, base.lm_head


def checkpointing(model: Any) -> bool:
    """Whether activation (gradient) checkpointing is on in any of the model's modules, without the deprecated
    `is_gradient_checkpointing` property of newer transformers."""
    return any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())


def _can_share(model: Any, prompts: Sequence[Sequence[int]]) -> bool:
    if checkpointing(model):
        # transformers turns the KV cache off under gradient checkpointing in training; refused in eval mode too,
        # so that old log-probs scored in eval mode take the layout the update's pass takes (an exact ratio of 1)
        return False
    return len({tuple(p) for p in prompts}) < len(prompts)


LAYOUT = "auto"  # how rows go through the decoder: "auto" (the cheaper of the two below), "packed", "shared", "full"
PACKABLE_ATTENTION = ("sdpa", "eager")  # kernels that take an arbitrary (U, 1, L, L) mask
# The packed mask is turned into a float copy per layer by sdpa (and kept for backward): packing is refused when
# those copies, 4 bytes per (U, L, L) entry and layer, would pass this (SmolLM2, G=8, 64 tokens: ~20 MB)
PACKED_MASK_BYTES = 256 << 20
# layer kinds that carry state across positions (SSM, linear attention, convolutions) would run through all the
# rows of a packed sequence: models with any such module are never packed
_STATEFUL = ("mamba", "ssm", "linearattention", "linear_attention", "gateddelta", "conv", "rwkv", "recurrent")


def _decoder_params(decoder: Any) -> int:
    """Weights multiplied once per token by the decoder's layers (embeddings excluded), cached on the module."""
    count = getattr(decoder, "_grpolab_layer_params", None)
    if count is None:
        layers = getattr(decoder, "layers", None)
        count = sum(p.numel() for p in (layers.parameters() if layers is not None else decoder.parameters()))
        decoder._grpolab_layer_params = count
    return count


def _plain_attention_layers(decoder: Any) -> bool:
    """Every decoder layer is attention (a `self_attn`) and no module keeps state across positions; cached."""
    ok = getattr(decoder, "_grpolab_plain_layers", None)
    if ok is None:
        layers = getattr(decoder, "layers", None)
        ok = (layers is not None and len(layers) > 0 and all(hasattr(layer, "self_attn") for layer in layers)
              and not any(word in type(m).__name__.lower() for m in decoder.modules() for word in _STATEFUL))
        decoder._grpolab_plain_layers = ok
    return ok


def _can_pack(decoder: Any, mask: torch.Tensor, length: int, sequences: int = 1) -> bool:
    cfg = getattr(decoder, "config", None)
    if cfg is None or getattr(cfg, "_attn_implementation", None) not in PACKABLE_ATTENTION:
        return False  # e.g. flash-attention 2 takes no custom mask
    if any(kind != "full_attention" for kind in (getattr(cfg, "layer_types", None) or [])):
        return False  # sliding-window or chunked layers: their own masks, not this one
    if not _plain_attention_layers(decoder):
        return False
    layers = getattr(cfg, "num_hidden_layers", 0) or 1
    if 4 * sequences * length * length * layers > PACKED_MASK_BYTES:
        return False
    window = getattr(cfg, "sliding_window", None) if getattr(cfg, "use_sliding_window", True) else None
    if window and length > window:
        return False
    return _prefix_lengths(mask) is not None


def _layout(model: Any, decoder: Any, prompts: Sequence[Sequence[int]], mask: torch.Tensor,
            share_prompts: bool = True) -> tuple[str, int, int]:
    """(layout, sequences, sequence length) for this pass: "packed" (`_hidden_packed`) when its estimated compute
    is below the padded layout's, else "shared" (`_hidden_shared`) when rows share prompts, else "full".

    Per layer, a token costs ~2 x the layers' weights in multiply-adds and a query-key pair ~4 x the hidden
    size (scores, then the weighted values; masked pairs are computed too): packing removes the padding of
    short completions and repeats no prompt, but its attention is quadratic in the packed length, so G long
    completions are better padded (G=8, prompt 37: completions of 27-64 tokens pack ~20% cheaper; eight of 128,
    about 25% dearer)."""
    n, T = mask.shape
    width = max(int(mask.sum(dim=1).max()), 1)
    P = max(len(p) for p in prompts)
    padded_rows, padded_len = n, P + T
    shared = share_prompts and _can_share(model, prompts)
    if not share_prompts or LAYOUT == "full" or (LAYOUT == "shared" and not shared):
        return "full", padded_rows, padded_len
    unique = packed_lengths(prompts, mask)
    packed_len = max(unique.values())
    if LAYOUT == "shared" or not _can_pack(decoder, mask, packed_len, len(unique)):
        return ("shared" if shared else "full"), padded_rows, padded_len
    if LAYOUT == "packed":
        return "packed", len(unique), packed_len
    cfg = decoder.config
    per_token = 2 * _decoder_params(decoder)
    per_pair = 4 * getattr(cfg, "hidden_size", 0) * getattr(cfg, "num_hidden_layers", 0)
    packed_cost = len(unique) * (packed_len * per_token + packed_len ** 2 * per_pair)
    prompt_tokens = len(unique) * P if shared else n * P
    padded_cost = ((prompt_tokens + n * width) * per_token + n * (P + width) ** 2 * per_pair)
    if packed_cost < padded_cost:
        return "packed", len(unique), packed_len
    return ("shared" if shared else "full"), padded_rows, padded_len

MATH_ATTENTION_BYTES = 256 << 20  # attention probabilities the plain (math) attention may keep for backward


def _attention(decoder: Any, n: int, length: int, device: torch.device) -> Any:
    """The attention kernel for this pass. On a CPU under bf16 autocast, PyTorch's flash attention backward is
    slow for short sequences (6-8 ms per layer for 8 rows x 45 queries x 82 keys, ~0.35-0.45 s of a 2.4 s
    SmolLM2 update, bench/NOTES.md 14); the plain softmax(QK^T)V path is faster there but keeps its
    (n, heads, L, L) probabilities for backward, so it is chosen only while they fit MATH_ATTENTION_BYTES over
    all layers (and never for a model whose config does not say its heads and layers). The choice does not
    depend on grad mode: old and reference log-probs use the kernel the update's pass uses, so an on-policy
    ratio stays exactly 1."""
    cfg = getattr(decoder, "config", None)
    heads, layers = getattr(cfg, "num_attention_heads", 0), getattr(cfg, "num_hidden_layers", 0)
    small = 0 < n * heads * length * length * 4 * layers <= MATH_ATTENTION_BYTES
    # gradient checkpointing recomputes each layer in backward, outside this context (with the default
    # kernel): its saved tensors would not match, so checkpointed models keep the default kernel throughout
    if (device.type != "cpu" or not small or checkpointing(decoder)
            or not torch.is_autocast_enabled(device.type)):  # in fp32 the two kernels measured the same speed
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])


def token_logprobs(model: Any, prompts: Sequence[Sequence[int]], completion_ids: torch.Tensor, mask: torch.Tensor,
                   temperature: float, pad_id: int, share_prompts: bool = True,
                   keep_threshold: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(logp, entropy), each (n, T): log-prob of every completion token (0 where mask is 0) and the entropy of
    the policy at that position (detached). `prompts[i]` is row i's prompt. Differentiable in the weights.
    keep_threshold (n, T): re-apply the sampler's top-k/top-p kept set (see `_TokenLogprob`)."""
    device = next(model.parameters()).device
    decoder, lm_head = _parts(model)
    layout, rows, length = _layout(model, decoder, prompts, mask, share_prompts)
    forward = {"packed": _hidden_packed, "shared": _hidden_shared, "full": _hidden_full}[layout]
    with _attention(decoder, rows, length, device):
        hidden = forward(decoder, prompts, completion_ids, mask, pad_id, device)
    valid = mask.bool().to(device)
    targets = completion_ids.to(device)[valid]
    temp = temperature if temperature > 0 else 1.0
    thr = None if keep_threshold is None else keep_threshold.to(device)[valid].float()
    # The head and log-softmax always run in the weights' precision, also under the update's bf16 autocast: a
    # bf16 logit of magnitude ~20 is off by ~0.06, as much noise in every log-prob and importance ratio.
    with torch.autocast(device_type=device.type, enabled=False):
        h = hidden[valid].to(lm_head.weight.dtype)  # (M, D): states that predict each counted completion token
        if hasattr(lm_head, "base_layer") or getattr(lm_head, "bias", None) is not None:
            logits = lm_head(h).float() / temp  # adapter or bias on the head: plain path (rare)
            if thr is not None:
                drop = (logits < thr[:, None]).scatter(1, targets[:, None], False)
                logits = logits.masked_fill(drop, float("-inf"))
            lp_all = logits.log_softmax(dim=-1)
            lp = lp_all.gather(1, targets[:, None]).squeeze(1)
            ent = -torch.where(lp_all.isinf(), 0.0, lp_all.exp() * lp_all).sum(dim=-1).detach()
        else:
            lp, ent = _TokenLogprob.apply(h, lm_head.weight, targets, temp, thr)
    logp = torch.zeros(valid.shape, dtype=torch.float32, device=device).masked_scatter(valid, lp)
    entropy = torch.zeros(valid.shape, dtype=torch.float32, device=device).masked_scatter(valid, ent.detach())
    return logp, entropy
