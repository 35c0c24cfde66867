"""Reward terms: named functions (completion text, example) -> float, combined with weights.

Each term is logged on its own every step; the total is their weighted sum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

from grpolab.errors import UserError, unknown_choice
from grpolab.rewards.extract import has_answer_format
from grpolab.rewards.verify import get_verifier
from grpolab.tasks.base import Example

RewardFn = Callable[[str, Example], float]


BatchRewardFn = Callable[[Sequence[str], Sequence[Example]], list[float]]


@dataclass(frozen=True)
class RewardTerm:
    name: str
    weight: float
    fn: RewardFn
    batch_fn: BatchRewardFn | None = None  # scores a whole batch at once (TRL-style functions); then fn is unused


TermFactory = Callable[[str, str], RewardFn]  # (verifier name, answer mode) -> reward function
_TERMS: dict[str, TermFactory] = {}


def register_reward_term(name: str, factory: TermFactory) -> None:
    """Make `name` usable in --rewards. The factory gets the task's verifier name and the answer mode."""
    _TERMS[name] = factory


def reward_term_names() -> list[str]:
    return sorted(_TERMS)


def _correct(verifier_name: str, mode: str) -> RewardFn:
    verifier = get_verifier(verifier_name)

    def correct(completion: str, example: Example) -> float:
        return 1.0 if verifier(completion, example, mode).correct else 0.0

    return correct


def _format(completion: str, example: Example) -> float:
    return 1.0 if has_answer_format(completion) else 0.0


register_reward_term("correct", _correct)
register_reward_term("format", lambda verifier, mode: _format)


def parse_reward_spec(spec: str) -> list[tuple[str, float]]:
    """'correct:1,format:0.1' -> [('correct', 1.0), ('format', 0.1)]; a missing weight means 1."""
    out: list[tuple[str, float]] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, sep, weight = part.rpartition(":")
        if not sep:
            name, weight = part, "1"
        try:
            w = float(weight)
        except ValueError:
            name, w = part, 1.0
        if not math.isfinite(w):
            raise UserError(f"reward weight for '{name}' must be a finite number, got '{weight}'")
        out.append((name, w))
    if not out:
        raise UserError(f"--rewards '{spec}' names no reward term. Fix: --rewards correct")
    return out


def build_reward_terms(spec: str, verifier: str, answer_mode: str, custom: str = "",
                       custom_format: str = "standard") -> list[RewardTerm]:
    """Terms named in `spec` ('correct:1,format:0.1'), then the user functions of `custom` (--reward-fn)."""
    from grpolab.rewards.custom import build_custom_terms  # imported here: custom.py builds on this module's types

    terms: list[RewardTerm] = []
    for name, weight in parse_reward_spec(spec) if spec.strip() or not custom.strip() else []:
        if name not in _TERMS:
            raise unknown_choice("reward term", name, reward_term_names())
        terms.append(RewardTerm(name, weight, _TERMS[name](verifier, answer_mode)))
    for name, weight, batch_fn in build_custom_terms(custom, custom_format):
        terms.append(RewardTerm(name, weight, _one_at_a_time(batch_fn), batch_fn))
    names = [t.name for t in terms]
    if len(set(names)) != len(names):
        raise UserError(f"--rewards '{spec}' {'with --reward-fn ' + repr(custom) + ' ' if custom else ''}names a term "
                        "twice. Fix: give each term once with its weight (rename a function that shadows a term)")
    return terms


def _one_at_a_time(batch_fn: BatchRewardFn) -> RewardFn:
    return lambda completion, example: batch_fn([completion], [example])[0]


def score(terms: Sequence[RewardTerm], completions: Sequence[str], examples: Sequence[Example]) -> dict[str, list[float]]:
    """Per-term scores for each completion; examples[i] is the problem completion i answers.

    A term that raises or returns a non-finite number is a bug in that term: the error names the term and the
    example instead of silently scoring 0.
    """
    out: dict[str, list[float]] = {}
    for term in terms:
        if term.batch_fn is not None:  # validates its own output and names the failing function and example
            out[term.name] = term.batch_fn(completions, examples)
            continue
        values: list[float] = []
        for completion, example in zip(completions, examples):
            try:
                v = float(term.fn(completion, example))
            except Exception as e:  # re-raised with context: which term, which example
                raise UserError(f"reward term '{term.name}' raised {type(e).__name__}: {e} on example "
                                f"{example.id!r} (completion starts {completion[:60]!r})") from e
            if not math.isfinite(v):
                raise UserError(f"reward term '{term.name}' returned {v} on example {example.id!r}; rewards must be "
                                "finite numbers")
            values.append(v)
        out[term.name] = values
    return out


def total(terms: Sequence[RewardTerm], scores: dict[str, list[float]]) -> list[float]:
    n = len(next(iter(scores.values()))) if scores else 0
    return [sum(t.weight * scores[t.name][i] for t in terms) for i in range(n)]
