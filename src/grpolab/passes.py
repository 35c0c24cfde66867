"""The decoder passes that score completions: padded rows (one pass per row, or one shared prompt pass per
group with its KV cache expanded to the rows) and packed rows (a group's completions back to back after
their prompt). Each returns the (n, T, D) hidden states that predict the completion tokens; `logprobs`
chooses among them and applies the vocabulary head.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch


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


def _hidden_full(decoder: Any, prompts: Sequence[Sequence[int]], completion_ids: torch.Tensor, mask: torch.Tensor,
                 pad_id: int, device: torch.device) -> torch.Tensor:
    """(n, T, D) states predicting each completion token, from one pass over prompt + completion per row."""
    ids, attn, positions, P = pack_rows(prompts, completion_ids, mask, pad_id)
    hidden = decoder(input_ids=ids.to(device), attention_mask=attn.to(device), position_ids=positions.to(device),
                     use_cache=False).last_hidden_state
    return hidden[:, P - 1:P - 1 + completion_ids.shape[1]]


def _hidden_shared(decoder: Any, prompts: Sequence[Sequence[int]], completion_ids: torch.Tensor, mask: torch.Tensor,
                   pad_id: int, device: torch.device) -> torch.Tensor:
    """Same result as `_hidden_full`, but each distinct prompt runs once and its KV cache (with its gradient
    path) is shared by all the rows that continue it: G rows of a group cost one prompt pass, not G."""
    index: dict[tuple[int, ...], int] = {}
    row_prompt = [index.setdefault(tuple(p), len(index)) for p in prompts]
    unique = list(index)
    P = max(len(p) for p in unique)
    ids = torch.full((len(unique), P), pad_id, dtype=torch.long)
    attn = torch.zeros((len(unique), P), dtype=torch.long)
    for i, p in enumerate(unique):
        ids[i, P - len(p):] = torch.tensor(p, dtype=torch.long)
        attn[i, P - len(p):] = 1
    out = decoder(input_ids=ids.to(device), attention_mask=attn.to(device),
                  position_ids=(attn.cumsum(dim=1) - 1).clamp(min=0).to(device), use_cache=True)
    cache_in, cache_out = _cache_names(decoder)
    rows = torch.tensor(row_prompt, dtype=torch.long)
    # index_select, not x[rows]: the gradient of x[rows] sums the G rows of a group in a thread-dependent order on
    # CPU (index_put with accumulate), so the same step gave weights differing in the last bits from one process
    # to the next; index_select's gradient (index_add) sums in a fixed order (docs/experiments.md E12)
    first = out.last_hidden_state[:, -1].index_select(0, rows.to(device)).unsqueeze(1)  # (n, 1, D): token 0
    T = completion_ids.shape[1]
    if T == 1:
        return first
    cache = getattr(out, cache_out)
    _select_cache_rows(cache, rows.to(device))  # (U, ...) -> (n, ...), differentiable gather
    prompt_len = attn.sum(dim=1)[rows]  # (n,)
    step_attn = torch.cat([attn[rows], mask[:, :T - 1].long()], dim=1)  # (n, P + T - 1)
    positions = prompt_len[:, None] + torch.arange(T - 1)[None, :]
    rest = decoder(input_ids=completion_ids[:, :T - 1].to(device), attention_mask=step_attn.to(device),
                   position_ids=positions.to(device), use_cache=True, **{cache_in: cache}).last_hidden_state
    return torch.cat([first, rest], dim=1)


def _select_cache_rows(cache: Any, rows: torch.Tensor) -> None:
    """Expand a KV cache from one row per distinct prompt to one row per completion, with a gradient that sums
    in a fixed order (see `_hidden_shared`); caches without per-layer key/value tensors use their own method."""
    layers = getattr(cache, "layers", None)
    if not layers or not all(hasattr(layer, "keys") and hasattr(layer, "values") for layer in layers):
        cache.batch_select_indices(rows)
        return
    for layer in layers:
        if layer.keys is not None and layer.keys.numel():
            layer.keys = layer.keys.index_select(0, rows)
            layer.values = layer.values.index_select(0, rows)


def _prefix_lengths(mask: torch.Tensor) -> torch.Tensor | None:
    """(n,) number of counted tokens per row when every row's mask is ones then zeros, else None."""
    lengths = mask.sum(dim=1).long()
    prefix = torch.arange(mask.shape[1])[None, :] < lengths[:, None]
    return lengths if bool((mask.bool() == prefix).all()) else None


