"""A CPU-first decoder for Llama-family models (Llama, Mistral, Qwen2, Qwen3): the fast rollout engine.

Why it is faster than `generate` on a CPU: the B prompts are prefilled once and their KV cache is copied to
the G completions of each group; the KV cache is preallocated for the whole rollout, so no step allocates
or concatenates; rows that finished are dropped from the batch (compacted) so the matrix products shrink;
attention, RoPE and sampling are a handful of tensor ops per layer with no per-token Python bookkeeping
beyond that; optional int8 weights halve the bytes read per token.

The decoder reads the live parameters (no copies), applies LoRA as its low-rank side path, and with int8
re-quantises only the weights that changed. The sampling pipeline reproduces transformers' warpers exactly
(temperature, then top-k, then top-p), so the distribution is the one `generate` samples from; greedy
decoding gives identical tokens.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from grpolab.rollout.base import Rollouts, SamplingParams
from grpolab.rollout.linear import PACKERS, SamplerLinear

SUPPORTED_TYPES = ("llama", "mistral", "qwen2", "qwen3")


def unsupported_reason(model: Any) -> str | None:
    """Why this model cannot use the fast engine, or None when it can."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = base.config
    if cfg.model_type not in SUPPORTED_TYPES:
        return f"model type '{cfg.model_type}' (fast engine supports {', '.join(SUPPORTED_TYPES)})"
    if next(base.parameters()).device.type != "cpu":
        return "the model is not on the CPU"
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return f"activation '{cfg.hidden_act}'"
    if getattr(cfg, "use_sliding_window", False):
        return "sliding-window attention"
    return None


@dataclass
class _Layer:
    ln1: torch.Tensor
    qkv: list[SamplerLinear]  # one stacked int8 linear, or q, k, v
    q_norm: torch.Tensor | None
    k_norm: torch.Tensor | None
    o: SamplerLinear
    ln2: torch.Tensor
    gate_up: list[SamplerLinear]  # one stacked int8 linear, or gate, up
    down: SamplerLinear

    def linears(self) -> list[SamplerLinear]:
        return [*self.qkv, self.o, *self.gate_up, self.down]


