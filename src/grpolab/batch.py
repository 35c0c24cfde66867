"""Stages 1-4 of a step: draw prompts, sample G completions each, score them, compute advantages.

With `zero_variance = filter` (DAPO dynamic sampling, Olmo 3 active sampling) a group whose rewards are all
equal is dropped before any forward/backward, and fresh prompts are drawn to refill the batch while the
resample budget lasts.

With `steps_per_generation = S > 1`, one round samples S x B prompts in a single engine call (a batch S times
wider decodes several times more tokens per second on a CPU) and the S steps of the round train on B groups
each, in order: step j's groups were sampled j updates ago. `split_round` deals a round out to its steps and
`Group.behaviour_logp` carries the log-probs of the policy that sampled a lagging group, which the update uses
as its old log-probs (the PPO ratio and clip then correct the lag, as in TRL's `steps_per_generation`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from grpolab import algo as A
from grpolab.indicators import SELF_CHECK
from grpolab.models import encode_prompt
from grpolab.rewards import has_answer_format, score, total
from grpolab.rewards.terms import RewardTerm
from grpolab.rollout import Rollouts, RolloutEngine, SamplingParams
from grpolab.tasks import Example, Task
from grpolab.update import UpdateBatch, behaviour_logprobs


@dataclass
class Group:
    """One prompt and its G completions with their rewards and advantages."""

    example: Example
    prompt_ids: list[int]
    completion_ids: torch.Tensor  # (G, T)
    mask: torch.Tensor  # (G, T)
    truncated: torch.Tensor  # (G,)
    sampler_logp: torch.Tensor | None  # (G, T)
    keep_threshold: torch.Tensor | None  # (G, T) sampler's top-k/top-p threshold, when it warped
    texts: list[str]
    scores: dict[str, list[float]]  # term -> (G,)
    rewards: torch.Tensor  # (G,) weighted total, overlong penalty included
    advantages: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    kept: bool = True  # False when the group was filtered out (zero variance) before the update
    lag: int = 0  # training steps between sampling this group and training on it
    behaviour_logp: torch.Tensor | None = None  # (G, T) log-probs of the sampling policy, set when lag > 0

    @property
    def zero_variance(self) -> bool:
        return bool(self.rewards.max() == self.rewards.min())

    def records(self, step: int) -> list[dict[str, Any]]:
        lengths = self.mask.sum(dim=1)
        return [{"step": step, "example": self.example.id, "prompt": self.example.prompt, "answer": self.example.answer,
                 "completion": self.texts[g], "reward": float(self.rewards[g]),
                 "rewards": {k: v[g] for k, v in self.scores.items()}, "advantage": float(self.advantages[g]),
                 "length": int(lengths[g]), "truncated": bool(self.truncated[g]), "kept": self.kept}
                for g in range(len(self.texts))]


def _split(ro: Rollouts, examples: Sequence[Example], texts: list[str], scores: dict[str, list[float]],
           rewards: torch.Tensor) -> list[Group]:
    G = ro.group_size
    out = []
    for b, ex in enumerate(examples):
        rows = slice(b * G, (b + 1) * G)
        out.append(Group(ex, ro.prompt_ids[b], ro.completion_ids[rows], ro.mask[rows], ro.truncated[rows],
                         None if ro.sampler_logp is None else ro.sampler_logp[rows],
                         None if ro.keep_threshold is None else ro.keep_threshold[rows], texts[rows],
                         {k: v[rows] for k, v in scores.items()}, rewards[rows]))
    return out


def collect_groups(task: Task, tokenizer: Any, engine: RolloutEngine, terms: Sequence[RewardTerm],
                   sampling: SamplingParams, cfg: Any, state: dict[str, Any],
                   gen: torch.Generator, steps: int = 1) -> tuple[list[Group], list[Group], dict[str, float]]:
    """(kept groups with advantages, every sampled group, the sampling statistics over all of them), for
    `steps` steps at once (a round of steps_per_generation): S x B groups to keep, S x the resample budget."""
    B, G = cfg.train.prompts_per_step * steps, sampling.group_size
    filtering = cfg.algo.zero_variance == "filter"
    budget = B + (cfg.algo.resample_budget * steps if filtering else 0)
    kept: list[Group] = []
    seen: list[Group] = []
    draws, gen_s, gen_tokens = 0, 0.0, 0.0
    while len(kept) < B and draws < budget:
        k = min(B - len(kept), budget - draws)
        examples = [task.train_example(state["cursor"] + i) for i in range(k)]
        state["cursor"] += k
        draws += k
        prompts = [encode_prompt(tokenizer, task.system_prompt, ex.prompt) for ex in examples]
        ro = engine.generate(prompts, sampling, gen)
        gen_s += ro.stats.get("seconds", 0.0)
        gen_tokens += ro.stats.get("tokens", 0.0)
        texts = tokenizer.batch_decode([ro.completion_ids[i][ro.mask[i].bool()] for i in range(ro.num_rows)],
                                       skip_special_tokens=True)
        row_examples = [examples[i // G] for i in range(ro.num_rows)]
        scores = score(terms, texts, row_examples)
        rewards = torch.tensor(total(terms, scores), dtype=torch.float32)
        if cfg.algo.overlong == "penalty":
            buffer = cfg.algo.overlong_buffer or max(sampling.max_new_tokens // 4, 1)
            penalty = A.overlong_penalty(ro.lengths, sampling.max_new_tokens, buffer)
            scores["overlong"] = penalty.tolist()
            rewards = rewards + penalty
        for group in _split(ro, examples, texts, scores, rewards):
            seen.append(group)
            group.kept = not (filtering and group.zero_variance)
            if group.kept:
                kept.append(group)
        if not filtering:
            break
    if kept:
        adv = A.group_advantages(torch.cat([g.rewards for g in kept]), G, cfg.algo.advantage_baseline,
                                 cfg.algo.advantage_scale, cfg.algo.std_eps)
        for i, g in enumerate(kept):
            g.advantages = adv[i * G:(i + 1) * G]
    for g in seen:
        if g.advantages.numel() == 0:
            g.advantages = torch.zeros(G)
    return kept, seen, _sample_stats(seen, kept, draws, B, gen_s, gen_tokens)


def _sample_stats(seen: list[Group], kept: list[Group], draws: int, B: int, gen_s: float,
                  gen_tokens: float) -> dict[str, float]:
    rewards = torch.cat([g.rewards for g in seen])
    lengths = torch.cat([g.mask.sum(dim=1) for g in seen])
    texts = [t for g in seen for t in g.texts]
    info: dict[str, float] = {
        "reward": float(rewards.mean()), "reward_std": float(rewards.std()) if len(rewards) > 1 else 0.0,
        "zero_variance_frac": sum(g.zero_variance for g in seen) / len(seen),
        "completion_length": float(lengths.mean()), "completion_length_max": float(lengths.max()),
        "truncated_frac": float(torch.cat([g.truncated for g in seen]).float().mean()),
        "self_check_rate": sum(1 for t in texts if SELF_CHECK.search(t)) / len(texts),
        "format_rate": sum(1 for t in texts if has_answer_format(t)) / len(texts),
        "gen_seconds": round(gen_s, 3), "gen_tokens_per_s": round(gen_tokens / gen_s, 1) if gen_s > 0 else 0.0,
        "groups_sampled": float(len(seen)), "groups_kept": float(len(kept)),
        "groups_filtered": float(len(seen) - len(kept)), "groups_resampled": float(max(draws - B, 0)),
    }
    for name in seen[0].scores:
        info[f"reward_{name}"] = sum(v for g in seen for v in g.scores[name]) / len(texts)
    return info


def split_round(kept: list[Group], seen: list[Group], info: dict[str, float], steps: int,
                B: int) -> list[tuple[list[Group], list[Group], dict[str, float]]]:
    """Deal one round's groups out to its `steps` steps: step j trains on kept[j*B:(j+1)*B], sampled j updates
    before it is trained on (`lag`). Groups filtered out are logged with the first step, which also carries the
    round's generation (and re-pack) time; each step's reward and length statistics are over its own groups,
    so with filtering the first step's include the round's filtered groups. Advantages were computed over the
    whole round (the same per group; 'batch-std' scales by the round's S x B groups, as TRL does)."""
    if steps == 1:
        return [(kept, seen, info)]
    filtered = [g for g in seen if not g.kept]
    out = []
    for j in range(steps):
        kept_j = kept[j * B:(j + 1) * B]
        for g in kept_j:
            g.lag = j
        seen_j = kept_j + (filtered if j == 0 else [])
        if not seen_j:  # filtering left fewer than S x B groups: this step has nothing to train on
            out.append(([], [], {"groups_sampled": 0.0, "groups_kept": 0.0, "policy_lag": float(j)}))
            continue
        if j == 0:
            round_keys = ("gen_seconds", "gen_tokens_per_s", "groups_resampled", "sync_seconds", "old_logp_seconds")
            stats = {**_sample_stats(seen_j, kept_j, len(seen_j), B, info["gen_seconds"], 0.0),
                     **{k: info[k] for k in round_keys if k in info}}
            stats["groups_sampled"] = info["groups_sampled"]  # the whole round's draws
        else:
            stats = _sample_stats(seen_j, kept_j, len(seen_j), B, 0.0, 0.0)
        out.append((kept_j, seen_j, {**stats, "policy_lag": float(j)}))
    return out


def lagging_old_logprobs(later: list[Group], model: Any, cfg: Any, sampling: SamplingParams,
                         pad_id: int) -> float | None:
    """Set `behaviour_logp` of a round's lagging groups before any update. The sampler's own log-probs are the
    sampling policy's, unless the engine reported none (hf) or warped the distribution (top-k/top-p) without the
    update re-applying that mask: then a no-grad forward scores them now. Returns that forward's seconds, or
    None when none was needed."""
    if not later:
        return None
    warped = (sampling.top_k > 0 or sampling.top_p < 1) and not cfg.algo.keep_sampling_mask
    if not warped and all(g.sampler_logp is not None for g in later):
        for g in later:
            g.behaviour_logp = g.sampler_logp
        return None
    t0 = time.perf_counter()
    batch = to_update_batch(later, cfg)
    G = len(later[0].texts)
    lp = behaviour_logprobs(model, batch, cfg.rollout.temperature, pad_id,
                            cfg.train.micro_batch or G * cfg.train.prompts_per_step, cfg.train.autocast,
                            all_rows=cfg.algo.beta > 0) * batch.mask
    for i, g in enumerate(later):
        g.behaviour_logp = lp[i * G:(i + 1) * G]
    return time.perf_counter() - t0


def group_state(g: Group) -> dict[str, Any]:
    """A sampled group as plain data (tensors, lists, strings, numbers): what a checkpoint keeps of the rest of
    a round, loadable with `torch.load(weights_only=True)`."""
    return {"example": g.example.to_json(), "prompt_ids": list(g.prompt_ids), "completion_ids": g.completion_ids,
            "mask": g.mask, "truncated": g.truncated, "sampler_logp": g.sampler_logp,
            "keep_threshold": g.keep_threshold, "texts": list(g.texts), "scores": {k: list(v) for k, v in g.scores.items()},
            "rewards": g.rewards, "advantages": g.advantages, "kept": g.kept, "lag": g.lag,
            "behaviour_logp": g.behaviour_logp}


def group_from_state(d: dict[str, Any]) -> Group:
    ex = d["example"]
    return Group(Example(ex["id"], ex["prompt"], ex["answer"], ex.get("meta") or {}), d["prompt_ids"],
                 d["completion_ids"], d["mask"], d["truncated"], d["sampler_logp"], d["keep_threshold"], d["texts"],
                 d["scores"], d["rewards"], d["advantages"], d["kept"], d["lag"], d["behaviour_logp"])


def to_update_batch(groups: Sequence[Group], cfg: Any) -> UpdateBatch:
    """Concatenate the kept groups into the rows the update trains on."""
    T = cfg.rollout.max_new_tokens
    if not groups:
        empty = torch.zeros((0, T))
        return UpdateBatch([], empty.long(), empty, torch.zeros(0), None, T, None)
    mask = torch.cat([g.mask for g in groups])
    if cfg.algo.overlong == "mask":  # truncated completions teach nothing about a finished answer
        mask = mask * (~torch.cat([g.truncated for g in groups])).float().unsqueeze(1)
    logps = [g.sampler_logp for g in groups]
    thresholds = [g.keep_threshold for g in groups]
    keep = cfg.algo.keep_sampling_mask and not any(x is None for x in thresholds)
    behaviour = [g.behaviour_logp for g in groups]
    return UpdateBatch(
        prompts=[g.prompt_ids for g in groups for _ in range(len(g.texts))],
        completion_ids=torch.cat([g.completion_ids for g in groups]),
        mask=mask,
        advantages=torch.cat([g.advantages for g in groups]),
        sampler_logp=None if any(x is None for x in logps) else torch.cat(logps),
        max_len=T,
        keep_threshold=torch.cat(thresholds) if keep else None,
        old_logp=None if any(x is None for x in behaviour) else torch.cat(behaviour),
    )

