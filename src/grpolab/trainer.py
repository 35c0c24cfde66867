"""train(cfg): the GRPO loop, top to bottom, as numbered stages.

Data flows one way: task -> rollouts -> rewards -> advantages -> update -> metrics. Every random draw comes
from the run's generator (sampling) or from a seed derived from (run seed, step) (dropout), so a resumed run
reproduces an uninterrupted one.
"""

from __future__ import annotations

import copy
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from grpolab.batch import collect_groups, to_update_batch
from grpolab.checkpoint import generator_state, latest_checkpoint, load_checkpoint, restore_generator, save_checkpoint
from grpolab.config import Config
from grpolab.errors import UserError
from grpolab.evaluate import EvalResult, evaluate
from grpolab.models import eos_token_ids, export_model, load_model
from grpolab.plan import preflight
from grpolab.report.console import ConsoleReporter
from grpolab.report.jsonl import JsonlWriter, truncate_after_step
from grpolab.rewards import build_reward_terms
from grpolab.rollout import SamplingParams, build_engine
from grpolab.rundir import RunDir
from grpolab.runtime import set_allocator
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


def _optimizer(model: Any, cfg: Config) -> tuple[Any, Any]:
    params = [p for p in model.parameters() if p.requires_grad]
    t = cfg.train
    kw = dict(lr=t.lr, betas=(t.adam_beta1, t.adam_beta2), weight_decay=t.weight_decay)
    try:  # fused: one kernel over all parameters, no per-parameter temporaries (lower peak memory)
        opt = torch.optim.AdamW(params, fused=True, **kw)
    except (RuntimeError, TypeError):
        opt = torch.optim.AdamW(params, foreach=False, **kw)
    warm = t.warmup_steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)
    return opt, sched


