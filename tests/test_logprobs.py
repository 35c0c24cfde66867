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


@pytest.fixture(scope="module", params=["distinct", "shared"])
def batch(request, tiny_model_dir):
    """Rows with distinct prompts (one pass per row) or groups sharing prompts (one prompt pass per group)."""
    model, tok = load_model(Config.from_flat(model=str(tiny_model_dir)).model)
    g = torch.Generator().manual_seed(0)
    if request.param == "distinct":
        prompts = [[1, 5, 6, 7], [1, 9], [1, 5, 6, 7, 8, 9, 10]]
    else:
        prompts = [[1, 5, 6, 7], [1, 9], [1, 5, 6, 7], [1, 9], [1, 5, 6, 7, 8, 9, 10], [1, 9]]
    n = len(prompts)
    ids = torch.randint(3, 200, (n, 6), generator=g)
    mask = torch.ones(n, 6)
    mask[1, 3:] = 0
    mask[2, 4:] = 0
    mask[n - 1, 1:] = 0
    return model, tok.pad_token_id, prompts, ids, mask


@pytest.fixture(params=["auto", "packed", "shared", "full"])
def layout(request, monkeypatch):
    """Every way rows can go through the decoder (`logprobs.LAYOUT`) must give the same numbers; a forced
    layout must also be the one that ran (no silent fallback)."""
    import grpolab.logprobs as L

    monkeypatch.setattr(L, "LAYOUT", request.param)
    seen = _spy_layouts(monkeypatch)
    yield request.param
    if request.param == "packed":
        assert seen and set(seen) == {"_hidden_packed"}, seen
    elif request.param == "full":
        assert seen and set(seen) == {"_hidden_full"}, seen


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_chunked_logprobs_equal_the_naive_full_logits(batch, temperature, layout):
    model, pad, prompts, ids, mask = batch
    lp, ent = token_logprobs(model, prompts, ids, mask, temperature, pad)
    ref_lp, ref_ent = _naive(model, prompts, ids, mask, temperature, pad)
    torch.testing.assert_close(lp, ref_lp, rtol=0, atol=1e-5)
    torch.testing.assert_close(ent, ref_ent, rtol=0, atol=1e-5)
    assert torch.equal(lp[mask == 0], torch.zeros(int((mask == 0).sum())))


def test_gradients_equal_the_naive_ones(batch, monkeypatch, layout):
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


def test_threshold_mask_gradients_equal_the_naive_ones(batch, layout):
    model, pad, prompts, ids, mask = batch
    g = torch.Generator().manual_seed(1)
    thr = torch.randn(ids.shape, generator=g) * 0.3  # keeps roughly half the vocabulary
    weights = torch.linspace(-1, 1, ids.numel()).view(ids.shape)

    def naive(model, prompts, ids, mask, temperature, pad):
        full, attn, pos, P = pack_rows(prompts, ids, mask, pad)
        logits = model(input_ids=full, attention_mask=attn, position_ids=pos).logits.float() / temperature
        logits = logits[:, P - 1:P - 1 + ids.shape[1]]
        drop = (logits < thr[..., None]).scatter(2, ids[..., None], False)
        lp = logits.masked_fill(drop, float("-inf")).log_softmax(-1)
        return lp.gather(2, ids[..., None]).squeeze(-1) * mask, None

    def ours(model, prompts, ids, mask, temperature, pad):
        return token_logprobs(model, prompts, ids, mask, temperature, pad, keep_threshold=thr)

    results = []
    for fn in (ours, naive):
        model.zero_grad()
        lp, _ = fn(model, prompts, ids, mask, 0.9, pad)
        (lp * weights).sum().backward()
        results.append((lp.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=1e-5)
    for name in results[1][1]:
        torch.testing.assert_close(results[0][1][name], results[1][1][name], rtol=0, atol=1e-5, msg=name)


def test_cache_rows_are_expanded_like_transformers_does(tiny_model_dir):
    """The fixed-order gather (index_select) expands a prompt KV cache to the rows exactly as transformers'
    batch_select_indices does; a cache without per-layer tensors falls back to its own method."""
    from grpolab.logprobs import _select_cache_rows

    model, _ = load_model(Config.from_flat(model=str(tiny_model_dir)).model)
    ids = torch.tensor([[1, 5, 6, 7], [1, 9, 10, 11]])
    rows = torch.tensor([0, 0, 1, 0, 1])

    def cache():
        with torch.no_grad():
            out = model(input_ids=ids, use_cache=True)
            return getattr(out, "cache", None) or out.past_key_values  # transformers >= 5.x: `cache`

    ours, ref = cache(), cache()
    _select_cache_rows(ours, rows)
    ref.batch_select_indices(rows)
    for a, b in zip(ours.layers, ref.layers):
        assert a.keys.shape[0] == 5 and torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)

    class Opaque:
        selected = None

        def batch_select_indices(self, r):
            self.selected = r

    other = Opaque()
    _select_cache_rows(other, rows)
    assert other.selected is rows


