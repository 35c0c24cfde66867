"""Calibrate a task's difficulty for a model: base pass rate per level, and the levels worth training on.

GRPO learns only from groups whose completions disagree: a level the model never solves (pass rate ~0) or
always solves (~1) gives zero-variance groups and no gradient. For each level this samples `samples`
completions for each of `problems` training problems, at the training temperature, scores them with the task's
verifier (the same one the reward uses), and reports the pass rate with a Wilson 95% interval, the share of
problems solved at least once, and the share with mixed results (the groups that carry signal).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from grpolab.errors import UserError
from grpolab.models import encode_prompt
from grpolab.rewards import get_verifier
from grpolab.rollout import RolloutEngine, SamplingParams
from grpolab.tasks import build_task, task_info

Z_95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (0, 1) when n is 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def verdict(pass_rate: float, low: float, high: float) -> str:
    """'too hard' below `low`, 'too easy' above `high`, else 'train'."""
    return "too hard" if pass_rate < low else "too easy" if pass_rate > high else "train"


@dataclass
class LevelResult:
    level: int | None  # None when the task has no levels
    problems: int
    samples: int  # completions per problem
    correct: int  # correct completions, over problems x samples
    pass_rate: float
    ci_low: float
    ci_high: float
    solved_any: float  # share of problems with at least one correct completion (pass@samples)
    mixed: float  # share of problems with some right and some wrong completions (nonzero GRPO advantage)
    verdict: str
    records: list[dict[str, Any]] = field(default_factory=list, repr=False)


@dataclass
class CalibrationResult:
    task: str
    model: str
    temperature: float
    low: float
    high: float
    levels: list[LevelResult]
    seconds: float

    @property
    def recommended(self) -> list[int | None]:
        return [r.level for r in self.levels if r.verdict == "train"]

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "model": self.model, "temperature": self.temperature,
                "target": [self.low, self.high],
                "recommended": self.recommended, "seconds": round(self.seconds, 2),
                "levels": [{k: v for k, v in dataclasses.asdict(r).items() if k != "records"} for r in self.levels]}


def score_level(level: int | None, examples: Sequence[Any], texts: Sequence[str], verifier: str, mode: str,
                samples: int, low: float, high: float) -> LevelResult:
    """Pass-rate statistics from texts[i * samples + j], the j-th completion for examples[i]."""
    verify = get_verifier(verifier)
    records, per_problem = [], []
    for i, ex in enumerate(examples):
        results = [verify(texts[i * samples + j], ex, mode) for j in range(samples)]
        per_problem.append(sum(r.correct for r in results))
        records.extend({"id": ex.id, "completion": texts[i * samples + j], "correct": r.correct, "reason": r.reason}
                       for j, r in enumerate(results))
    n = len(examples) * samples
    correct = sum(per_problem)
    lo, hi = wilson_interval(correct, n)
    k = max(len(examples), 1)
    return LevelResult(level, len(examples), samples, correct, correct / max(n, 1), lo, hi,
                       sum(c > 0 for c in per_problem) / k, sum(0 < c < samples for c in per_problem) / k,
                       verdict(correct / max(n, 1), low, high), records)


def sample_texts(model: Any, engine: RolloutEngine, tokenizer: Any, system_prompt: str, prompts: Sequence[str],
                 params: SamplingParams, generator: torch.Generator, batch: int) -> list[str]:
    """params.group_size completions per prompt, in prompt order; the model is in eval mode meanwhile."""
    was_training = model.training
    model.eval()
    texts: list[str] = []
    try:
        for s in range(0, len(prompts), batch):
            encoded = [encode_prompt(tokenizer, system_prompt, p) for p in prompts[s:s + batch]]
            ro = engine.generate(encoded, params, generator)
            texts.extend(tokenizer.batch_decode([ro.completion_ids[i][ro.mask[i].bool()] for i in range(ro.num_rows)],
                                                skip_special_tokens=True))
    finally:
        model.train(was_training)
    return texts


def calibrate(cfg: Any, levels: Sequence[int] | None = None, problems: int = 32, samples: int = 8,
              low: float = 0.1, high: float = 0.9,
              on_level: Callable[[LevelResult], None] | None = None) -> CalibrationResult:
    """Pass rate per difficulty level of `cfg.task.task` for `cfg.model.model` (levels default to all)."""
    from grpolab.models import eos_token_ids, load_model
    from grpolab.rollout import build_engine

    t0 = time.perf_counter()
    info = task_info(cfg.task.task)
    if levels and not info.levels:
        raise UserError(f"task '{info.name}' has no difficulty levels, so --levels does not apply. Fix: drop --levels")
    if problems < 1 or samples < 1:
        raise UserError(f"--problems {problems} and --samples {samples} must both be at least 1")
    if not 0 <= low < high <= 1:
        raise UserError(f"--target-low {low} and --target-high {high} must satisfy 0 <= low < high <= 1")
    chosen: list[int | None] = list(levels) if levels else (list(info.levels) or [None])
    model, tokenizer = load_model(cfg.model, for_training=False)
    engine = build_engine(cfg.rollout.engine, model, eos_token_ids(model, tokenizer), tokenizer.pad_token_id)
    params = SamplingParams(samples, cfg.rollout.max_new_tokens, cfg.rollout.temperature, cfg.rollout.top_p,
                            cfg.rollout.top_k)
    generator = torch.Generator().manual_seed(cfg.train.seed)
    batch = max(1, cfg.eval.eval_batch // samples)
    results = []
    for level in chosen:
        task_cfg = cfg.task if level is None else dataclasses.replace(cfg.task, **{info.level_field: level})
        task = build_task(task_cfg, cfg.train.seed)
        examples = [task.train_example(i) for i in range(problems)]
        texts = sample_texts(model, engine, tokenizer, task.system_prompt, [ex.prompt for ex in examples], params,
                             generator, batch)
        result = score_level(level, examples, texts, task.verifier, cfg.reward.answer_mode, samples, low, high)
        results.append(result)
        if on_level is not None:
            on_level(result)
    return CalibrationResult(cfg.task.task, cfg.model.model, cfg.rollout.temperature, low, high, results,
                             time.perf_counter() - t0)
