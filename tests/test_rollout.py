"""Rollout engines on a tiny random model: exact greedy equality with HF generate, masks, and the sampling law."""

import math

import pytest
import torch

from grpolab.config import Config
from grpolab.logprobs import token_logprobs
from grpolab.models import encode_prompt, eos_token_ids, load_model
from grpolab.rollout import FastCPUEngine, HFEngine, SamplingParams


@pytest.fixture(scope="module", params=["llama", "qwen3"])
def setup(request, tiny_model_dir, tiny_qwen3_dir):
    path = tiny_model_dir if request.param == "llama" else tiny_qwen3_dir
    model, tok = load_model(Config.from_flat(model=str(path)).model)
    model.eval()
    prompts = [encode_prompt(tok, "Solve it.", q) for q in ["What is 3 + 4?", "What is 23 + 45 + 1?", "Hi"]]
    return model, tok, prompts


def test_greedy_is_identical_to_hf_generate(setup):
    model, tok, prompts = setup
    eos, pad = eos_token_ids(model, tok), tok.pad_token_id
    p = SamplingParams(group_size=2, max_new_tokens=24, temperature=0)
    g = torch.Generator().manual_seed(0)
    fast = FastCPUEngine(model, eos, pad).generate(prompts, p, g)
    ref = HFEngine(model, eos, pad).generate(prompts, p, g)
    assert torch.equal(fast.completion_ids, ref.completion_ids)
    assert torch.equal(fast.mask, ref.mask)
    assert torch.equal(fast.truncated, ref.truncated)


def _check_masks(ro, eos_ids, T):
    N = ro.completion_ids.shape[0]
    assert ro.completion_ids.shape == (N, T) and ro.mask.shape == (N, T)
    for r in range(N):
        m = ro.mask[r]
        n = int(m.sum())
        assert n >= 1 and torch.equal(m[:n], torch.ones(n)) and torch.equal(m[n:], torch.zeros(T - n))
        if bool(ro.truncated[r]):
            assert n == T and not any(int(t) in eos_ids for t in ro.completion_ids[r])
        else:
            assert int(ro.completion_ids[r, n - 1]) in eos_ids
            assert not any(int(t) in eos_ids for t in ro.completion_ids[r, : n - 1])


@pytest.mark.parametrize("engine", ["fast", "hf"])
def test_shapes_masks_and_truncation(setup, engine):
    model, tok, prompts = setup
    # Treat two frequent tokens as end-of-sequence too, so rows finish at different steps (and the fast engine
    # drops finished rows from its batch mid-rollout).
    with torch.no_grad():
        first = model(torch.tensor([prompts[0]])).logits[0, -1].topk(2).indices.tolist()
    eos = eos_token_ids(model, tok) + first
    cls = FastCPUEngine if engine == "fast" else HFEngine
    p = SamplingParams(group_size=8, max_new_tokens=20, temperature=1.0)
    ro = cls(model, eos, tok.pad_token_id).generate(prompts, p, torch.Generator().manual_seed(1))
    _check_masks(ro, set(eos), 20)
    assert 0 < int(ro.truncated.sum()) < ro.num_rows  # both kinds of rows are present


def test_sampler_logprobs_match_the_training_forward(setup):
    """Every sampled token's log-prob from the KV-cache decoder equals the full forward's (rows finishing early)."""
    model, tok, prompts = setup
    with torch.no_grad():
        first = model(torch.tensor([prompts[1]])).logits[0, -1].topk(3).indices.tolist()
    eos = eos_token_ids(model, tok) + first
    p = SamplingParams(group_size=6, max_new_tokens=16, temperature=0.7)
    ro = FastCPUEngine(model, eos, tok.pad_token_id).generate(prompts, p, torch.Generator().manual_seed(2))
    rows_prompts = [ro.row_prompt(r) for r in range(ro.num_rows)]
    with torch.no_grad():
        logp, _ = token_logprobs(model, rows_prompts, ro.completion_ids, ro.mask, 0.7, tok.pad_token_id)
    torch.testing.assert_close(ro.sampler_logp, logp * ro.mask, rtol=0, atol=2e-5)


