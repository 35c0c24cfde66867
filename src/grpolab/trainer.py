"""train(cfg): the GRPO loop, top to bottom, as numbered stages.

Data flows one way: task -> rollouts -> rewards -> advantages -> update -> metrics. Every random draw comes
from the run's generator (sampling) or from a seed derived from (run seed, step) (dropout), so a resumed run
reproduces an uninterrupted one.
"""

from __future__ import annotations

import copy
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from grpolab.batch import (collect_groups, group_from_state, group_state, lagging_old_logprobs, split_round,
                           to_update_batch)
from grpolab.checkpoint import (generator_state, latest_checkpoint, load_checkpoint, load_pending, restore_generator,
                                save_checkpoint)
from grpolab.config import Config
from grpolab.curriculum import Curriculum, base_pass_rate, choose_start
from grpolab.errors import UserError
from grpolab.evaluate import EvalResult, evaluate
from grpolab.models import eos_token_ids, export_model, load_model, resolve_device
from grpolab.plan import preflight
from grpolab.report.console import ConsoleReporter
from grpolab.report.jsonl import JsonlWriter, truncate_after_step
from grpolab.rewards import build_reward_terms
from grpolab.rollout import SamplingParams, build_engine
from grpolab.rundir import RunDir
from grpolab.runtime import check_autocast, set_allocator
from grpolab.tasks import build_task
from grpolab.update import NonFiniteLoss, policy_update


@dataclass
class TrainResult:
    run_dir: Path
    steps_done: int
    eval_before: EvalResult | None
    eval_after: EvalResult | None
    best_accuracy: float | None
    best_step: int | None
    final_dir: Path | None
    interrupted: bool
    train_seconds: float


class _StopFlag:
    """First Ctrl-C: finish the current step, checkpoint, stop. Second Ctrl-C: stop at once."""

    def __init__(self) -> None:
        self.requested = False
        self._old: Any = None

    def __enter__(self) -> "_StopFlag":
        def handler(signum: int, frame: Any) -> None:
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True

        try:
            self._old = signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread: no handler, Ctrl-C behaves as usual
            self._old = None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def _optimizer(model: Any, cfg: Config) -> tuple[Any, Any, "LRFactor"]:
    params = [p for p in model.parameters() if p.requires_grad]
    t = cfg.train
    kw = dict(lr=t.lr, betas=(t.adam_beta1, t.adam_beta2), weight_decay=t.weight_decay)
    try:  # fused: one kernel over all parameters, no per-parameter temporaries (lower peak memory)
        opt = torch.optim.AdamW(params, fused=True, **kw)
    except (RuntimeError, TypeError):
        opt = torch.optim.AdamW(params, foreach=False, **kw)
    factor = LRFactor(t.lr_schedule, t.warmup_steps, t.min_lr_ratio)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor), factor


