"""Held-out evaluation: greedy decoding in eval mode, scored by the same verifier as the training reward.

Two accuracies are reported so that learning a format never passes for learning to solve: `accuracy`
(lenient: the <answer> tags, else the last number) and `accuracy_strict` (only the requested tags).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from grpolab.indicators import format_rate, self_check_rate
from grpolab.models import encode_prompt
from grpolab.rewards import get_verifier
from grpolab.rollout import RolloutEngine, SamplingParams
from grpolab.tasks import Example


@dataclass
class EvalResult:
    accuracy: float  # lenient
    accuracy_strict: float
    mean_length: float
    truncated: float
    self_check: float
    format: float
    num_examples: int
    seconds: float
    records: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def metrics(self, prefix: str = "eval_") -> dict[str, float]:
        return {f"{prefix}accuracy": self.accuracy, f"{prefix}accuracy_strict": self.accuracy_strict,
                f"{prefix}length": self.mean_length, f"{prefix}truncated": self.truncated,
                f"{prefix}self_check": self.self_check, f"{prefix}format": self.format,
                f"{prefix}n": self.num_examples, f"{prefix}seconds": self.seconds}


def evaluate(model: Any, engine: RolloutEngine, tokenizer: Any, examples: Sequence[Example], system_prompt: str,
             verifier: str, max_new_tokens: int, batch: int = 64) -> EvalResult:
    """Greedy held-out accuracy. The model is put in eval mode for the duration and restored after."""
    t0 = time.perf_counter()
    verify = get_verifier(verifier)
    params = SamplingParams(group_size=1, max_new_tokens=max_new_tokens, temperature=0.0)
    gen = torch.Generator().manual_seed(0)  # unused by greedy decoding; the Protocol asks for one
    was_training = model.training
    model.eval()
    texts: list[str] = []
    lengths: list[int] = []
    truncated: list[bool] = []
    try:
        order = sorted(range(len(examples)), key=lambda i: len(examples[i].prompt))  # less padding per batch
        by_index: dict[int, tuple[str, int, bool]] = {}
        for s in range(0, len(order), batch):
            idx = order[s:s + batch]
            prompts = [encode_prompt(tokenizer, system_prompt, examples[i].prompt) for i in idx]
            ro = engine.generate(prompts, params, gen)
            for j, i in enumerate(idx):
                toks = ro.completion_ids[j][ro.mask[j].bool()]
                by_index[i] = (tokenizer.decode(toks, skip_special_tokens=True), int(ro.mask[j].sum()),
                               bool(ro.truncated[j]))
        for i in range(len(examples)):
            text, n, tr = by_index[i]
            texts.append(text)
            lengths.append(n)
            truncated.append(tr)
    finally:
        model.train(was_training)
    records = []
    n_ok = n_strict = 0
    for ex, text, n, tr in zip(examples, texts, lengths, truncated):
        lenient, strict = verify(text, ex, "lenient"), verify(text, ex, "strict")
        n_ok += lenient.correct
        n_strict += strict.correct
        records.append({"id": ex.id, "prompt": ex.prompt, "answer": ex.answer, "completion": text,
                        "correct": lenient.correct, "correct_strict": strict.correct, "reason": lenient.reason,
                        "extracted": lenient.extracted, "length": n, "truncated": tr})
    k = max(len(examples), 1)
    return EvalResult(accuracy=n_ok / k, accuracy_strict=n_strict / k, mean_length=sum(lengths) / k,
                      truncated=sum(truncated) / k, self_check=self_check_rate(texts), format=format_rate(texts),
                      num_examples=len(examples), seconds=time.perf_counter() - t0, records=records)


def evaluate_model(cfg: Any) -> EvalResult:
    """Load `cfg.model.model` (the embedded default, a directory such as a run's `final/`, or a hub id) and
    evaluate it on the task's held-out split."""
    from grpolab.models import eos_token_ids, load_model
    from grpolab.rollout import build_engine
    from grpolab.tasks import build_task

    model, tokenizer = load_model(cfg.model, for_training=False)
    task = build_task(cfg.task, cfg.train.seed)
    engine = build_engine(cfg.rollout.engine, model, eos_token_ids(model, tokenizer), tokenizer.pad_token_id)
    max_new = cfg.eval.eval_max_new_tokens or cfg.rollout.max_new_tokens
    return evaluate(model, engine, tokenizer, task.eval_examples(), cfg.task.system_prompt, task.verifier, max_new,
                    cfg.eval.eval_batch)
