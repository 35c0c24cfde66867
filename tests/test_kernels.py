"""The native fp16 sampler kernels (rollout/kernels.py, f16_kernels.c): known answers against torch, in-place
re-packing, the fbgemm fallback, and the engine's log-probs through both."""

from __future__ import annotations

import platform
import shutil

import pytest
import torch

from grpolab.rollout import kernels
from grpolab.rollout.kernels import F16Linear, native_reason
from grpolab.runtime import cpu_flags

x86_avx2 = platform.machine().lower() in ("x86_64", "amd64") and {"avx2", "fma", "f16c"} <= cpu_flags()
if not (x86_avx2 and (shutil.which("cc") or shutil.which("gcc"))):
    pytest.skip("native kernels need x86-64 with AVX2/FMA/F16C and a C compiler", allow_module_level=True)


@pytest.fixture(autouse=True)
def native(monkeypatch):
    monkeypatch.setenv("GRPOLAB_NATIVE", "1")
    kernels.reset()
    yield
    kernels.reset()


def test_the_kernels_build_on_this_machine():
    assert native_reason() is None


@pytest.mark.parametrize("n", [1, 7, 8, 23, 24, 25, 49])
@pytest.mark.parametrize("k", [1, 5, 8, 17])
@pytest.mark.parametrize("m", [0, 1, 3, 4, 5, 9, 64, 70])
def test_linear_equals_torch_with_fp16_weights(m, n, k):
    g = torch.Generator().manual_seed(m * 1000 + n * 10 + k)
    w = torch.randn(n, k, generator=g)
    bias = torch.randn(n, generator=g) if (m + n) % 2 else None
    x = torch.randn(m, k, generator=g)
    lin = F16Linear(n, k)
    lin.pack([w], bias)
    want = x.double() @ w.half().double().t() + (0 if bias is None else bias.double())
    got = lin(x)
    assert got.shape == (m, n) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5 * k)


def test_a_row_gives_the_same_bits_in_any_tile_and_row_block():
    """64 rows run as 16 tiles of 4 (one 64-row block), 4 rows as one tile: each output's FMAs run in the same
    order either way, so a row's outputs do not depend on which rows share its batch."""
    g = torch.Generator().manual_seed(3)
    w, x = torch.randn(50, 96, generator=g), torch.randn(64, 96, generator=g)
    lin = F16Linear(50, 96)
    lin.pack([w], torch.randn(50, generator=g))
    assert torch.equal(lin(x), torch.cat([lin(x[i:i + 4]) for i in range(0, 64, 4)]))


def test_leading_dimensions_and_non_contiguous_input():
    g = torch.Generator().manual_seed(1)
    w, x = torch.randn(40, 24, generator=g), torch.randn(24, 3, 5, generator=g).permute(1, 2, 0)  # (3, 5, 24)
    lin = F16Linear(40, 24)
    lin.pack([w])
    torch.testing.assert_close(lin(x), x @ w.half().float().t(), rtol=1e-5, atol=1e-4)


def test_packing_rounds_like_torch_half_and_stacks_at_any_row_offset():
    """q/k/v share one matrix: weights of 5, 11 and 3 rows (offsets not multiples of the 8-row panels) pack to
    exactly the fp16 rounding of their concatenation, including ties, subnormals and overflow to inf."""
    g = torch.Generator().manual_seed(2)
    parts = [torch.randn(5, 13, generator=g), torch.randn(11, 13, generator=g) * 1e-6,
             torch.randn(3, 13, generator=g) * 7e4]
    parts[0][0, :4] = torch.tensor([1 + 2**-11, 1 + 3 * 2**-11, 2**-24, 3 * 2**-25])  # ties to even, subnormals
    lin = F16Linear(19, 13)
    lin.pack(parts)
    assert torch.equal(lin.weight(), torch.cat(parts).half().float())


def test_repacking_reuses_the_buffer_and_sees_new_weights():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(30, 16, generator=g)
    lin = F16Linear(30, 16)
    lin.pack([w])
    ptr = lin.panels.data_ptr()
    w.add_(1.0)
    lin.pack([w])
    assert lin.panels.data_ptr() == ptr and torch.equal(lin.weight(), w.half().float())


def test_bad_shapes_are_refused():
    lin = F16Linear(8, 4)
    with pytest.raises(ValueError, match="inputs"):
        lin.pack([torch.zeros(8, 5)])
    with pytest.raises(ValueError, match="output rows"):
        lin.pack([torch.zeros(7, 4)])


def test_disabled_by_environment(monkeypatch):
    monkeypatch.setenv("GRPOLAB_NATIVE", "0")
    kernels.reset()
    assert "GRPOLAB_NATIVE=0" in native_reason()
    with pytest.raises(RuntimeError, match="unavailable"):
        F16Linear(8, 8)


def test_engine_native_and_fbgemm_fp16_sample_the_same_law(tiny_model_dir, monkeypatch):
    """Greedy tokens equal and sampled log-probs within float rounding: the two fp16 paths multiply by the same
    fp16 weights, in a different summation order."""
    from grpolab.config import Config
    from grpolab.models import load_model
    from grpolab.rollout import SamplingParams
    from grpolab.rollout.fast import FastCPUEngine

    model, tok = load_model(Config.from_flat(model=str(tiny_model_dir)).model, for_training=False)
    prompts = [tok.encode("3 + 4 ="), tok.encode("the cat sat on")]
    out = {}
    for backend in ("1", "0"):
        monkeypatch.setenv("GRPOLAB_NATIVE", backend)
        kernels.reset()
        engine = FastCPUEngine(model, [], tok.pad_token_id, quant="fp16")
        assert engine.lm_head.native == (backend == "1")
        greedy = engine.generate(prompts, SamplingParams(3, 10, 0.0), torch.Generator().manual_seed(0))
        sampled = engine.generate(prompts, SamplingParams(3, 10, 1.0), torch.Generator().manual_seed(0))
        out[backend] = greedy.completion_ids, sampled.completion_ids, sampled.sampler_logp
    assert torch.equal(out["1"][0], out["0"][0])
    same = (out["1"][1] == out["0"][1]).all(dim=1)  # rows whose draws agree (all of them, barring a near-tie)
    assert same.sum() >= 5
    torch.testing.assert_close(out["1"][2][same], out["0"][2][same], rtol=0, atol=1e-4)
