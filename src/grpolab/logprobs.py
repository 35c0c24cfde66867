"""Per-token log-probs of completions under the policy, computed so the (N, T, V) logits never exist.

The decoder runs once over prompt + completion; the vocabulary projection runs only at completion
positions that count (mask = 1), in chunks of rows, inside a custom autograd function that recomputes each
chunk's logits in backward instead of storing them. Log-probs come from logits divided by the sampling
temperature: the distribution the tokens were drawn from.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

CHUNK_ROWS = 512  # rows of (rows x V) logits alive at once: 512 x 49k x 4 B = 100 MB for SmolLM2


class _TokenLogprob(torch.autograd.Function):
    """log softmax(h W^T / temp)[target] and the entropy, per row of h, chunk by chunk."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
        logp = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        entropy = torch.empty_like(logp)
        for s in range(0, hidden.shape[0], CHUNK_ROWS):
            logits = (hidden[s:s + CHUNK_ROWS] @ weight.t()).float() / temperature
            lse = logits.logsumexp(dim=-1)
            logp[s:s + CHUNK_ROWS] = logits.gather(1, targets[s:s + CHUNK_ROWS, None]).squeeze(1) - lse
            probs = (logits - lse[:, None]).exp_()
            entropy[s:s + CHUNK_ROWS] = lse - (probs * logits).sum(dim=-1)
        ctx.save_for_backward(hidden, weight, targets)
        ctx.temperature = temperature
        ctx.mark_non_differentiable(entropy)
        return logp, entropy

    @staticmethod
    def backward(ctx: Any, grad_logp: torch.Tensor, _grad_entropy: torch.Tensor):
        hidden, weight, targets = ctx.saved_tensors
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
        for s in range(0, hidden.shape[0], CHUNK_ROWS):
            h = hidden[s:s + CHUNK_ROWS]
            g = grad_logp[s:s + CHUNK_ROWS].float()
            logits = (h @ weight.t()).float() / ctx.temperature
            # d logp[target] / d logits = onehot(target) - softmax(logits), then the 1/temperature of the scaling
            dlogits = logits.softmax(dim=-1).mul_(-g[:, None])
            dlogits.scatter_add_(1, targets[s:s + CHUNK_ROWS, None], g[:, None])
            dlogits = dlogits.div_(ctx.temperature).to(hidden.dtype)
            if need_h:
                grad_h[s:s + CHUNK_ROWS] = dlogits @ weight
            if need_w:
                grad_w += (dlogits.t() @ h).float()
        return grad_h, (grad_w.to(weight.dtype) if need_w else None), None, None


def _parts(model: Any) -> tuple[Any, Any]:
    """The decoder stack (without the vocabulary projection) and the lm_head of a causal LM (peft or not)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model, base.lm_head


def pack_rows(prompts: Sequence[Sequence[int]], completion_ids: torch.Tensor, mask: torch.Tensor,
              pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Left-padded prompt + completion per row: (ids, attention mask, position ids, P)."""
    n, T = completion_ids.shape
    P = max(len(p) for p in prompts)
    ids = torch.full((n, P + T), pad_id, dtype=torch.long)
    attn = torch.zeros((n, P + T), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, P - len(p):P] = torch.tensor(list(p), dtype=torch.long)
        attn[i, P - len(p):P] = 1
    ids[:, P:] = completion_ids
    attn[:, P:] = mask.long()
    positions = (attn.cumsum(dim=1) - 1).clamp(min=0)
    return ids, attn, positions, P


def token_logprobs(model: Any, prompts: Sequence[Sequence[int]], completion_ids: torch.Tensor, mask: torch.Tensor,
                   temperature: float, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(logp, entropy), each (n, T): log-prob of every completion token (0 where mask is 0) and the entropy of
    the policy at that position (detached). `prompts[i]` is row i's prompt. Differentiable in the weights."""
    device = next(model.parameters()).device
    ids, attn, positions, P = pack_rows(prompts, completion_ids, mask, pad_id)
    decoder, lm_head = _parts(model)
    hidden = decoder(input_ids=ids.to(device), attention_mask=attn.to(device), position_ids=positions.to(device),
                     use_cache=False).last_hidden_state  # (n, P+T, D)
    T = completion_ids.shape[1]
    valid = mask.bool().to(device)
    h = hidden[:, P - 1:P - 1 + T][valid]  # (M, D): states that predict each counted completion token
    targets = completion_ids.to(device)[valid]
    temp = temperature if temperature > 0 else 1.0
    if hasattr(lm_head, "base_layer") or getattr(lm_head, "bias", None) is not None:
        logits = lm_head(h).float() / temp  # adapter or bias on the head: plain path (rare)
        lp_all = logits.log_softmax(dim=-1)
        lp = lp_all.gather(1, targets[:, None]).squeeze(1)
        ent = -(lp_all.exp() * lp_all).sum(dim=-1).detach()
    else:
        lp, ent = _TokenLogprob.apply(h, lm_head.weight, targets, temp)
    logp = torch.zeros(valid.shape, dtype=torch.float32, device=device).masked_scatter(valid, lp)
    entropy = torch.zeros(valid.shape, dtype=torch.float32, device=device).masked_scatter(valid, ent.detach())
    return logp, entropy
