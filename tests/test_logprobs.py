import pytest
import torch

from grpolab.config import Config
from grpolab.logprobs import pack_rows, token_logprobs
from grpolab.models import load_model


def _naive(model, prompts, ids, mask, temperature, pad):
    full, attn, pos, P = pack_rows(prompts, ids, mask, pad)
    logits = model(input_ids=full, attention_mask=attn, position_ids=pos).logits.float() / temperature
    lp = logits[:, P - 1:P - 1 + ids.shape[1]].log_softmax(-1)
    tok_lp = lp.gather(2, ids[..., None]).squeeze(-1) * mask
    ent = -(lp.exp() * lp).sum(-1) * mask
    return tok_lp, ent


@pytest.fixture(scope="module")
def batch(tiny_model_dir):
    model, tok = load_model(Config.from_flat(model=str(tiny_model_dir)).model)
    g = torch.Generator().manual_seed(0)
    prompts = [[1, 5, 6, 7], [1, 9], [1, 5, 6, 7, 8, 9, 10]]
    ids = torch.randint(3, 200, (3, 6), generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0]], dtype=torch.float32)
    return model, tok.pad_token_id, prompts, ids, mask


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_chunked_logprobs_equal_the_naive_full_logits(batch, temperature):
    model, pad, prompts, ids, mask = batch
    lp, ent = token_logprobs(model, prompts, ids, mask, temperature, pad)
    ref_lp, ref_ent = _naive(model, prompts, ids, mask, temperature, pad)
    torch.testing.assert_close(lp, ref_lp, rtol=0, atol=1e-5)
    torch.testing.assert_close(ent, ref_ent, rtol=0, atol=1e-5)
    assert torch.equal(lp[mask == 0], torch.zeros(int((mask == 0).sum())))


def test_gradients_equal_the_naive_ones(batch, monkeypatch):
    import grpolab.logprobs as L

    monkeypatch.setattr(L, "CHUNK_ROWS", 4)  # several chunks, so chunk boundaries are exercised
    model, pad, prompts, ids, mask = batch
    weights = torch.linspace(-1, 1, ids.numel()).view(ids.shape)

    def grads(fn):
        model.zero_grad()
        lp, _ = fn(model, prompts, ids, mask, 0.8, pad)
        (lp * weights).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    ours, ref = grads(token_logprobs), grads(_naive)
    for name in ref:
        torch.testing.assert_close(ours[name], ref[name], rtol=0, atol=1e-5, msg=name)


def test_lora_reference_is_the_base_model(tiny_model_dir, batch):
    base, pad, prompts, ids, mask = batch
    lora, _ = load_model(Config.from_flat(model=str(tiny_model_dir), lora_rank=4).model)
    with torch.no_grad():
        for n, p in lora.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)  # make the adapter matter
        with_adapter, _ = token_logprobs(lora, prompts, ids, mask, 1.0, pad)
        with lora.disable_adapter():
            without, _ = token_logprobs(lora, prompts, ids, mask, 1.0, pad)
        base_lp, _ = token_logprobs(base, prompts, ids, mask, 1.0, pad)
    torch.testing.assert_close(without, base_lp, rtol=0, atol=1e-6)
    assert (with_adapter - without).abs().max() > 1e-3
