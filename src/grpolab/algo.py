"""Pure tensor math of the policy-gradient family: advantages, ratios, clipping, KL estimators, aggregation.

Nothing here sees a model. Shapes: N completions = B prompts x G per group (rows of a group contiguous),
T completion tokens. `mask` is 1 on completion tokens that count (the EOS token included), 0 on padding.
Every formula has a known-answer test in tests/test_algo.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


# ---------------------------------------------------------------------------------------------------------------
# Advantages
# ---------------------------------------------------------------------------------------------------------------
def group_advantages(rewards: torch.Tensor, group_size: int, baseline: str = "mean", scale: str = "group-std",
                     eps: float = 1e-4) -> torch.Tensor:
    """Advantages (N,) from rewards (N,).

    baseline 'mean': r - mean(group); 'leave-one-out': r - mean of the other G-1 rewards (RLOO).
    scale 'group-std': divide by the group's Bessel-corrected std (+eps); 'batch-std': by the whole batch's
    std (+eps); 'none': no scaling (Dr. GRPO). A group whose rewards are all equal gets exactly 0.
    """
    if rewards.ndim != 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards of shape {tuple(rewards.shape)} do not split into groups of {group_size}")
    r = rewards.double().view(-1, group_size)  # (B, G)
    mean = r.mean(dim=1, keepdim=True)
    if baseline == "mean":
        centred = r - mean
    elif baseline == "leave-one-out":
        centred = (r - mean) * group_size / (group_size - 1)  # r_i - (sum - r_i)/(G-1)
    else:
        raise ValueError(f"unknown baseline {baseline!r}")
    flat = (r.max(dim=1, keepdim=True).values == r.min(dim=1, keepdim=True).values)  # (B, 1): zero variance
    if scale == "group-std":
        centred = centred / (r.std(dim=1, keepdim=True, unbiased=True) + eps)
    elif scale == "batch-std":
        centred = centred / (rewards.double().std(unbiased=True) + eps)
    elif scale != "none":
        raise ValueError(f"unknown advantage scale {scale!r}")
    centred = torch.where(flat, torch.zeros_like(centred), centred)
    return centred.view(-1).to(rewards.dtype if rewards.is_floating_point() else torch.float32)


def zero_variance_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """(B,) bool: groups whose rewards are all equal (they carry no policy gradient)."""
    r = rewards.view(-1, group_size)
    return r.max(dim=1).values == r.min(dim=1).values


def overlong_penalty(lengths: torch.Tensor, max_len: int, buffer: int) -> torch.Tensor:
    """DAPO soft overlong punishment (N,): 0 up to max_len - buffer, then linear down to -1 at max_len."""
    start = max_len - buffer
    over = (lengths.double() - start).clamp(min=0)
    return (-over / max(buffer, 1)).clamp(min=-1.0).float()


# ---------------------------------------------------------------------------------------------------------------
# Per-token objective
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LossSpec:
    """The knobs of the per-token objective, read from an AlgoConfig-like object."""

    objective: str = "clip"  # clip | cispo | pg
    ratio_level: str = "token"  # token | sequence
    clip_low: float = 0.2
    clip_high: float = 0.2
    beta: float = 0.0
    kl_estimator: str = "none"
    tis_cap: float = 0.0
    offpolicy_mask_delta: float = 0.0

    @classmethod
    def from_config(cls, algo: Any) -> "LossSpec":
        return cls(**{k: getattr(algo, k) for k in cls.__dataclass_fields__})


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str,
               old_logp: torch.Tensor | None = None) -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from the sampled tokens (Schulman's k1/k2/k3).

    'k3-unbiased' (DeepSeek-V3.2) weights k3 by pi/pi_old so the estimate stays unbiased when the samples
    came from pi_old rather than pi.
    """
    log_r = ref_logp - logp  # log(pi_ref / pi)
    if estimator == "k1":
        return -log_r
    if estimator == "k2":
        return 0.5 * log_r**2
    k3 = torch.exp(log_r) - log_r - 1
    if estimator == "k3":
        return k3
    if estimator == "k3-unbiased":
        if old_logp is None:
            raise ValueError("k3-unbiased needs old_logp")
        return torch.exp(logp - old_logp) * k3
    raise ValueError(f"unknown KL estimator {estimator!r}")


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def per_token_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                   spec: LossSpec, ref_logp: torch.Tensor | None = None,
                   sampler_logp: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token loss (N, T) to be aggregated, and detached statistics.

    logp: current policy log-probs of the sampled tokens (N, T), with grad. old_logp: the policy that
    produced the batch (= logp.detach() when on-policy). advantages: (N,). sampler_logp: log-probs under the
    engine that sampled (when it differs from the training forward, e.g. int8 rollouts), used for
    truncated importance sampling.
    """
    mask = mask.to(logp.dtype)
    adv = advantages.to(logp.dtype).unsqueeze(1)  # (N, 1)
    lengths = mask.sum(dim=1).clamp(min=1)  # (N,)
    log_ratio = logp - old_logp
    if spec.ratio_level == "sequence":
        # GSPO: geometric-mean ratio of the sequence, with the gradient spread over its tokens.
        seq_log_ratio = (log_ratio * mask).sum(dim=1) / lengths  # (N,)
        ratio = torch.exp(seq_log_ratio.detach()).unsqueeze(1) * torch.exp(logp - logp.detach())
    else:
        ratio = torch.exp(log_ratio)
    lo, hi = 1.0 - spec.clip_low, 1.0 + spec.clip_high
    if spec.objective == "clip":
        unclipped = ratio * adv
        clipped = ratio.clamp(lo, hi) * adv
        surrogate = torch.minimum(unclipped, clipped)  # the pessimistic bound, for both signs of A
        loss = -surrogate
        clipped_tokens = (clipped < unclipped).to(logp.dtype)
    elif spec.objective == "cispo":
        weight = ratio.detach().clamp(max(lo, 0.0), hi)
        loss = -weight * adv * logp
        clipped_tokens = ((ratio.detach() < lo) | (ratio.detach() > hi)).to(logp.dtype)
    elif spec.objective == "pg":
        loss = -ratio * adv
        clipped_tokens = torch.zeros_like(logp)
    else:
        raise ValueError(f"unknown objective {spec.objective!r}")

    stats: dict[str, torch.Tensor] = {}
    if sampler_logp is not None:
        # How far the sampler (e.g. int8 weights) is from the policy that is trained: KL(sampler || policy),
        # k3 estimate from the sampled tokens (non-negative).
        log_w = (old_logp - sampler_logp).detach()
        stats["sampler_mismatch_kl"] = masked_mean(torch.exp(log_w) - 1 - log_w, mask)
        if spec.tis_cap > 0:
            # Truncated importance sampling: reweight by pi_old / pi_sampler, capped.
            weight = torch.exp(log_w)
            stats["tis_capped_frac"] = masked_mean((weight > spec.tis_cap).to(logp.dtype), mask)
            loss = loss * weight.clamp(max=spec.tis_cap)

    keep = torch.ones_like(adv)
    if spec.offpolicy_mask_delta > 0:
        drift = ((old_logp - logp.detach()) * mask).sum(dim=1, keepdim=True) / lengths.unsqueeze(1)
        keep = 1.0 - ((adv < 0) & (drift > spec.offpolicy_mask_delta)).to(logp.dtype)
        loss = loss * keep

    stats.update({
        "clip_fraction": masked_mean(clipped_tokens, mask).detach(),
        "ratio_mean": masked_mean(ratio.detach(), mask),
        "offpolicy_masked": (1.0 - keep).mean().detach(),
    })
    if spec.beta > 0:
        if ref_logp is None:
            raise ValueError("beta > 0 needs reference log-probs")
        kl = kl_penalty(logp, ref_logp, spec.kl_estimator, old_logp)
        loss = loss + spec.beta * kl
        stats["kl"] = masked_mean(kl.detach(), mask)
    return loss, stats


# ---------------------------------------------------------------------------------------------------------------
# Aggregation
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LossNorm:
    """Batch-level denominators, so that micro-batches add up to exactly the full-batch loss."""

    num_seqs: int  # sequences in the whole batch
    num_tokens: int  # unmasked completion tokens in the whole batch
    max_len: int  # generation budget T_max (Dr. GRPO's constant)


def aggregate(loss: torch.Tensor, mask: torch.Tensor, mode: str, norm: LossNorm) -> torch.Tensor:
    """Reduce per-token losses (n, T) of a micro-batch to its share of the batch loss."""
    mask = mask.to(loss.dtype)
    summed = loss * mask
    if mode == "token-mean":
        return summed.sum() / max(norm.num_tokens, 1)
    if mode == "seq-mean-token-mean":
        return (summed.sum(dim=1) / mask.sum(dim=1).clamp(min=1)).sum() / norm.num_seqs
    if mode == "seq-mean-token-sum-norm":
        return summed.sum() / (norm.num_seqs * norm.max_len)
    if mode == "seq-mean-token-sum":
        return summed.sum() / norm.num_seqs
    raise ValueError(f"unknown loss aggregation {mode!r}")
