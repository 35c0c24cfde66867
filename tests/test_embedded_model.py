"""A handful of tests on the real embedded SmolLM2-135M-Instruct (converted once into the cache)."""

import pytest
import torch

from grpolab.config import Config
from grpolab.models import embedded_model_dir, encode_prompt, eos_token_ids, load_model
from grpolab.rollout import FastCPUEngine, HFEngine, SamplingParams

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def smol():
    model, tok = load_model(Config.from_flat().model)
    return model, tok


def test_conversion_is_a_standard_directory():
    d = embedded_model_dir()
    assert (d / "config.json").is_file() and list(d.glob("*.safetensors")) and (d / "tokenizer.json").is_file()
    assert "quantization_config" not in (d / "config.json").read_text()


def test_fast_engine_greedy_equals_hf_on_the_real_model(smol):
    model, tok = smol
    prompts = [encode_prompt(tok, "Solve the problem. Give the final number at the end.", q)
               for q in ("What is 3 + 4?", "What is 23 + 45?", "What is 7 * 8?")]
    eos = eos_token_ids(model, tok)
    p = SamplingParams(group_size=1, max_new_tokens=48, temperature=0)
    g = torch.Generator().manual_seed(0)
    a = FastCPUEngine(model, eos, tok.pad_token_id).generate(prompts, p, g)
    b = HFEngine(model, eos, tok.pad_token_id).generate(prompts, p, g)
    assert torch.equal(a.completion_ids, b.completion_ids)
    text = tok.decode(a.completion_ids[0][a.mask[0].bool()], skip_special_tokens=True)
    assert "7" in text  # the instruct model does know 3 + 4


def test_one_training_step_on_the_real_model(tmp_path):
    from grpolab.trainer import train

    cfg = Config.from_flat(steps=1, group_size=4, max_new_tokens=16, eval_size=4, out_dir=str(tmp_path), quiet=True,
                           export=False, beta=0.0)
    result = train(cfg)
    assert result.steps_done == 1 and result.eval_after is not None
