"""Reference engine: transformers' `generate`. Works for every model and device; slower on a CPU."""

from __future__ import annotations

import time
from typing import Any, Sequence

import torch

from grpolab.rollout.base import Rollouts, SamplingParams, finish_rows


class HFEngine:
    name = "hf"

    def __init__(self, model: Any, eos_ids: Sequence[int], pad_id: int) -> None:
        self.model, self.eos_ids, self.pad_id = model, list(eos_ids), pad_id

    def sync(self) -> None:  # generate reads the live weights
        pass

    @torch.inference_mode()
    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams,
                 generator: torch.Generator) -> Rollouts:
        t0 = time.perf_counter()
        device = next(self.model.parameters()).device
        width = max(len(p) for p in prompts)
        G = params.group_size
        ids = torch.full((len(prompts) * G, width), self.pad_id, dtype=torch.long)
        attn = torch.zeros((len(prompts) * G, width), dtype=torch.long)
        for i, p in enumerate(prompts):  # left padding, so every prompt ends where generation starts
            rows = slice(i * G, (i + 1) * G)  # the G rows of a group are contiguous
            ids[rows, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
            attn[rows, width - len(p):] = 1
        greedy = params.temperature == 0
        kwargs: dict[str, Any] = dict(max_new_tokens=params.max_new_tokens, do_sample=not greedy,
                                      eos_token_id=self.eos_ids or None, pad_token_id=self.pad_id, use_cache=True)
        if not self.eos_ids:  # no end-of-sequence: every row runs the full budget
            kwargs["min_new_tokens"] = params.max_new_tokens
        if not greedy:
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        was_training = self.model.training
        self.model.eval()
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        try:
            # generate() samples from the global RNG: seed it from the run's generator, and leave it as it was.
            with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
                torch.manual_seed(seed)
                out = self.model.generate(input_ids=ids.to(device), attention_mask=attn.to(device), **kwargs)
        finally:
            self.model.train(was_training)
        raw = out[:, width:].cpu()
        if raw.shape[1] < params.max_new_tokens:  # every row stopped early: pad to the full width
            fill = torch.full((raw.shape[0], params.max_new_tokens - raw.shape[1]), self.pad_id, dtype=raw.dtype)
            raw = torch.cat([raw, fill], dim=1)
        tokens, mask, truncated = finish_rows(raw, self.eos_ids or [-1], self.pad_id)
        seconds = time.perf_counter() - t0
        n_tok = float(mask.sum())
        return Rollouts([list(p) for p in prompts], tokens, mask, truncated, params.group_size, None,
                        {"seconds": seconds, "tokens": n_tok, "tokens_per_s": n_tok / max(seconds, 1e-9)})