class LRFactor:
    """The learning-rate multiplier: linear warm-up over optimizer steps, then constant or a decay driven by
    `progress`, the fraction of the run's budget used (set by the trainer before each update, from the step
    count or the training clock, so a time-budgeted run decays over its minutes and a resumed run continues
    where it stopped: LambdaLR checkpoints this object's fields)."""

    def __init__(self, kind: str, warmup_steps: int, min_ratio: float) -> None:
        self.kind, self.warmup_steps, self.min_ratio = kind, warmup_steps, min_ratio
        self.progress = 0.0

    def __call__(self, s: int) -> float:
        warm = min(1.0, (s + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        p = min(1.0, max(0.0, self.progress))
        decay = {"linear": 1.0 - p, "cosine": 0.5 * (1.0 + math.cos(math.pi * p))}.get(self.kind, 1.0)
        return warm * (self.min_ratio + (1.0 - self.min_ratio) * decay)


def budget_progress(step: int, train_seconds: float, cfg: Config) -> float:
    """Fraction of the run's budget used after `step` steps and `train_seconds` of training: whichever of
    --steps and --max-minutes is nearer to stopping the run."""
    p = step / cfg.train.steps
    if cfg.train.max_minutes:
        p = max(p, train_seconds / (cfg.train.max_minutes * 60))
    return min(1.0, p)


def _check_bf16(cfg: Config, resumed: bool) -> None:
    """Refuse the bf16 settings (update autocast, sampler weights) on a device without native bf16."""
    device = resolve_device(cfg.model.device)
    check_autocast(cfg.train.autocast, device, resumed=resumed)
    check_autocast(cfg.rollout.rollout_quant, device, resumed=resumed, option="--rollout-quant", off="fp16")


class _Session:
    """Everything a run holds: set up once (step 0), then used by the stages of `train`."""

    def __init__(self, cfg: Config | None, resume: str | Path | None, overrides: dict[str, Any] | None) -> None:
        if not resume:
            preflight(cfg)  # refuse a setting that cannot fit before anything is loaded or written
            _check_bf16(cfg, resumed=False)
        self.run = RunDir.open(resume) if resume else RunDir.create(cfg)
        if resume:
            cfg = self.run.config.replace(**overrides) if overrides else self.run.config
            _check_bf16(cfg, resumed=True)
        assert cfg is not None
        self.cfg = cfg
        set_allocator(cfg.train.allocator)
        self.model, self.tokenizer = load_model(cfg.model)
        self.task = build_task(cfg.task, cfg.train.seed)
        self.terms = build_reward_terms(cfg.reward.rewards, self.task.verifier, cfg.reward.answer_mode,
                                        cfg.reward.reward_fn, cfg.reward.reward_fn_format)
        self.eos, self.pad = eos_token_ids(self.model, self.tokenizer), self.tokenizer.pad_token_id
        r = cfg.rollout
        self.engine = build_engine(r.engine, self.model, [] if r.ignore_eos else self.eos, self.pad, r.rollout_quant)
        # evaluation decodes with fp32 weights and the real end-of-sequence tokens (built on first use otherwise)
        self._eval_engine = self.engine if r.rollout_quant == "none" and not r.ignore_eos else None
        if cfg.algo.keep_sampling_mask and (r.top_k > 0 or r.top_p < 1) and self.engine.name != "fast":
            raise UserError(f"--keep-sampling-mask needs the sampler's kept sets, which the '{self.engine.name}' engine "
                            "does not report. Fix: --engine fast, or --no-keep-sampling-mask, or no top-k/top-p")
        full_ft_ref = cfg.algo.beta > 0 and cfg.model.lora_rank == 0
        self.ref_model = copy.deepcopy(self.model).eval().requires_grad_(False) if full_ft_ref else None
        # the scheduler's LRFactor: LambdaLR checkpoints and restores its fields in place, so this stays the one
        self.optimizer, self.scheduler, self.lr_factor = _optimizer(self.model, cfg)
        self.gen = torch.Generator().manual_seed(cfg.train.seed)
        self.state: dict[str, Any] = {"step": 0, "cursor": 0, "train_seconds": 0.0, "best_accuracy": None,
                                      "best_step": None, "best_checkpoint": None, "eval_before": None}
        # the rest of the current round (steps_per_generation > 1): per step, (kept groups, sampled groups, stats)
        self.pending: list[tuple[list[Any], list[Any], dict[str, float]]] = []
        self.engine_stale = False  # the weights moved since the sampler last saw them
        if resume:
            ckpt = latest_checkpoint(self.run.checkpoints)
            if ckpt is None:
                raise UserError(f"run '{self.run.path}' has no checkpoint to resume from. Fix: start a new run")
            self.state = load_checkpoint(ckpt, self.model, self.optimizer, self.scheduler)
            self.pending = [([group_from_state(g) for g in kept], [group_from_state(g) for g in seen], info)
                            for kept, seen, info in load_pending(ckpt)]
            restore_generator(self.gen, self.state["generator"])
            for f in (self.run.metrics_path, self.run.rollouts_path):
                truncate_after_step(f, self.state["step"])
            self.engine.sync()
        self.sampling = SamplingParams(r.group_size, r.max_new_tokens, r.temperature, r.top_p, r.top_k)
        self.curriculum = self._curriculum(resume)
        self.metrics_out, self.rollouts_out = JsonlWriter(self.run.metrics_path), JsonlWriter(self.run.rollouts_path)
        self.console = ConsoleReporter(cfg, self.run.path, quiet=cfg.run.quiet)

    def _curriculum(self, resume: Any) -> Curriculum | None:
        """The curriculum (it becomes the task), its start level chosen from the base pass rate on a new run."""
        t = self.cfg.task
        if not t.curriculum:
            return None
        cur = Curriculum(t, self.cfg.train.seed, t.curriculum_start, t.curriculum_promote, t.curriculum_window,
                         target_task=self.task)
        self.task = cur
        if resume:
            cur.load_state_dict(self.state["curriculum"])
            return cur
        if not t.curriculum_start:
            level, rates = choose_start(cur, lambda lv: base_pass_rate(
                cur, lv, self.model, self.engine, self.tokenizer, self.sampling, self.gen, t.curriculum_problems,
                self.cfg.reward.answer_mode, max(1, self.cfg.eval.eval_batch // self.sampling.group_size)),
                t.curriculum_min_pass)
            cur.set_level(level)
            self.state["curriculum_base_pass"] = {str(k): v for k, v in rates.items()}
        self.state["curriculum"] = cur.state_dict()
        return cur

    def sample(self) -> tuple[list[Any], list[Any], dict[str, float]]:
        """Stages 1-4 for this step: (kept groups with advantages, every sampled group, sampling statistics). With
        steps_per_generation S > 1 a round samples the prompts of S steps at once; its later steps train on
        groups that lag the weights, each carrying its sampling policy's log-probs. The sampler is brought up to
        date with the weights here, once per round (re-packing costs ~0.05-0.1 s for 135M weights)."""
        if not self.pending:
            cfg = self.cfg
            t_sync = time.perf_counter()
            if self.engine_stale:
                self.engine.sync()
                self.engine_stale = False
            sync_s = time.perf_counter() - t_sync
            B = cfg.train.prompts_per_step
            # always whole rounds, so that a run extended on resume (more --steps) samples as an uninterrupted one
            S = cfg.train.steps_per_generation
            kept, seen, info = collect_groups(self.task, self.tokenizer, self.engine, self.terms, self.sampling, cfg,
                                              self.state, self.gen, steps=S)
            seconds = lagging_old_logprobs(kept[B:], self.model, cfg, self.sampling, self.pad)
            if seconds is not None:
                info["old_logp_seconds"] = round(seconds, 3)
            info["sync_seconds"] = round(sync_s, 3)
            self.pending = split_round(kept, seen, info, S, B)
        return self.pending.pop(0)

    def observe_curriculum(self, step: int, groups: list[Any]) -> dict[str, float]:
        """Feed the step's pass rates to the curriculum; the level the step trained at, for the metrics."""
        cur = self.curriculum
        if cur is None:
            return {}
        level = cur.level
        # a round (steps_per_generation > 1) can still hold groups drawn before a promotion: only groups of the
        # current level count towards the next one
        groups = [g for g in groups if g.example.meta.get("level", level) == level]
        rates = [sum(g.scores["correct"]) / len(g.texts) if "correct" in g.scores else float((g.rewards > 0).float().mean())
                 for g in groups]
        new = cur.observe(rates)
        self.state["curriculum"] = cur.state_dict()
        if new is not None:
            self.console.message(f"step {step}: curriculum promoted to {cur.field} {new} "
                                 f"(pass rate over the last {cur.window} groups >= {cur.promote})")
        return {"curriculum_level": float(level)}

    def evaluate(self, step: int) -> EvalResult:
        cfg = self.cfg
        if self._eval_engine is None:
            self._eval_engine = build_engine(cfg.rollout.engine, self.model, self.eos, self.pad)
        self._eval_engine.sync()
        result = evaluate(self.model, self._eval_engine, self.tokenizer, self.task.eval_examples(),
                          cfg.task.system_prompt, self.task.verifier,
                          cfg.eval.eval_max_new_tokens or cfg.rollout.max_new_tokens, cfg.eval.eval_batch)
        self.metrics_out.write({"step": step, "train_seconds": round(self.state["train_seconds"], 3),
                                **result.metrics()})
        self.run.write_eval_records(step, result.records)
        self.console.eval(step, result)
        return result

    def eval_due(self, step: int) -> bool:
        e = self.cfg.eval
        due = bool(e.eval_every) and step % e.eval_every == 0
        if e.eval_every_minutes:
            period = e.eval_every_minutes * 60
            if self.state["train_seconds"] >= self.state.get("next_eval_seconds", period):
                self.state["next_eval_seconds"] = (self.state["train_seconds"] // period + 1) * period
                due = True
        return due

    def checkpoint(self, step: int) -> Path:
        self.state["step"] = step
        pending = [([group_state(g) for g in kept], [group_state(g) for g in seen], info)
                   for kept, seen, info in self.pending]
        return save_checkpoint(self.run.checkpoints, step, self.model, self.optimizer, self.scheduler,
                               {**self.state, "generator": generator_state(self.gen)}, self.cfg.run.keep_checkpoints,
                               pending=pending)

    def update(self, step: int, groups: list[Any], nonfinite: list[int]) -> dict[str, float]:
        """Stage 5: the policy update; a NaN/inf loss skips the optimizer step (three in a row stop the run)."""
        cfg = self.cfg
        try:
            upd = policy_update(self.model, to_update_batch(groups, cfg), cfg.algo, self.optimizer, self.scheduler,
                                temperature=cfg.rollout.temperature, pad_id=self.pad, micro_batch=cfg.train.micro_batch,
                                grad_clip=cfg.train.grad_clip, ref_model=self.ref_model,
                                empty_steps=cfg.train.empty_steps, autocast=cfg.train.autocast)
            nonfinite[0] = 0
            return upd
        except NonFiniteLoss as e:
            nonfinite[0] += 1
            self.console.message(f"step {step}: {e}; optimizer step skipped, weights unchanged")
            if nonfinite[0] >= 3:
                raise UserError("the loss or gradient was NaN/inf on 3 steps in a row (weights unchanged by them; the "
                                "last checkpoint is intact). Fix: lower --lr by 10x, keep --grad-clip 1.0, use "
                                "--dtype float32") from e
            return {"rows_trained": 0.0, "nonfinite": 1.0}

    def close(self) -> None:
        self.metrics_out.close()
        self.rollouts_out.close()
        self.console.close()


def train(cfg: Config | None, resume: str | Path | None = None, overrides: dict[str, Any] | None = None,
          on_step: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train with GRPO (or the configured recipe); returns where everything was written and the accuracies.

    resume: a run directory to continue from its latest checkpoint, with its saved settings (`overrides` may
    extend `steps` or `max_minutes`). on_step: called with each step's metrics record.
    """
    # 0. set-up: config.json first, model, task, rewards, engines, optimizer, RNG, state (or the checkpoint's)
    s = _Session(cfg, resume, overrides)
    cfg, state = s.cfg, s.state
    start = step = state["step"]
    s.console.start(start)
    if s.curriculum is not None and not resume:
        rates = state.get("curriculum_base_pass") or {}
        measured = ", ".join(f"{s.curriculum.field} {k}: {100 * v:.0f}%" for k, v in rates.items())
        s.console.message(f"curriculum: levels {s.curriculum.levels}, starting at {s.curriculum.field} "
                          f"{s.curriculum.level}" + (f" (base pass rate {measured})" if measured else ""))
    for report in getattr(s.task, "reports", ()):  # data tasks: rows read, loaded and skipped (--skip-bad-rows)
        s.console.message(report.line())
    eval_before = s.evaluate(0) if not resume and cfg.eval.eval_before_after else None
    state["eval_before"] = None if eval_before is None else eval_before.accuracy
    last_eval: tuple[int, EvalResult] | None = None
    interrupted, nonfinite, ckpt_dir, final_dir = False, [0], None, None
    try:
        with _StopFlag() as stop:
            while step < cfg.train.steps and not (cfg.train.max_minutes and
                                                  state["train_seconds"] >= cfg.train.max_minutes * 60):
                t_step = time.perf_counter()
                step += 1
                torch.manual_seed(hash((cfg.train.seed, step)) % 2**62)  # dropout: reproducible per step
                # 1-4. sample B groups, score them, advantages; filter zero-variance groups if the recipe says so
                s.model.eval()
                groups, sampled, info = s.sample()
                info.update(s.observe_curriculum(step, sampled))
                # 5. policy update on the rows that carry a gradient
                s.model.train()
                # the next step's learning rate follows the budget used so far (steps done; the training clock as
                # of this step's start)
                s.lr_factor.progress = budget_progress(step, state["train_seconds"], cfg)
                t_update = time.perf_counter()
                upd = s.update(step, groups, nonfinite)
                # 6. the sampler must see the new weights before it next samples (none when the optimizer did not
                # step: an empty step under --empty-steps skip, or a NaN/inf loss); stage 1 of the next round
                # re-packs them (~0.05 s with the native fp16 kernels, ~0.8 s through fbgemm)
                t_done = time.perf_counter()
                if upd.get("updates", 0.0) > 0:
                    s.engine_stale = True
                # 7. log metrics and every completion
                step_s = time.perf_counter() - t_step
                state["train_seconds"] += step_s
                record = {"step": step, "train_seconds": round(state["train_seconds"], 3),
                          "step_seconds": round(step_s, 3), "update_seconds": round(t_done - t_update, 3),
                          "sync_seconds": 0.0, "lr": s.scheduler.get_last_lr()[0], **info, **upd}
                s.metrics_out.write(record)
                if cfg.run.log_rollouts:
                    s.rollouts_out.write_many(rec for g in sampled for rec in g.records(step))
                s.console.step(step, record)
                if on_step is not None:
                    on_step(record)
                # 8. evaluate, keep the best, checkpoint
                saved = False
                if s.eval_due(step):
                    last_eval = (step, s.evaluate(step))
                    if state["best_accuracy"] is None or last_eval[1].accuracy > state["best_accuracy"]:
                        state.update(best_accuracy=last_eval[1].accuracy, best_step=step,
                                     best_checkpoint=f"step-{step:06d}")
                        s.checkpoint(step)
                        saved = True
                if cfg.run.checkpoint_every and step % cfg.run.checkpoint_every == 0 and not saved:
                    s.checkpoint(step)
                if stop.requested:
                    interrupted = True
                    s.console.message("Ctrl-C: stopped after this step")
                    break
        # 9. last checkpoint, final evaluation and export
        ckpt_dir = s.checkpoint(step) if step > start else latest_checkpoint(s.run.checkpoints)
        if not interrupted:
            if (last_eval is None or last_eval[0] != step) and cfg.eval.eval_before_after:
                last_eval = (step, s.evaluate(step))
            if last_eval is not None and (state["best_accuracy"] is None or last_eval[1].accuracy > state["best_accuracy"]):
                state.update(best_accuracy=last_eval[1].accuracy, best_step=step)
            if cfg.run.export:
                final_dir = export_model(s.model, s.tokenizer, s.run.path / "final")
    finally:
        s.close()
    eval_after = last_eval[1] if last_eval is not None and not interrupted else None
    result = TrainResult(s.run.path, step, eval_before, eval_after, state["best_accuracy"], state["best_step"],
                         final_dir, interrupted, state["train_seconds"])
    s.run.write_summary(result, ckpt_dir)
    s.console.summary(result)
    return result