def _chi2_critical(df: int, z: float = 3.29) -> float:
    """Upper 0.05% point of chi-square (Wilson-Hilferty); the seed is fixed so the test is deterministic."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


@pytest.mark.parametrize("engine", ["fast", "hf"])
@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 20, 1.0), (1.3, 0, 0.8), (0.9, 30, 0.9)])
def test_first_token_law_matches_the_warped_distribution(setup, engine, temperature, top_k, top_p):
    """Sampled first tokens follow softmax(warp(logits)) exactly: temperature, then top-k, then top-p."""
    model, tok, prompts = setup
    with torch.no_grad():
        logits = model(torch.tensor([prompts[0]])).logits[0, -1].float()
    probs = FastCPUEngine._warp(logits[None], SamplingParams(1, 1, temperature, top_p, top_k)).softmax(-1)[0]
    n = 4000
    cls = FastCPUEngine if engine == "fast" else HFEngine
    ro = cls(model, eos_token_ids(model, tok), tok.pad_token_id).generate(
        [prompts[0]], SamplingParams(n, 1, temperature, top_p, top_k), torch.Generator().manual_seed(3))
    counts = torch.bincount(ro.completion_ids[:, 0], minlength=probs.numel()).double()
    assert counts[probs == 0].sum() == 0  # nothing outside the top-k / nucleus is ever drawn
    expected = probs.double() * n
    big = expected >= 5
    obs = torch.cat([counts[big], counts[~big].sum().view(1)])
    exp = torch.cat([expected[big], expected[~big].sum().view(1)])
    keep = exp > 0
    chi2 = float(((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum())
    df = int(keep.sum()) - 1
    assert chi2 < _chi2_critical(df), (chi2, df)


def test_int8_engine_follows_the_masks_and_stays_close(setup):
    model, tok, prompts = setup
    eos = eos_token_ids(model, tok)
    p = SamplingParams(group_size=4, max_new_tokens=12, temperature=1.0)
    ro = FastCPUEngine(model, eos, tok.pad_token_id, quant="int8").generate(prompts, p, torch.Generator().manual_seed(4))
    _check_masks(ro, set(eos), 12)
    rows_prompts = [ro.row_prompt(r) for r in range(ro.num_rows)]
    with torch.no_grad():
        logp, _ = token_logprobs(model, rows_prompts, ro.completion_ids, ro.mask, 1.0, tok.pad_token_id)
    mismatch = ((ro.sampler_logp - logp).abs() * ro.mask).sum() / ro.mask.sum()
    assert float(mismatch) < 0.1  # int8 weights: a small, nonzero train/sample mismatch


@pytest.mark.parametrize("top_k,top_p", [(20, 1.0), (0, 0.8), (30, 0.9)])
def test_keep_sampling_mask_reproduces_the_sampler_distribution(setup, top_k, top_p):
    """Scoring with the sampler's kept-set thresholds gives the warped (renormalised) log-probs it sampled from."""
    model, tok, prompts = setup
    p = SamplingParams(group_size=4, max_new_tokens=10, temperature=0.8, top_p=top_p, top_k=top_k)
    ro = FastCPUEngine(model, eos_token_ids(model, tok), tok.pad_token_id).generate(
        prompts, p, torch.Generator().manual_seed(5))
    assert ro.keep_threshold is not None
    rows_prompts = [ro.row_prompt(r) for r in range(ro.num_rows)]
    with torch.no_grad():
        masked, _ = token_logprobs(model, rows_prompts, ro.completion_ids, ro.mask, 0.8, tok.pad_token_id,
                                   keep_threshold=ro.keep_threshold)
        plain, _ = token_logprobs(model, rows_prompts, ro.completion_ids, ro.mask, 0.8, tok.pad_token_id)
    torch.testing.assert_close(masked, ro.sampler_logp, rtol=0, atol=2e-5)
    assert ((masked - plain) * ro.mask >= -1e-6).all() and (masked - plain).max() > 1e-3  # renormalised upwards


def test_no_thresholds_without_warping(setup):
    model, tok, prompts = setup
    ro = FastCPUEngine(model, eos_token_ids(model, tok), tok.pad_token_id).generate(
        prompts, SamplingParams(2, 4, 1.0), torch.Generator().manual_seed(6))
    assert ro.keep_threshold is None


def test_lora_side_path_matches_hf(tiny_model_dir):
    model, tok = load_model(Config.from_flat(model=str(tiny_model_dir), lora_rank=4).model)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3)
    model.eval()
    prompts = [encode_prompt(tok, "", q) for q in ["What is 1 + 2?", "Say hi"]]
    eos, pad = eos_token_ids(model, tok), tok.pad_token_id
    p = SamplingParams(group_size=1, max_new_tokens=16, temperature=0)
    g = torch.Generator().manual_seed(0)
    fast = FastCPUEngine(model, eos, pad).generate(prompts, p, g)
    ref = HFEngine(model, eos, pad).generate(prompts, p, g)
    assert torch.equal(fast.completion_ids, ref.completion_ids)


