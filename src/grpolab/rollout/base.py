"""The rollout Protocol: token prompts in, G sampled completions per prompt out. Engines never score."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import torch


@dataclass(frozen=True)
class SamplingParams:
    group_size: int  # G completions per prompt
    max_new_tokens: int  # T max
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0


@dataclass
class Rollouts:
    """Completions for B prompts x G samples; rows of a group are contiguous (row = b * G + g)."""

    prompt_ids: list[list[int]]  # B prompts, unpadded
    completion_ids: torch.Tensor  # (N, T) long, padded with pad_id after EOS
    mask: torch.Tensor  # (N, T) float: 1 on generated tokens including EOS
    truncated: torch.Tensor  # (N,) bool: reached max_new_tokens without EOS
    group_size: int
    sampler_logp: torch.Tensor | None = None  # (N, T) log-prob of each token under the sampling distribution
    stats: dict[str, float] = field(default_factory=dict)  # engine timing: seconds, tokens, tokens_per_s
    keep_threshold: torch.Tensor | None = None  # (N, T) smallest temperature-scaled logit top-k/top-p kept

    @property
    def lengths(self) -> torch.Tensor:  # (N,)
        return self.mask.sum(dim=1).long()

    @property
    def num_rows(self) -> int:
        return self.completion_ids.shape[0]

    def row_prompt(self, row: int) -> list[int]:
        return self.prompt_ids[row // self.group_size]


class RolloutEngine(Protocol):
    """Samples completions from the current policy weights."""

    name: str

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams,
                 generator: torch.Generator) -> Rollouts:
        """G completions for each prompt; every random draw comes from `generator`."""
        ...

    def sync(self) -> None:
        """Make the sampler see the policy's current weights (called after every optimizer step)."""
        ...


def finish_rows(tokens: torch.Tensor, eos_ids: Sequence[int], pad_id: int) -> tuple[torch.Tensor, torch.Tensor,
                                                                                       torch.Tensor]:
    """From raw generated tokens (N, T): padded tokens after the first EOS, mask (EOS included), truncated."""
    is_eos = torch.isin(tokens, torch.tensor(list(eos_ids), dtype=tokens.dtype, device=tokens.device))
    seen_before = (is_eos.long().cumsum(dim=1) - is_eos.long()) > 0  # an EOS earlier in the row
    mask = (~seen_before).float()
    out = torch.where(seen_before, torch.full_like(tokens, pad_id), tokens)
    truncated = ~is_eos.any(dim=1)
    return out, mask, truncated
