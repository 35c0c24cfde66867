import json
import math
import signal

import pytest
import torch

from grpolab.checkpoint import latest_checkpoint
from grpolab.config import Config
from grpolab.models import load_model
from grpolab.report.jsonl import read_jsonl
from grpolab.trainer import LRFactor, budget_progress, train
from grpolab.update import NonFiniteLoss, UpdateBatch, policy_update

STEP_KEYS = {"step", "reward", "reward_std", "reward_test_vowels", "zero_variance_frac", "completion_length",
             "truncated_frac", "clip_fraction", "entropy", "grad_norm", "loss", "gen_tokens_per_s", "step_seconds",
             "train_seconds", "lr", "rows_trained", "self_check_rate", "format_rate", "kl"}


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "weights.safetensors"))


def test_two_step_smoke(tiny_cfg, tiny_model_dir):
    cfg = tiny_cfg(run_name="smoke")
    before, _ = load_model(cfg.model)
    result = train(cfg)
    run = result.run_dir
    assert json.loads((run / "config.json").read_text()) == cfg.to_dict()
    records = read_jsonl(run / "metrics.jsonl")
    steps = [r for r in records if "reward" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for r in steps:
        assert STEP_KEYS <= set(r), STEP_KEYS - set(r)
        assert torch.isfinite(torch.tensor(r["loss"])) and r["rows_trained"] > 0
    evals = [r for r in records if "eval_accuracy" in r]
    assert [r["step"] for r in evals] == [0, 2]
    rollouts = read_jsonl(run / "rollouts.jsonl")
    assert len(rollouts) == 2 * 2 * 4 and {"completion", "reward", "advantage", "rewards"} <= set(rollouts[0])
    ckpt = latest_checkpoint(run / "checkpoints")
    assert ckpt is not None and ckpt.name == "step-000002"
    trained = _weights(ckpt)
    changed = [n for n, p in before.named_parameters() if not torch.equal(p.detach(), trained[n])]
    assert len(changed) == len(trained)  # every trainable tensor moved
    # the exported model loads with plain transformers and generates
    from transformers import AutoModelForCausalLM, AutoTokenizer

    m = AutoModelForCausalLM.from_pretrained(result.final_dir)
    tok = AutoTokenizer.from_pretrained(result.final_dir)
    out = m.generate(**tok("What is 1 + 1?", return_tensors="pt"), max_new_tokens=3, do_sample=False)
    assert out.shape[1] > 0
    assert json.loads((run / "summary.json").read_text())["steps"] == 2


def _batch(n_groups=2, G=4, T=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 200, (n_groups * G, T), generator=g)
    mask = torch.ones(n_groups * G, T)
    mask[1, 3:] = 0
    mask[5, 2:] = 0
    adv = torch.randn(n_groups * G, generator=g)
    adv[G:] = 0.0  # the second group has zero variance
    prompts = [[1, 5, 6] if r < G else [1, 9, 9, 9] for r in range(n_groups * G)]
    return UpdateBatch(prompts, ids, mask, adv, None, T)


@pytest.mark.parametrize("aggregation", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_micro_batches_give_the_same_update(tiny_model_dir, aggregation):
    cfg = Config.from_flat(model=str(tiny_model_dir), loss_aggregation=aggregation, beta=0.0)
    deltas = []
    for micro in (0, 1, 3):
        model, tok = load_model(cfg.model)
        start = {n: p.detach().clone() for n, p in model.named_parameters()}
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        stats = policy_update(model, _batch(), cfg.algo, opt, sched, temperature=1.0, pad_id=tok.pad_token_id,
                              micro_batch=micro, grad_clip=0.0)
        assert stats["rows_trained"] == 4  # the zero-advantage group skipped forward and backward
        deltas.append({n: p.detach() - start[n] for n, p in model.named_parameters()})
    for other in deltas[1:]:
        for n in deltas[0]:
            torch.testing.assert_close(other[n], deltas[0][n], rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode", ["momentum", "skip"])
def test_a_step_without_gradient_rows_follows_empty_steps(tiny_model_dir, mode):
    cfg = Config.from_flat(model=str(tiny_model_dir), beta=0.0)
    model, tok = load_model(cfg.model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    policy_update(model, _batch(), cfg.algo, opt, sched, temperature=1.0, pad_id=tok.pad_token_id, micro_batch=0,
                  grad_clip=1.0)
    after_first = {n: p.detach().clone() for n, p in model.named_parameters()}
    empty = _batch()
    empty.advantages.zero_()  # every group zero-variance: no row carries a gradient
    stats = policy_update(model, empty, cfg.algo, opt, sched, temperature=1.0, pad_id=tok.pad_token_id,
                          micro_batch=0, grad_clip=1.0, empty_steps=mode)
    assert stats["rows_trained"] == 0 and stats["updates"] == (1.0 if mode == "momentum" else 0.0)
    moved = [n for n, p in model.named_parameters() if not torch.equal(p, after_first[n])]
    steps = {int(s["step"]) for s in opt.state.values()}
    if mode == "momentum":  # AdamW with a zero gradient: m decays but is nonzero, so every weight moves again
        assert len(moved) == len(after_first) and steps == {2}
    else:
        assert moved == [] and steps == {1}
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("mode", ["momentum", "skip"])
def test_the_sampler_is_repacked_only_after_an_optimizer_step(tiny_cfg, monkeypatch, mode):
    """Every group has equal rewards and there is no KL term: under 'skip' the weights never change, so the fp16
    sampler is not re-packed (the costly part of a step); under 'momentum' AdamW steps, so it is, once a step."""
    from grpolab.rollout.fast import FastCPUEngine

    calls = []
    original = FastCPUEngine.sync
    monkeypatch.setattr(FastCPUEngine, "sync", lambda self: (calls.append(1), original(self))[1])
    train(tiny_cfg(run_name=f"sync-{mode}", rewards="test_constant", rollout_quant="fp16", empty_steps=mode, beta=0.0,
                   steps=3, eval_before_after=False, export=False))
    # the engine's first build, then before each later step's sampling (the weights moved in the step before)
    assert len(calls) == 1 + (2 if mode == "momentum" else 0)


def test_nonfinite_loss_leaves_weights_unchanged(tiny_model_dir):
    cfg = Config.from_flat(model=str(tiny_model_dir), beta=0.0)
    model, tok = load_model(cfg.model)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    batch = _batch()
    batch.advantages[0] = float("nan")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    with pytest.raises(NonFiniteLoss):
        policy_update(model, batch, cfg.algo, opt, sched, temperature=1.0, pad_id=tok.pad_token_id, micro_batch=0,
                      grad_clip=1.0)
    assert all(torch.equal(p, start[n]) for n, p in model.named_parameters())


def _step_records(run):
    drop = {"train_seconds", "step_seconds", "update_seconds", "sync_seconds", "gen_seconds", "gen_tokens_per_s", "eval_seconds"}
    return [{k: v for k, v in r.items() if k not in drop} for r in read_jsonl(run / "metrics.jsonl")]


@pytest.mark.parametrize("engine", ["fast", "hf"])
def test_resume_reproduces_an_uninterrupted_run(tiny_cfg, engine):
    straight = train(tiny_cfg(run_name=f"straight-{engine}", steps=4, engine=engine, export=False))
    part = train(tiny_cfg(run_name=f"part-{engine}", steps=2, engine=engine, export=False))
    resumed = train(None, resume=part.run_dir, overrides={"steps": 4})
    a = _weights(latest_checkpoint(straight.run_dir / "checkpoints"))
    b = _weights(latest_checkpoint(resumed.run_dir / "checkpoints"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ra = [r for r in _step_records(straight.run_dir) if "reward" in r]
    rb = [r for r in _step_records(resumed.run_dir) if "reward" in r]
    assert ra == rb
    assert read_jsonl(straight.run_dir / "rollouts.jsonl") == read_jsonl(resumed.run_dir / "rollouts.jsonl")


@pytest.mark.parametrize("kind, p, expected", [
    ("constant", 0.7, 1.0), ("linear", 0.0, 1.0), ("linear", 0.5, 0.55), ("linear", 1.0, 0.1),
    ("cosine", 0.0, 1.0), ("cosine", 0.5, 0.55), ("cosine", 0.25, 0.1 + 0.9 * (0.5 + 0.5 ** 0.5 / 2)),
    ("cosine", 1.0, 0.1), ("cosine", 1.7, 0.1),
])
def test_lr_factor_known_values(kind, p, expected):
    f = LRFactor(kind, warmup_steps=0, min_ratio=0.1)
    f.progress = p
    assert f(123) == pytest.approx(expected)
    warm = LRFactor(kind, warmup_steps=4, min_ratio=0.1)
    warm.progress = p
    assert warm(1) == pytest.approx(expected * 2 / 4)  # second optimizer step of a 4-step warm-up


def test_budget_progress_follows_the_budget_nearer_to_its_end():
    assert budget_progress(25, 9999.0, Config.from_flat(steps=100)) == 0.25
    assert budget_progress(25, 30.0, Config.from_flat(steps=100, max_minutes=1)) == 0.5
    assert budget_progress(90, 30.0, Config.from_flat(steps=100, max_minutes=1)) == 0.9
    assert budget_progress(10, 120.0, Config.from_flat(steps=100, max_minutes=1)) == 1.0


def test_cosine_schedule_decays_over_the_steps_and_resumes_exactly(tiny_cfg):
    kw = dict(lr_schedule="cosine", min_lr_ratio=0.2, export=False)
    straight = train(tiny_cfg(run_name="cos-straight", steps=4, **kw))
    lrs = [r["lr"] for r in _step_records(straight.run_dir) if "reward" in r]
    # the rate logged after step k is the next step's: cosine at k/4 of the budget, ending at 0.2 x 1e-3
    assert lrs == pytest.approx([1e-3 * (0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * k / 4))) for k in range(1, 5)])

    def interrupt(record):
        if record["step"] == 2:
            signal.raise_signal(signal.SIGINT)

    part = train(tiny_cfg(run_name="cos-part", steps=4, **kw), on_step=interrupt)
    assert part.interrupted and part.steps_done == 2
    resumed = train(None, resume=part.run_dir)
    a = _weights(latest_checkpoint(straight.run_dir / "checkpoints"))
    b = _weights(latest_checkpoint(resumed.run_dir / "checkpoints"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["lr"] for r in _step_records(resumed.run_dir) if "reward" in r] == lrs


def test_ctrl_c_stops_after_the_step_with_a_checkpoint(tiny_cfg):
    def interrupt(record):
        if record["step"] == 1:
            signal.raise_signal(signal.SIGINT)

    result = train(tiny_cfg(run_name="ctrlc", steps=5), on_step=interrupt)
    assert result.interrupted and result.steps_done == 1
    assert latest_checkpoint(result.run_dir / "checkpoints").name == "step-000001"
    done = train(None, resume=result.run_dir)
    assert done.steps_done == 5 and not done.interrupted


def test_lora_trains_only_adapters_and_exports_merged(tiny_cfg):
    result = train(tiny_cfg(run_name="lora", lora_rank=4, lr=1e-2))
    weights = _weights(latest_checkpoint(result.run_dir / "checkpoints"))
    assert weights and all("lora_" in k for k in weights)
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(result.final_dir)
    assert not any("lora" in n for n, _ in merged.named_parameters())


def test_kl_with_full_finetune_uses_a_frozen_reference(tiny_cfg):
    result = train(tiny_cfg(run_name="kl", beta=0.1, steps=2))
    steps = [r for r in read_jsonl(result.run_dir / "metrics.jsonl") if "reward" in r]
    assert steps[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # first step: policy == reference
    assert steps[1]["kl"] > 0


def test_filtering_zero_variance_groups_resamples(tiny_cfg):
    # Every completion of the random model scores 0 on 'correct': all groups have zero variance.
    result = train(tiny_cfg(run_name="filter", rewards="correct", zero_variance="filter", resample_budget=3,
                            steps=1, export=False))
    rec = [r for r in read_jsonl(result.run_dir / "metrics.jsonl") if "reward" in r][0]
    assert rec["groups_sampled"] == 5 and rec["groups_filtered"] == 5 and rec["groups_resampled"] == 3
    assert rec["rows_trained"] == 0


def test_int8_rollouts_log_the_mismatch(tiny_cfg):
    result = train(tiny_cfg(run_name="int8", rollout_quant="int8", steps=1, export=False))
    rec = [r for r in read_jsonl(result.run_dir / "metrics.jsonl") if "reward" in r][0]
    assert 0 < rec["sampler_mismatch_kl"] < 0.5 and 0 <= rec["tis_capped_frac"] <= 1


def test_keep_sampling_mask_trains_with_top_k(tiny_cfg):
    result = train(tiny_cfg(run_name="keepmask", recipe="deepseek-v3.2", top_k=20, steps=1, export=False))
    rec = [r for r in read_jsonl(result.run_dir / "metrics.jsonl") if "reward" in r][0]
    assert rec["sampler_mismatch_kl"] < 1e-6  # fp32 sampler, same kept sets: no mismatch


def test_bf16_autocast_is_refused_before_anything_is_written_on_a_cpu_without_native_bf16(tiny_cfg, monkeypatch,
                                                                                         tmp_path):
    import grpolab.runtime as R
    from grpolab.errors import UserError

    monkeypatch.setattr(R, "cpu_flags", lambda: {"avx2", "fma", "f16c"})
    cfg = tiny_cfg(autocast="bf16", device="cpu", out_dir=str(tmp_path / "refused"))
    with pytest.raises(UserError, match=r"--autocast bf16, which needs a CPU with AMX or AVX512-BF16.*"
                                        r"Fix: --autocast off$"):
        train(cfg)
    assert not (tmp_path / "refused").exists()
    with pytest.raises(UserError, match=r"^this run was started with --autocast bf16.*Fix: resume it on a machine"):
        R.check_autocast("bf16", torch.device("cpu"), resumed=True)
    monkeypatch.setattr(R, "cpu_flags", lambda: {"avx2", "amx_bf16"})
    R.check_autocast("bf16", torch.device("cpu"))  # allowed where the CPU has it
    monkeypatch.setattr(R, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    with pytest.warns(UserWarning, match=r"no AMX.*--autocast off is likely faster"):
        R.check_autocast("bf16", torch.device("cpu"))  # allowed, with a warning, where bf16 is native but slower


def test_bf16_rollouts_are_refused_before_anything_is_written_on_a_cpu_without_native_bf16(tiny_cfg, monkeypatch,
                                                                                          tmp_path):
    import grpolab.runtime as R
    from grpolab.errors import UserError

    monkeypatch.setattr(R, "cpu_flags", lambda: {"avx2", "fma", "f16c"})
    cfg = tiny_cfg(rollout_quant="bf16", engine="fast", device="cpu", out_dir=str(tmp_path / "refused"))
    with pytest.raises(UserError, match=r"^--rollout-quant bf16, which needs a CPU with AMX or AVX512-BF16.*"
                                        r"Fix: --rollout-quant fp16$"):
        train(cfg)
    assert not (tmp_path / "refused").exists()


def test_bf16_autocast_old_logprobs_are_the_first_pass_bit_for_bit(tiny_model_dir):
    """With mu > 1 the old log-probs come from a separate no-grad forward; it runs under the same autocast as
    the update's, so the first pass's ratio is exactly 1 (a forward in the other precision is not)."""
    from grpolab.update import _forward, _old_logprobs

    model, tok = load_model(Config.from_flat(model=str(tiny_model_dir)).model)
    batch, rows = _batch(), [0, 1, 2, 3]
    old = _old_logprobs(model, batch, [rows], 1.0, tok.pad_token_id, "bf16")
    new, _, _, width = _forward(model, batch, rows, 1.0, tok.pad_token_id, "bf16")
    assert torch.equal(torch.stack([old[r][:width] for r in rows]), new.detach())
    fp32, _, _, _ = _forward(model, batch, rows, 1.0, tok.pad_token_id, "off")
    assert not torch.equal(fp32.detach(), new.detach())


def test_bf16_autocast_update_raises_the_log_prob_of_a_rewarded_row(tiny_model_dir):
    """The gradient-sign known answer (DESIGN.md 4) holds under the bf16 update too."""
    cfg = Config.from_flat(model=str(tiny_model_dir), beta=0.0, loss_aggregation="token-mean")
    model, tok = load_model(cfg.model)
    batch = _batch()
    batch.advantages.zero_()
    batch.advantages[0] = 1.0
    from grpolab.logprobs import token_logprobs

    def row0():
        with torch.no_grad():
            return float(token_logprobs(model, batch.prompts[:1], batch.completion_ids[:1], batch.mask[:1], 1.0,
                                        tok.pad_token_id)[0].sum())

    before = row0()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    stats = policy_update(model, batch, cfg.algo, opt, sched, temperature=1.0, pad_id=tok.pad_token_id, micro_batch=0,
                          grad_clip=0.0, autocast="bf16")
    assert stats["rows_trained"] == 1
    assert row0() > before