def _sync_after(tiny_model_dir, quant, update):
    """Greedy completions before an update of every weight, after it with `sync()`, and from a fresh engine."""
    cfg = Config.from_flat(model=str(tiny_model_dir), lr=0.05)
    model, tok = load_model(cfg.model)
    model.eval()
    prompts = [encode_prompt(tok, "", "What is 1 + 2?")]
    eos, pad = eos_token_ids(model, tok), tok.pad_token_id
    engine = FastCPUEngine(model, eos, pad, quant=quant)
    p = SamplingParams(group_size=1, max_new_tokens=12, temperature=0)
    g = torch.Generator().manual_seed(0)
    before = engine.generate(prompts, p, g).completion_ids
    update(model, cfg)
    engine.sync()
    after = engine.generate(prompts, p, g).completion_ids
    fresh = FastCPUEngine(model, eos, pad, quant=quant).generate(prompts, p, g).completion_ids
    return model, engine, before, after, fresh


@pytest.mark.parametrize("quant", ["none", "fp16", "bf16", "int8"])
def test_sync_sees_in_place_weight_updates(tiny_model_dir, quant):
    def add_noise(model, cfg):
        with torch.no_grad():  # an optimizer-like in-place update of every weight
            for w in model.parameters():
                w.add_(torch.randn_like(w) * 0.2)

    _, _, before, after, fresh = _sync_after(tiny_model_dir, quant, add_noise)
    assert torch.equal(after, fresh) and not torch.equal(after, before)


@pytest.mark.parametrize("quant", ["fp16", "bf16", "int8"])
def test_sync_sees_the_trainers_optimizer_step(tiny_model_dir, quant):
    """The trainer's AdamW is fused, which writes the weights without moving their version counters: the packed
    sampler must still be refreshed (it was not, so fp16/int8 runs sampled from the initial weights)."""
    from grpolab.trainer import _optimizer

    def adamw_step(model, cfg):
        opt, _, _ = _optimizer(model, cfg)
        for w in model.parameters():
            w.grad = torch.randn_like(w)
        opt.step()

    model, engine, before, after, fresh = _sync_after(tiny_model_dir, quant, adamw_step)
    assert torch.equal(after, fresh) and not torch.equal(after, before)
    if quant == "fp16":  # the packed head is exactly the current weights in fp16
        head = engine.lm_head
        packed = head.packed.weight() if head.native else torch.ops.quantized.linear_unpack_fp16(head.packed)[0]
        assert torch.equal(packed, model.lm_head.weight.detach().half().float())
    if quant == "bf16":
        assert torch.equal(engine.lm_head.packed[0], model.lm_head.weight.detach().bfloat16())


@pytest.mark.parametrize("quant, tolerance", [("fp16", 1e-2), ("bf16", 0.1)])
def test_low_precision_samplers_stay_close_to_the_fp32_policy(setup, quant, tolerance):
    """fp16 weights with fp32 activations: sampled log-probs within 1e-2 of the fp32 training forward. bf16
    weights and activations (an 8-bit mantissa): within 0.1 on the tiny model (on SmolLM2-135M the per-token KL
    is ~7e-4, bench/NOTES.md 14); bf16 is slow but correct on CPUs without native bf16, so this runs anywhere.
    Neither is the fp32 weights (gap 0), and both give the same masks as any engine."""
    model, tok, prompts = setup
    p = SamplingParams(group_size=4, max_new_tokens=12, temperature=1.0)
    ro = FastCPUEngine(model, eos_token_ids(model, tok), tok.pad_token_id, quant=quant).generate(
        prompts, p, torch.Generator().manual_seed(7))
    _check_masks(ro, set(eos_token_ids(model, tok)), 12)
    rows_prompts = [ro.row_prompt(r) for r in range(ro.num_rows)]
    with torch.no_grad():
        logp, _ = token_logprobs(model, rows_prompts, ro.completion_ids, ro.mask, 1.0, tok.pad_token_id)
    gap = float(((ro.sampler_logp - logp).abs() * ro.mask).max())
    assert 0 < gap < tolerance
