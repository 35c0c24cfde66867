"""The planner: parameter counts, the memory model part by part, the allocator's allowance, recommendations,
the pre-flight refusal, and the time model's calibration arithmetic. Known answers, no model weights."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest

from grpolab import plan as P
from grpolab.errors import UserError

# SmolLM2-135M's config (the embedded default), as the planner reads it
SMOL = SimpleNamespace(vocab_size=49152, hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
                       num_key_value_heads=3, head_dim=64, intermediate_size=1536, tie_word_embeddings=True)


def smol() -> P.Arch:
    return P.Arch.from_config(SMOL)


def setting(**kw) -> P.Setting:
    base = dict(group_size=8, prompts_per_step=1, max_new_tokens=128, prompt_tokens=48, lora_rank=0, micro_batch=0,
                gradient_checkpointing=False, reference_copy=False, rollout_quant="none")
    base.update(kw)
    return P.Setting(**base)


def test_parameter_counts_match_smollm2_135m():
    a = smol()
    assert (a.kv_heads, a.head_dim) == (3, 64)
    # 30 x (q 576x576 + k,v 576x192 + o 576x576 + gate,up,down 576x1536) + norms + tied embedding
    assert a.linear_params_per_layer == 331776 + 2 * 110592 + 331776 + 3 * 884736
    assert a.params == 134_515_008  # SmolLM2-135M's published parameter count
    # LoRA r=1 adds (in + out) per wrapped linear: q, k, v, o, gate, up, down
    assert a.lora_params(1) == 30 * ((576 + 576) + 2 * (576 + 192) + (576 + 576) + 2 * (576 + 1536) + (1536 + 576))
    assert a.lora_params(16) == 16 * a.lora_params(1)


def test_untied_head_counts_twice_and_head_dim_defaults():
    cfg = SimpleNamespace(**(vars(SMOL) | {"tie_word_embeddings": False}))
    del cfg.head_dim
    a = P.Arch.from_config(cfg)
    assert a.head_dim == 576 // 9
    assert a.params == smol().params + 49152 * 576


def test_memory_parts_full_fine_tune_known_values():
    a, s = smol(), setting(allocator="lean")
    m = P.predict_memory(a, s)
    parts = m.parts
    assert parts["weights"] == a.params * 4
    assert parts["gradients"] == a.params * 4
    assert parts["AdamW state"] == 2 * a.params * 4
    assert parts["rollout KV cache"] == 8 * (48 + 128) * a.kv_floats_per_token * 4
    # one prompt pass per group plus every completion token, all kept for backward
    assert parts["activations (one micro-batch)"] == (8 * 128 + 48) * a.activation_floats_per_token * 4
    assert "reference copy" not in parts and "heap kept (--allocator fast)" not in parts
    # backward trades saved activations for gradients layer by layer: the larger of the two, not their sum
    static = parts["runtime (python, torch)"] + parts["weights"] + parts["AdamW state"]
    update = static + max(parts["gradients"], parts["activations (one micro-batch)"]) + parts["log-prob chunks"]
    assert m.peak == pytest.approx(P.ALLOCATOR_SLACK * update)
    # with checkpointing and one row per micro-batch the gradients are the larger part
    small = P.predict_memory(a, setting(allocator="lean", micro_batch=1, gradient_checkpointing=True))
    assert small.parts["activations (one micro-batch)"] < small.parts["gradients"]
    assert small.peak == pytest.approx(P.ALLOCATOR_SLACK * (static + parts["gradients"] +
                                                             small.parts["log-prob chunks"]))


def test_reference_copy_and_sampler_weights_are_counted():
    a = smol()
    plain = P.predict_memory(a, setting()).parts
    with_ref = P.predict_memory(a, setting(reference_copy=True, rollout_quant="int8")).parts
    assert with_ref["reference copy"] == a.params * 4
    assert with_ref["int8 sampler weights"] == 30 * a.linear_params_per_layer + 49152 * 576
    assert "reference copy" not in plain


def test_fast_allocator_allowance_lora_but_not_full_fine_tune():
    a = smol()
    lora_fast = P.predict_memory(a, setting(lora_rank=16))
    lora_lean = P.predict_memory(a, setting(lora_rank=16, allocator="lean"))
    acts = lora_fast.parts["activations (one micro-batch)"]
    kept = P.FAST_HEAP_KEPT * acts - 3 * a.lora_params(16) * 4
    assert lora_fast.parts["heap kept (--allocator fast)"] == pytest.approx(kept)
    assert lora_fast.peak - lora_lean.peak == pytest.approx(P.ALLOCATOR_SLACK * kept)
    # bench/NOTES.md 6b, G=8 T=128 LoRA r=16 with fp16 rollouts: measured 4.12-4.17 GB (fast), 2.98-3.05 (lean)
    measured = {"fast": 4.15, "lean": 3.02}
    for alloc, gb in measured.items():
        peak = P.predict_memory(a, setting(lora_rank=16, rollout_quant="fp16", allocator=alloc)).peak / P.GB
        assert abs(peak / gb - 1) < 0.05, (alloc, peak)
    # a full fine-tune's gradients and AdamW state (3x the weights) reuse the freed activations
    full = P.predict_memory(a, setting())
    assert "heap kept (--allocator fast)" not in full.parts
    assert full.peak == pytest.approx(P.predict_memory(a, setting(allocator="system")).peak)


def test_micro_batch_and_checkpointing_shrink_activations():
    a = smol()
    acts = {mb: P.predict_memory(a, setting(micro_batch=mb)).parts["activations (one micro-batch)"]
            for mb in (0, 4, 1)}
    assert acts[0] > acts[4] > acts[1]
    assert acts[1] == (128 + 48) * a.activation_floats_per_token * 4  # one row and its group's prompt
    ckpt = P.predict_memory(a, setting(micro_batch=1, gradient_checkpointing=True))
    assert ckpt.parts["activations (one micro-batch)"] < acts[1] / 5


def test_recommend_offers_lean_first_and_every_offer_fits():
    a = smol()
    s = setting(lora_rank=16, rollout_quant="fp16")
    fast, lean = P.predict_memory(a, s).peak, P.predict_memory(a, replace(s, allocator="lean")).peak
    limit = (fast + lean) / 2
    fits = P.recommend(a, s, limit)
    assert fits[0][0] == "--allocator lean" and fits[0][2] == pytest.approx(lean)
    assert all(peak <= limit for _, _, peak in fits)
    assert all(P.predict_memory(a, opt).peak == pytest.approx(peak) for _, opt, peak in fits)
    # already lean: never offered again; a limit nothing meets: nothing offered
    assert all(what != "--allocator lean" for what, _, _ in P.recommend(a, replace(s, allocator="lean"), limit))
    assert P.recommend(a, s, 0.1 * P.GB) == []


def test_preflight_refuses_with_need_available_and_fixes(monkeypatch):
    from grpolab.config import Config

    monkeypatch.setattr(P, "arch_for", lambda name: smol())
    monkeypatch.setattr(P, "available_memory", lambda: 3.5 * P.GB)
    cfg = Config.from_flat(lora_rank=16, max_new_tokens=128, group_size=8, rollout_quant="fp16")
    with pytest.raises(UserError) as e:
        P.preflight(cfg)
    msg = str(e.value)
    assert "needs about 4.1 GB" in msg and "3.5 GB is available" in msg
    assert "--allocator lean (~3.1 GB)" in msg and "grpolab plan" in msg
    monkeypatch.setattr(P, "available_memory", lambda: 8 * P.GB)
    assert P.preflight(cfg).peak < 8 * P.GB


@pytest.mark.parametrize("text,value", [("8GB", 8e9), ("8 GiB", 8e9), ("512mb", 512e6), ("1.5G", 1.5e9),
                                        ("2T", 2e12)])
def test_parse_size(text, value):
    assert P.parse_size(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["eight", "GB", "8", "8 bytes"])
def test_parse_size_rejects_with_example(text):
    with pytest.raises(UserError, match="write e.g. 8GB"):
        P.parse_size(text)


def test_calibration_interpolates_extrapolates_and_round_trips(tmp_path):
    cal = P.Calibration(decode_step_s={8: 0.02, 32: 0.04, 64: 0.10}, train_gflops=100.0)
    assert cal.decode_s(4) == 0.02  # below the first point: its value
    assert cal.decode_s(20) == pytest.approx(0.03)
    assert cal.decode_s(48) == pytest.approx(0.07)
    assert cal.decode_s(96) == pytest.approx(0.16)  # beyond the last: the last segment's slope
    assert P.Calibration().decode_s(8) == 0.0
    cal.save(tmp_path / "c" / "cal.json")
    assert P.Calibration.load(tmp_path / "c" / "cal.json") == cal
    assert P.Calibration.load(tmp_path / "missing.json") is None


def test_predict_time_known_values():
    a = smol()
    cal = P.Calibration(decode_step_s={8: 0.02, 64: 0.1}, train_gflops=100.0, optimizer_s_per_gparam=0.5)
    t = P.predict_time(a, setting(), cal)
    tokens = 8 * 128 + 48
    assert t.generation_s == pytest.approx(128 * 0.02)
    assert t.update_s == pytest.approx(tokens * 2 * a.params * 3 / 100e9 + a.params / 1e9 * 0.5)
    half = P.predict_time(a, setting(rollout_quant="fp16"), cal, decode_fraction=0.5)
    assert half.generation_s == pytest.approx(64 * 0.02 * 0.5)
    lora = P.predict_time(a, setting(lora_rank=16), cal)
    assert lora.update_s < t.update_s  # no gradient for the frozen weights
    lean = P.predict_time(a, setting(allocator="lean"), cal)
    compute = tokens * 2 * a.params * 3 / 100e9
    assert lean.update_s - t.update_s == pytest.approx(compute * (P.UPDATE_SLOWDOWN["lean"] - 1))


def test_grid_lists_every_cell():
    text = P.grid(smol(), setting(), None, groups=(4, 8), tokens=(64, 128))
    lines = text.splitlines()
    assert len(lines) == 3 and lines[1].split()[0] == "4" and lines[2].count("GB") == 2


def test_autocast_bf16_uses_its_own_calibrated_rate_and_counts_the_bf16_weight_copies():
    a = smol()
    cal = P.Calibration(decode_step_s={8: 0.02}, train_gflops=100.0, train_gflops_bf16=300.0, optimizer_s_per_gparam=0.5)
    fp32, bf16 = P.predict_time(a, setting(), cal), P.predict_time(a, setting(autocast="bf16"), cal)
    # 1072 tokens x 2 x 134.5M parameters x 3 (forward + backward) = 865.2 GFLOP: 8.652 s at 100, 2.884 s at 300
    assert fp32.update_s - bf16.update_s == pytest.approx(5.768004)
    uncalibrated = P.Calibration(decode_step_s={8: 0.02}, train_gflops=100.0, optimizer_s_per_gparam=0.5)
    assert P.predict_time(a, setting(autocast="bf16"), uncalibrated).update_s == pytest.approx(fp32.update_s)
    mem = P.predict_memory(a, setting(autocast="bf16"))
    assert mem.parts["bf16 weight copies (autocast)"] == 212_336_640  # 2 bytes x 106.2M decoder linear weights
    # the plain attention kernel's saved probabilities, under its cap: 8 rows x 9 heads x 176^2 x 4 B x 30 layers
    fp32_acts = P.predict_memory(a, setting()).parts["activations (one micro-batch)"]
    assert mem.parts["activations (one micro-batch)"] - fp32_acts == 267_632_640
    assert "bf16 weight copies (autocast)" not in P.predict_memory(a, setting()).parts


def test_recommend_offers_autocast_off_first_under_bf16():
    fits = P.recommend(smol(), setting(autocast="bf16"), limit=100 * P.GB)
    assert fits[0][0] == "--autocast off" and fits[0][1].autocast == "off"


def test_steps_per_generation_shares_one_wider_decode_and_holds_its_kv_cache():
    a = smol()
    cal = P.Calibration(decode_step_s={8: 0.02, 64: 0.1}, train_gflops=100.0, optimizer_s_per_gparam=0.5)
    one, four = P.predict_time(a, setting(), cal), P.predict_time(a, setting(steps_per_generation=4), cal)
    # one call decodes 32 rows (0.02 + (0.1 - 0.02) x 24/56 s per token step), shared by the round's 4 steps
    assert four.generation_s == pytest.approx(128 * (0.02 + 0.08 * 24 / 56) / 4)
    assert four.update_s == one.update_s
    kv1 = P.predict_memory(a, setting()).parts["rollout KV cache"]
    assert P.predict_memory(a, setting(steps_per_generation=4)).parts["rollout KV cache"] == 4 * kv1
    bf16 = P.predict_memory(a, setting(rollout_quant="bf16")).parts
    assert bf16["bf16 sampler weights"] == 2 * (30 * a.linear_params_per_layer + 49152 * 576)