class FastCPUEngine:
    name = "fast"

    def __init__(self, model: Any, eos_ids: Sequence[int], pad_id: int, quant: str = "none") -> None:
        reason = unsupported_reason(model)
        if reason:
            raise ValueError(f"fast engine cannot run this model: {reason}")
        self.model, self.eos_ids, self.pad_id, self.quant = model, list(eos_ids), pad_id, quant
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.base = base
        cfg = base.config
        self.num_heads = cfg.num_attention_heads
        self.num_kv = getattr(cfg, "num_key_value_heads", None) or self.num_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.num_heads
        self.eps = cfg.rms_norm_eps
        self.layers: list[_Layer] = []
        self.sync()

    # ---- weights ------------------------------------------------------------------------------------------
    def sync(self) -> None:
        """Make the decoder see the current weights. fp32 reads the live parameters (nothing to do once built);
        fp16 with the native kernels re-packs every trainable weight in place (~0.05 s for 135M weights); fbgemm's
        fp16 and int8 re-pack the weights that may have changed, two layers at a time (~0.8 s)."""
        if not self.layers:
            self._build()
        stale = [lin for lin in [self.lm_head] + [x for layer in self.layers for x in layer.linears()] if lin.stale()]
        for lin in stale:  # native packing is one multi-threaded pass per layer
            if lin.native:
                lin.requantize()
        stale = [lin for lin in stale if not lin.native]
        if stale:  # fbgemm packs on one thread: two layers at a time
            with ThreadPoolExecutor(max_workers=2) as pool:
                list(pool.map(SamplerLinear.requantize, stale))

    def _group(self, modules: list[Any]) -> list[SamplerLinear]:
        """Stack projections that read the same input into one int8 matrix; fp32 keeps them separate (live)."""
        plain = all(not hasattr(m, "base_layer") or not m.active_adapters for m in modules)
        if self.quant in PACKERS and plain:
            return [SamplerLinear(modules, self.quant)]
        return [SamplerLinear([m], self.quant) for m in modules]

    def _build(self) -> None:
        inner = self.base.model
        self.embed = inner.embed_tokens.weight.detach()
        self.norm = inner.norm.weight.detach()
        self.lm_head = SamplerLinear([self.base.lm_head], self.quant)
        for layer in inner.layers:
            att, mlp = layer.self_attn, layer.mlp
            self.layers.append(_Layer(
                ln1=layer.input_layernorm.weight.detach(),
                qkv=self._group([att.q_proj, att.k_proj, att.v_proj]),
                q_norm=att.q_norm.weight.detach() if hasattr(att, "q_norm") else None,
                k_norm=att.k_norm.weight.detach() if hasattr(att, "k_norm") else None,
                o=SamplerLinear([att.o_proj], self.quant),
                ln2=layer.post_attention_layernorm.weight.detach(),
                gate_up=self._group([mlp.gate_proj, mlp.up_proj]),
                down=SamplerLinear([mlp.down_proj], self.quant),
            ))

    def _rope_tables(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin (length, head_dim) from the model's own rotary module (any rope scaling it implements)."""
        rotary = self.base.model.rotary_emb
        pos = torch.arange(length).unsqueeze(0)
        cos, sin = rotary(self.embed[:1].unsqueeze(0), pos)
        return cos[0].float(), sin[0].float()

    # ---- model pieces -------------------------------------------------------------------------------------
    def _rms(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * w

    @staticmethod
    def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rotated * sin

    def _qkv(self, layer: _Layer, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """h (..., D) -> q (..., H, hd), k, v (..., K, hd) with RoPE applied; cos/sin broadcast as (..., 1, hd)."""
        H, K, hd = self.num_heads, self.num_kv, self.head_dim
        q, k, v = layer.qkv[0](h) if len(layer.qkv) == 1 else [lin(h) for lin in layer.qkv]
        q = q.unflatten(-1, (H, hd))
        k = k.unflatten(-1, (K, hd))
        v = v.unflatten(-1, (K, hd))
        if layer.q_norm is not None:
            q, k = self._rms(q, layer.q_norm), self._rms(k, layer.k_norm)
        return self._rope(q, cos, sin), self._rope(k, cos, sin), v

    def _mlp(self, layer: _Layer, x: torch.Tensor) -> torch.Tensor:
        h = self._rms(x, layer.ln2)
        gate, up = layer.gate_up[0](h) if len(layer.gate_up) == 1 else [lin(h) for lin in layer.gate_up]
        return x + layer.down(F.silu(gate) * up)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self._rms(x, self.norm)).float()

    # ---- sampling -----------------------------------------------------------------------------------------
    @staticmethod
    def _warp(logits: torch.Tensor, p: SamplingParams) -> torch.Tensor:
        """transformers' order: temperature, top-k, top-p (tokens at cumulative mass <= 1 - top_p removed)."""
        if p.temperature != 1.0:
            logits = logits / p.temperature
        if p.top_k and p.top_k < logits.shape[-1]:
            kth = torch.topk(logits, p.top_k, dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if p.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, dim=-1, descending=False)
            cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
            remove = cum <= (1 - p.top_p)
            remove[..., -1:] = False
            logits = logits.masked_fill(remove.scatter(-1, order, remove), float("-inf"))
        return logits

    def _sample(self, logits: torch.Tensor, p: SamplingParams, gen: torch.Generator):
        """(token, its log-prob under the sampling distribution, the kept set's threshold or None)."""
        if p.temperature == 0:
            tok = logits.argmax(dim=-1)
            return tok, torch.zeros(tok.shape, dtype=torch.float32), None
        warped = self._warp(logits, p)
        threshold = None
        if p.top_k or p.top_p < 1.0:
            # The kept set is every token above a threshold. Store the midpoint between the smallest kept and
            # the largest dropped scaled logit, so that re-scoring (whose logits differ by float rounding)
            # reproduces the same set instead of losing the boundary token.
            kept = ~torch.isinf(warped)
            scaled = logits / p.temperature if p.temperature != 1.0 else logits
            low_kept = warped.masked_fill(~kept, float("inf")).amin(dim=-1)
            high_dropped = scaled.masked_fill(kept, float("-inf")).amax(dim=-1)
            threshold = torch.where(torch.isinf(high_dropped), high_dropped, (low_kept + high_dropped) / 2)
        lse = warped.logsumexp(dim=-1, keepdim=True)
        # Inverse-CDF sampling: one uniform per row. torch.multinomial draws an exponential per vocabulary
        # entry (~10 ms per step at V=49k); this is the same distribution for a fraction of the cost.
        cdf = (warped - lse).exp_().cumsum_(dim=-1)
        u = (1.0 - torch.rand((logits.shape[0], 1), generator=gen)) * cdf[:, -1:]  # in (0, total]
        tok = torch.searchsorted(cdf, u).squeeze(1).clamp(max=logits.shape[-1] - 1)
        return tok, (warped.gather(1, tok.unsqueeze(1)) - lse).squeeze(1), threshold

    # ---- generation ---------------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams,
                 generator: torch.Generator) -> Rollouts:
        t0 = time.perf_counter()
        B, G, T = len(prompts), params.group_size, params.max_new_tokens
        N, P = B * G, max(len(p) for p in prompts)
        K, hd, L = self.num_kv, self.head_dim, P + T
        rep = self.num_heads // K
        cos_t, sin_t = self._rope_tables(L)
        plen = torch.tensor([len(p) for p in prompts], dtype=torch.long)

        # 1. prefill the B prompts once (left padded), causal attention that ignores padding
        ids = torch.full((B, P), self.pad_id, dtype=torch.long)
        valid = torch.zeros((B, P), dtype=torch.bool)
        for i, p in enumerate(prompts):
            ids[i, P - len(p):] = torch.tensor(list(p), dtype=torch.long)
            valid[i, P - len(p):] = True
        pos = (valid.long().cumsum(dim=1) - 1).clamp(min=0)  # (B, P)
        cos, sin = cos_t[pos].unsqueeze(2), sin_t[pos].unsqueeze(2)  # (B, P, 1, hd)
        causal = torch.ones(P, P, dtype=torch.bool).tril()
        # padded queries may see themselves only, so no softmax row is empty (that would give NaN)
        allowed = (causal & valid[:, None, :]) | torch.eye(P, dtype=torch.bool)
        allowed = allowed.unsqueeze(1)  # (B, 1, P, P)
        kcache = [torch.empty((N, K, L, hd)) for _ in self.layers]
        vcache = [torch.empty((N, K, L, hd)) for _ in self.layers]
        x = self.embed[ids]  # (B, P, D)
        for li, layer in enumerate(self.layers):
            q, k, v = self._qkv(layer, self._rms(x, layer.ln1), cos, sin)  # (B, P, H|K, hd)
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, heads, P, hd)
            att = F.scaled_dot_product_attention(q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1),
                                                 attn_mask=allowed)
            x = x + layer.o(att.transpose(1, 2).flatten(2))
            x = self._mlp(layer, x)
            kcache[li][:, :, :P] = k.repeat_interleave(G, dim=0)
            vcache[li][:, :, :P] = v.repeat_interleave(G, dim=0)
        first_logits = self._logits(x[:, -1]).repeat_interleave(G, dim=0)  # (N, V)

        # 2. decode: all live rows write their new key/value into the same cache slot each step
        bias = torch.zeros((N, L))
        bias[:, :P] = torch.where(valid, 0.0, float("-inf")).repeat_interleave(G, dim=0)
        row_plen = plen.repeat_interleave(G)  # (n,) real prompt length of each live row
        rows = torch.arange(N)  # live row -> output row
        out_tok = torch.full((N, T), self.pad_id, dtype=torch.long)
        out_logp = torch.zeros((N, T))
        out_thr = torch.full((N, T), float("-inf")) if (params.top_k or params.top_p < 1.0) else None
        eos = torch.tensor(self.eos_ids, dtype=torch.long)
        scale = 1.0 / math.sqrt(hd)

        tok, logp, thr = self._sample(first_logits, params, generator)
        out_tok[:, 0], out_logp[:, 0] = tok, logp
        if thr is not None and out_thr is not None:
            out_thr[:, 0] = thr
        done = torch.isin(tok, eos)
        for t in range(1, T):
            if bool(done.all()):
                break
            if int(done.sum()) * 4 >= len(rows):  # drop finished rows once a quarter of the batch is done
                keep = (~done).nonzero().squeeze(1)
                kcache = [c.index_select(0, keep) for c in kcache]
                vcache = [c.index_select(0, keep) for c in vcache]
                bias, row_plen, rows, tok = bias[keep], row_plen[keep], rows[keep], tok[keep]
                done = done[keep]
            slot = P + t - 1
            n = len(rows)
            cos, sin = cos_t[row_plen + t - 1].unsqueeze(1), sin_t[row_plen + t - 1].unsqueeze(1)  # (n, 1, hd)
            att_bias = bias[:, : slot + 1].view(n, 1, 1, slot + 1)
            x = self.embed[tok]  # (n, D)
            for li, layer in enumerate(self.layers):
                q, k, v = self._qkv(layer, self._rms(x, layer.ln1), cos, sin)  # (n, H|K, hd)
                kcache[li][:, :, slot] = k
                vcache[li][:, :, slot] = v
                keys, values = kcache[li][:, :, : slot + 1], vcache[li][:, :, : slot + 1]  # (n, K, S, hd)
                scores = torch.matmul(q.view(n, K, rep, hd), keys.transpose(-1, -2)).mul_(scale).add_(att_bias)
                att = torch.matmul(scores.softmax(dim=-1), values)  # (n, K, rep, hd)
                x = x + layer.o(att.reshape(n, K * rep * hd))
                x = self._mlp(layer, x)
            tok, logp, thr = self._sample(self._logits(x), params, generator)
            live = ~done
            out_tok[rows[live], t] = tok[live]
            out_logp[rows[live], t] = logp[live]
            if thr is not None and out_thr is not None:
                out_thr[rows[live], t] = thr[live]
            done = done | torch.isin(tok, eos)
        # 3. masks: tokens up to and including the first EOS
        is_eos = torch.isin(out_tok, eos)
        after = (is_eos.long().cumsum(dim=1) - is_eos.long()) > 0
        out_tok = out_tok.masked_fill(after, self.pad_id)
        mask = (~after).float()
        # rows that never produced EOS ran the full budget: every slot is a real token
        truncated = ~is_eos.any(dim=1)
        out_logp = out_logp * mask
        seconds = time.perf_counter() - t0
        n_tok = float(mask.sum())
        return Rollouts([list(p) for p in prompts], out_tok, mask, truncated, G, out_logp,
                        {"seconds": seconds, "tokens": n_tok, "tokens_per_s": n_tok / max(seconds, 1e-9)},
                        keep_threshold=out_thr)