def train(cfg: Config | None, resume: str | Path | None = None, overrides: dict[str, Any] | None = None,
          on_step: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train with GRPO (or the configured recipe); returns where everything was written and the accuracies.

    resume: a run directory to continue from its latest checkpoint, with its saved settings (`overrides` may
    extend `steps` or `max_minutes`). on_step: called with each step's metrics record.
    """
    # 0. set-up: run directory (config.json first), model, task, rewards, engines, optimizer, state
    if not resume:
        preflight(cfg)  # refuse a setting that cannot fit before anything is loaded or written
    run = RunDir.open(resume) if resume else RunDir.create(cfg)
    if resume:
        cfg = run.config.replace(**overrides) if overrides else run.config
    assert cfg is not None
    set_allocator(cfg.train.allocator)
    model, tokenizer = load_model(cfg.model)
    task = build_task(cfg.task, cfg.train.seed)
    terms = build_reward_terms(cfg.reward.rewards, task.verifier, cfg.reward.answer_mode, cfg.reward.reward_fn,
                               cfg.reward.reward_fn_format)
    eos, pad = eos_token_ids(model, tokenizer), tokenizer.pad_token_id
    sample_eos = [] if cfg.rollout.ignore_eos else eos
    engine = build_engine(cfg.rollout.engine, model, sample_eos, pad, cfg.rollout.rollout_quant)
    same = cfg.rollout.rollout_quant == "none" and not cfg.rollout.ignore_eos
    eval_engines: list[Any] = [engine] if same else []  # built on first use: fp32 weights, real EOS
    warps = cfg.rollout.top_k > 0 or cfg.rollout.top_p < 1
    if cfg.algo.keep_sampling_mask and warps and engine.name != "fast":
        raise UserError(f"--keep-sampling-mask needs the sampler's kept sets, which the '{engine.name}' engine does not "
                        "report. Fix: --engine fast, or --no-keep-sampling-mask, or sample without top-k/top-p")
    full_ft_ref = cfg.algo.beta > 0 and cfg.model.lora_rank == 0
    ref_model = copy.deepcopy(model).eval().requires_grad_(False) if full_ft_ref else None
    optimizer, scheduler = _optimizer(model, cfg)
    gen = torch.Generator().manual_seed(cfg.train.seed)
    state: dict[str, Any] = {"cursor": 0, "train_seconds": 0.0, "best_accuracy": None, "best_step": None,
                             "best_checkpoint": None, "eval_before": None}
    start = 0
    if resume:
        ckpt = latest_checkpoint(run.checkpoints)
        if ckpt is None:
            raise UserError(f"run '{run.path}' has no checkpoint to resume from. Fix: start a new run")
        state = load_checkpoint(ckpt, model, optimizer, scheduler)
        restore_generator(gen, state["generator"])
        start = state["step"]
        for f in (run.metrics_path, run.rollouts_path):
            truncate_after_step(f, start)
        engine.sync()
    metrics_out, rollouts_out = JsonlWriter(run.metrics_path), JsonlWriter(run.rollouts_path)
    sampling = SamplingParams(cfg.rollout.group_size, cfg.rollout.max_new_tokens, cfg.rollout.temperature,
                              cfg.rollout.top_p, cfg.rollout.top_k)
    eval_max_new = cfg.eval.eval_max_new_tokens or cfg.rollout.max_new_tokens

    def run_eval(step: int) -> EvalResult:
        if not eval_engines:
            eval_engines.append(build_engine(cfg.rollout.engine, model, eos, pad))
        eval_engine = eval_engines[0]
        eval_engine.sync()
        result = evaluate(model, eval_engine, tokenizer, task.eval_examples(), cfg.task.system_prompt,
                          task.verifier, eval_max_new, cfg.eval.eval_batch)
        metrics_out.write({"step": step, "train_seconds": round(state["train_seconds"], 3), **result.metrics()})
        run.write_eval_records(step, result.records)
        console.eval(step, result)
        return result

    def checkpoint(step: int) -> Path:
        return save_checkpoint(run.checkpoints, step, model, optimizer, scheduler,
                               {**state, "generator": generator_state(gen)}, cfg.run.keep_checkpoints)

    console = ConsoleReporter(cfg, run.path, quiet=cfg.run.quiet)
    console.start(start)
    for report in getattr(task, "reports", ()):  # data tasks: rows read, loaded and skipped (--skip-bad-rows)
        console.message(report.line())
    eval_before = None
    if not resume and cfg.eval.eval_before_after:
        eval_before = run_eval(0)
        state["eval_before"] = eval_before.accuracy
    step, interrupted, nonfinite = start, False, 0
    last_eval: EvalResult | None = None
    last_eval_step = -1
    try:
        with _StopFlag() as stop:
            while step < cfg.train.steps:
                if cfg.train.max_minutes and state["train_seconds"] >= cfg.train.max_minutes * 60:
                    break
                t_step = time.perf_counter()
                step += 1
                torch.manual_seed(hash((cfg.train.seed, step)) % 2**62)  # dropout: reproducible per step
                # 1-4. sample B groups, score them, advantages; filter zero-variance groups if the recipe says so
                model.eval()
                groups, sampled, sample_info = collect_groups(task, tokenizer, engine, terms, sampling, cfg, state, gen)
                # 5. policy update on the informative rows
                model.train()
                batch = to_update_batch(groups, cfg)
                t_update = time.perf_counter()
                try:
                    upd = policy_update(model, batch, cfg.algo, optimizer, scheduler,
                                        temperature=cfg.rollout.temperature, pad_id=pad,
                                        micro_batch=cfg.train.micro_batch, grad_clip=cfg.train.grad_clip,
                                        ref_model=ref_model)
                    nonfinite = 0
                except NonFiniteLoss as e:
                    nonfinite += 1
                    console.message(f"step {step}: {e}; optimizer step skipped, weights unchanged")
                    if nonfinite >= 3:
                        raise UserError("the loss or gradient was NaN/inf on 3 steps in a row (weights unchanged by "
                                        "them; the last checkpoint is intact). Fix: lower --lr by 10x, keep "
                                        "--grad-clip 1.0, use --dtype float32") from e
                    upd = {"rows_trained": 0.0, "nonfinite": 1.0}
                # 6. the sampler sees the new weights
                engine.sync()
                # 7. log metrics and every completion
                update_s = time.perf_counter() - t_update
                step_s = time.perf_counter() - t_step
                state["train_seconds"] += step_s
                record = {"step": step, "train_seconds": round(state["train_seconds"], 3),
                          "step_seconds": round(step_s, 3), "update_seconds": round(update_s, 3),
                          "lr": scheduler.get_last_lr()[0], **sample_info, **upd}
                metrics_out.write(record)
                if cfg.run.log_rollouts:
                    rollouts_out.write_many(rec for g in sampled for rec in g.records(step))
                console.step(step, record)
                if on_step is not None:
                    on_step(record)
                # 8. evaluate, keep the best, checkpoint
                saved = False
                due_steps = cfg.eval.eval_every and step % cfg.eval.eval_every == 0
                due_time = (cfg.eval.eval_every_minutes and
                            state["train_seconds"] >= state.get("next_eval_seconds", cfg.eval.eval_every_minutes * 60))
                if due_time:
                    period = cfg.eval.eval_every_minutes * 60
                    state["next_eval_seconds"] = (state["train_seconds"] // period + 1) * period
                if due_steps or due_time:
                    last_eval, last_eval_step = run_eval(step), step
                    if state["best_accuracy"] is None or last_eval.accuracy > state["best_accuracy"]:
                        state.update(best_accuracy=last_eval.accuracy, best_step=step,
                                     best_checkpoint=f"step-{step:06d}")
                        checkpoint(step)
                        saved = True
                if cfg.run.checkpoint_every and step % cfg.run.checkpoint_every == 0 and not saved:
                    checkpoint(step)
                if stop.requested:
                    interrupted = True
                    console.message("Ctrl-C: stopped after this step")
                    break
        # 9. last checkpoint, final evaluation and export
        ckpt_dir = checkpoint(step) if step > start else latest_checkpoint(run.checkpoints)
        eval_after, final_dir = None, None
        if not interrupted:
            if (last_eval is None or last_eval_step != step) and cfg.eval.eval_before_after:
                last_eval = run_eval(step)
            eval_after = last_eval
            if eval_after is not None and (state["best_accuracy"] is None or
                                           eval_after.accuracy > state["best_accuracy"]):
                state.update(best_accuracy=eval_after.accuracy, best_step=step)
            if cfg.run.export:
                final_dir = export_model(model, tokenizer, run.path / "final")
    finally:
        metrics_out.close()
        rollouts_out.close()
        console.close()
    result = TrainResult(run.path, step, eval_before, eval_after, state["best_accuracy"], state["best_step"],
                         final_dir, interrupted, state["train_seconds"])
    run.write_summary(result, ckpt_dir)
    console.summary(result)
    return result