def packed_lengths(prompts: Sequence[Sequence[int]], mask: torch.Tensor) -> dict[tuple[int, ...], int]:
    """Length of each packed sequence (`_hidden_packed`), by distinct prompt in order of first use: the prompt,
    then every row's counted tokens but the last (the last is only predicted, never fed)."""
    sizes: dict[tuple[int, ...], int] = {}
    for p, k in zip(prompts, mask.sum(dim=1).tolist()):
        sizes[tuple(p)] = sizes.get(tuple(p), len(p)) + max(int(k) - 1, 0)
    return sizes


def _hidden_packed(decoder: Any, prompts: Sequence[Sequence[int]], completion_ids: torch.Tensor, mask: torch.Tensor,
                   pad_id: int, device: torch.device) -> torch.Tensor:
    """Same result as `_hidden_full`, from one sequence per distinct prompt: the prompt, then the counted tokens
    of every row that continues it, back to back, under a mask that lets each row see the prompt and its own
    earlier tokens only (position ids restart after the prompt for each row). No row is padded to the longest
    completion, and the prompt runs once. Needs masks of the form ones-then-zeros (`_prefix_lengths`)."""
    n, T = completion_ids.shape
    lengths = _prefix_lengths(mask)
    assert lengths is not None
    index: dict[tuple[int, ...], int] = {}
    row_prompt = [index.setdefault(tuple(p), len(index)) for p in prompts]
    unique = list(index)
    # each row feeds its counted tokens but the last (the last is only predicted): lengths - 1 inputs
    layout: list[list[tuple[int, int]]] = [[] for _ in unique]  # per sequence: (row, start of its inputs)
    seq_len = [len(p) for p in unique]
    for r in range(n):
        u = row_prompt[r]
        layout[u].append((r, seq_len[u]))
        seq_len[u] += max(int(lengths[r]) - 1, 0)
    L = max(seq_len)
    U = len(unique)
    ids = torch.full((U, L), pad_id, dtype=torch.long)
    positions = torch.zeros((U, L), dtype=torch.long)
    owner = torch.full((U, L), -2, dtype=torch.long)  # -1: prompt, r >= 0: row r's tokens, -2: padding
    for u, p in enumerate(unique):
        ids[u, :len(p)] = torch.tensor(p, dtype=torch.long)
        positions[u, :len(p)] = torch.arange(len(p))
        owner[u, :len(p)] = -1
        for r, start in layout[u]:
            k = max(int(lengths[r]) - 1, 0)
            ids[u, start:start + k] = completion_ids[r, :k]
            positions[u, start:start + k] = len(p) + torch.arange(k)
            owner[u, start:start + k] = r
    causal = torch.ones((L, L), dtype=torch.bool).tril()
    q, kv = owner[:, :, None], owner[:, None, :]
    allowed = causal[None] & ((kv == -1) | (q == kv)) & (q != -2)
    allowed |= torch.eye(L, dtype=torch.bool)[None] & (q == -2)  # padding sees itself (no empty softmax row)
    attn = allowed[:, None]  # (U, 1, L, L): sdpa takes it as is; eager attention adds its mask to the scores
    if getattr(decoder.config, "_attn_implementation", "sdpa") == "eager":
        attn = torch.zeros(attn.shape).masked_fill_(~attn, torch.finfo(torch.float32).min)
    hidden = decoder(input_ids=ids.to(device), attention_mask=attn.to(device),
                     position_ids=positions.to(device), use_cache=False).last_hidden_state  # (U, L, D)
    # the state predicting row r's token t: the prompt's last position for t = 0, its input t - 1 after that
    flat = torch.zeros((n, T), dtype=torch.long)
    for u, p in enumerate(unique):
        for r, start in layout[u]:
            flat[r] = u * L + len(p) - 1
            k = max(int(lengths[r]) - 1, 0)
            flat[r, 1:1 + k] = u * L + start + torch.arange(k)
    return hidden.reshape(U * L, -1).index_select(0, flat.reshape(-1).to(device)).reshape(n, T, -1)


def _cache_names(decoder: Any) -> tuple[str, str]:
    """(keyword, output field) of the KV cache: `cache` in transformers >= 5.x (where `past_key_values` warns and
    goes in 5.40), `past_key_values` before."""
    names = getattr(decoder, "_grpolab_cache_names", None)
    if names is None:
        import inspect

        try:
            new = "cache" in inspect.signature(decoder.forward).parameters
        except (TypeError, ValueError):
            new = False
        names = ("cache", "cache") if new else ("past_key_values", "past_key_values")
        decoder._grpolab_cache_names = names
    return names