def _bf16_hidden_then_fp32_head(model, prompts, ids, mask, temperature, pad):
    """The decoder under bf16 autocast, the vocabulary projection and log-softmax in fp32, on full logits (with
    the plain attention kernel token_logprobs picks for sequences this short)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    full, attn, pos, P = pack_rows(prompts, ids, mask, pad)
    with torch.autocast("cpu", dtype=torch.bfloat16), sdpa_kernel([SDPBackend.MATH]):
        hidden = model.model(input_ids=full, attention_mask=attn, position_ids=pos).last_hidden_state
    logits = hidden.float() @ model.lm_head.weight.t() / temperature
    lp = logits[:, P - 1:P - 1 + ids.shape[1]].log_softmax(-1)
    return lp.gather(2, ids[..., None]).squeeze(-1) * mask


def test_bf16_autocast_runs_the_decoder_in_bf16_and_the_head_in_fp32(batch):
    """Under the update's autocast the log-probs are exactly 'bf16 decoder, fp32 head'; an all-bf16 head
    (what plain autocast would do) is off by far more than the tolerance."""
    model, pad, prompts, ids, mask = batch
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lp, _ = token_logprobs(model, prompts, ids, mask, 0.8, pad)
    assert lp.dtype == torch.float32
    torch.testing.assert_close(lp, _bf16_hidden_then_fp32_head(model, prompts, ids, mask, 0.8, pad), rtol=0, atol=1e-5)
    full, attn, pos, P = pack_rows(prompts, ids, mask, pad)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(input_ids=full, attention_mask=attn, position_ids=pos).logits.float() / 0.8
    all_bf16 = logits[:, P - 1:P - 1 + ids.shape[1]].log_softmax(-1).gather(2, ids[..., None]).squeeze(-1) * mask
    assert float((all_bf16 - lp).abs().max()) > 1e-3


def test_bf16_autocast_gradients_point_the_same_way_as_fp32(batch):
    model, pad, prompts, ids, mask = batch
    weights = torch.linspace(-1, 1, ids.numel()).view(ids.shape)

    def grads(kind):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=kind == "bf16"):
            lp, _ = token_logprobs(model, prompts, ids, mask, 1.0, pad)
        (lp * weights).sum().backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    fp32, bf16 = grads("off"), grads("bf16")
    # bf16 rounds each product's inputs to 8 bits of mantissa: the gradient is perturbed, not turned
    assert float(torch.nn.functional.cosine_similarity(fp32, bf16, dim=0)) > 0.99


@pytest.mark.parametrize("budget", [0, 1 << 40])
def test_either_attention_kernel_gives_an_on_policy_ratio_of_exactly_one(batch, monkeypatch, budget, layout):
    """The plain kernel (small passes) or the default one: old log-probs (no grad) and the update's pass
    (with grad) always pick the same, so their difference is exactly 0."""
    import grpolab.logprobs as L

    monkeypatch.setattr(L, "MATH_ATTENTION_BYTES", budget)
    model, pad, prompts, ids, mask = batch
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the plain kernel is chosen only under autocast
        with torch.no_grad():
            old, _ = token_logprobs(model, prompts, ids, mask, 1.0, pad)
        new, _ = token_logprobs(model, prompts, ids, mask, 1.0, pad)
    assert torch.equal(old, new.detach())


def test_the_planner_counts_the_attention_cap_the_update_uses():
    from grpolab import logprobs, plan

    assert plan.MATH_ATTENTION_BYTES == logprobs.MATH_ATTENTION_BYTES


def _spy_layouts(monkeypatch):
    import grpolab.logprobs as L

    seen = []
    for name in ("_hidden_packed", "_hidden_shared", "_hidden_full"):
        fn = getattr(L, name)
        monkeypatch.setattr(L, name, lambda *a, _fn=fn, _name=name, **k: (seen.append(_name), _fn(*a, **k))[1])
    return seen


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_rows_of_a_qwen3_model_equal_the_naive_ones(tiny_qwen3_dir, monkeypatch, attention):
    """Another architecture (q/k norms, its own mask code) through the packed layout, gradients included, with
    either attention implementation that takes a custom mask (eager adds it to the scores: a float mask)."""
    import grpolab.logprobs as L

    model, tok = load_model(Config.from_flat(model=str(tiny_qwen3_dir)).model)
    monkeypatch.setattr(model.config, "_attn_implementation", attention)
    prompts = [[1, 5, 6, 7]] * 3 + [[1, 9]] * 2
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 200, (5, 7), generator=g)
    mask = (torch.arange(7)[None] < torch.tensor([7, 2, 5, 1, 6])[:, None]).float()
    weights = torch.linspace(-1, 1, ids.numel()).view(ids.shape)
    seen = _spy_layouts(monkeypatch)
    monkeypatch.setattr(L, "LAYOUT", "packed")
    out = []
    for fn in (token_logprobs, _naive):
        model.zero_grad()
        lp, _ = fn(model, prompts, ids, mask, 1.0, tok.pad_token_id)
        (lp * weights).sum().backward()
        out.append((lp.detach(), [p.grad.clone() for p in model.parameters()]))
    assert seen == ["_hidden_packed"]
    torch.testing.assert_close(out[0][0], out[1][0], rtol=0, atol=1e-5)
    for a, b in zip(out[0][1], out[1][1]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_the_layout_packs_short_uneven_rows_and_pads_long_even_ones(tiny_model_dir, monkeypatch):
    """The cost model: completions much shorter than the longest pack (padding saved); G equal long rows stay
    padded (the packed attention would be quadratic in G x T); a mask with a hole cannot be packed."""
    import grpolab.logprobs as L

    model, _ = load_model(Config.from_flat(model=str(tiny_model_dir)).model)
    decoder = model.model

    def pick(lengths, T, holes=False):
        mask = (torch.arange(T)[None] < torch.tensor(lengths)[:, None]).float()
        if holes:
            mask[0, 1] = 0
        return L._layout(model, decoder, [[1, 5, 6]] * len(lengths), mask)[0]

    assert pick([40, 3, 3, 3, 3, 3, 3, 3], 40) == "packed"
    assert pick([200] * 8, 200) == "shared"
    assert pick([40, 3, 3, 3, 3, 3, 3, 3], 40, holes=True) == "shared"
    monkeypatch.setattr(L, "PACKED_MASK_BYTES", 1000)
    assert pick([40, 3, 3, 3, 3, 3, 3, 3], 40) == "shared"  # its (U, L, L) mask copies would not fit
    monkeypatch.undo()
    cfg = decoder.config
    monkeypatch.setattr(cfg, "layer_types", ["full_attention", "sliding_attention"], raising=False)
    assert pick([40, 3, 3, 3, 3, 3, 3, 3], 40) == "shared"  # a sliding layer has its own mask
    monkeypatch.undo()
    monkeypatch.setattr(cfg, "sliding_window", 16, raising=False)
    monkeypatch.setattr(cfg, "use_sliding_window", True, raising=False)
    assert pick([40, 3, 3, 3, 3, 3, 3, 3], 40) == "shared"  # packed length 3 + 39 + 7 x 2 > the window
    monkeypatch.setattr(cfg, "use_sliding_window", False)
    assert pick([40, 3, 3, 3, 3, 3, 3, 3], 40) == "packed"  # a window that is switched off does not count
    monkeypatch.undo()
    assert pick([40, 3, 3, 3, 3, 3, 3, 3], 40) == "packed"
    monkeypatch.setattr(decoder.config, "_attn_implementation", "flash_attention_2")
    assert pick([40, 3, 3, 3, 3, 3, 3, 3], 40) == "shared"  # no custom masks in that kernel


def test_gradient_checkpointing_scores_packed_rows(tiny_model_dir, monkeypatch):
    """Under gradient checkpointing the KV cache is off, so groups used to repeat their prompt per row; the
    packed layout needs no cache and gives the same gradients as the plain model."""
    import grpolab.logprobs as L

    monkeypatch.setattr(L, "LAYOUT", "packed")
    model, tok = load_model(Config.from_flat(model=str(tiny_model_dir)).model)
    prompts = [[1, 5, 6, 7]] * 4
    ids = torch.randint(3, 200, (4, 6), generator=torch.Generator().manual_seed(5))
    mask = (torch.arange(6)[None] < torch.tensor([6, 2, 4, 1])[:, None]).float()

    def grads():
        model.zero_grad()
        lp, _ = token_logprobs(model, prompts, ids, mask, 1.0, tok.pad_token_id)
        lp.sum().backward()
        return [p.grad.clone() for p in model.parameters()]

    model.train()
    model.zero_grad()
    lp, _ = _naive(model, prompts, ids, mask, 1.0, tok.pad_token_id)
    lp.sum().backward()
    naive = [p.grad.clone() for p in model.parameters()]
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    seen = _spy_layouts(monkeypatch)
    ckpt = grads()
    model.eval()  # old log-probs are scored in eval mode: the same layout as the update's pass
    with torch.no_grad():
        token_logprobs(model, prompts, ids, mask, 1.0, tok.pad_token_id)
    model.activation_checkpointing_disable()
    assert seen == ["_hidden_packed", "_hidden_packed"]
    for a, b in zip(naive, ckpt):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_the_layout_of_a_checkpointed_model_does_not_depend_on_train_or_eval_mode(tiny_model_dir):
    """Old log-probs are scored in eval mode, the update in train mode: with checkpointing on, both must take the
    same layout, or a lagging batch's ratio is off 1 by the layouts' rounding (1e-2 in bf16)."""
    import grpolab.logprobs as L

    model, _ = load_model(Config.from_flat(model=str(tiny_model_dir)).model)
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    for lengths in ([24] * 8, [24, 3, 3, 3, 3, 3, 3, 3]):
        mask = (torch.arange(24)[None] < torch.tensor(lengths)[:, None]).float()
        picks = []
        for train in (True, False):
            model.train(train)
            picks.append(L._layout(model, model.model, [[1] * 40] * 8, mask)[0])
        assert picks[0] == picks[1], (lengths, picks)


def test_models_with_layers_that_carry_state_across_positions_are_never_packed():
    """A hybrid's Mamba or linear-attention layers would run through every row of a packed sequence."""
    from torch import nn

    from grpolab.logprobs import _plain_attention_layers

    class Attention(nn.Module):
        pass

    class MambaMixer(nn.Module):
        pass

    def decoder(*kinds):
        layers = []
        for kind in kinds:
            layer = nn.Module()
            if kind == "attention":
                layer.self_attn = Attention()
            else:
                layer.mixer = MambaMixer()
            layers.append(layer)
        d = nn.Module()
        d.layers = nn.ModuleList(layers)
        return d

    assert _plain_attention_layers(decoder("attention", "attention"))
    assert not _plain_attention_layers(decoder("attention", "mamba"))
    both = decoder("attention", "attention")
    both.layers[1].self_attn.conv = MambaMixer()  # stateful module inside an attention layer
    assert not _plain_attention_layers(both)
