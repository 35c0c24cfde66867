"""Known-answer tests for the math in grpolab.algo (DESIGN.md section 4): literal numbers, atol=1e-6, rtol=0."""

import math

import pytest
import torch

from grpolab.algo import (LossNorm, LossSpec, aggregate, group_advantages, kl_penalty, overlong_penalty,
                          per_token_loss, zero_variance_groups)


def close(actual, expected, atol=1e-6):
    torch.testing.assert_close(torch.as_tensor(actual, dtype=torch.float64),
                               torch.as_tensor(expected, dtype=torch.float64), rtol=0, atol=atol)


@pytest.mark.parametrize("rewards,G,eps,expected", [
    ([1, 0, 0, 1], 4, 0.0, [0.866025, -0.866025, -0.866025, 0.866025]),  # Bessel-corrected std
    ([1, 0, 0, 1], 4, 1e-4, [0.865875, -0.865875, -0.865875, 0.865875]),
    ([1, 0], 2, 0.0, [0.707107, -0.707107]),  # G=2 catches ddof=0 (which would give +-1)
    ([1, 0, 5, 5], 2, 0.0, [0.707107, -0.707107, 0.0, 0.0]),  # groups don't mix
    ([1, 1, 1, 1], 4, 0.0, [0.0, 0.0, 0.0, 0.0]),  # equal group: zeros, never NaN
])
def test_group_std_advantages(rewards, G, eps, expected):
    adv = group_advantages(torch.tensor(rewards, dtype=torch.float32), G, "mean", "group-std", eps)
    assert not torch.isnan(adv).any()
    close(adv, expected)


def test_equal_group_of_non_representable_values_is_exactly_zero():
    adv = group_advantages(torch.tensor([0.1, 0.1, 0.1], dtype=torch.float32), 3, "mean", "group-std", 1e-4)
    assert torch.equal(adv, torch.zeros(3))


def test_no_std_scaling_dr_grpo():
    close(group_advantages(torch.tensor([1.0, 0, 0, 0]), 4, "mean", "none"), [0.75, -0.25, -0.25, -0.25])


def test_leave_one_out_baseline():
    # r_i - mean(others): 1 - 0 = 1; 0 - 1/3 = -0.333333
    close(group_advantages(torch.tensor([1.0, 0, 0, 0]), 4, "leave-one-out", "none"),
          [1.0, -0.333333, -0.333333, -0.333333])


def test_batch_std_scaling():
    # group means 0.5 and 0.5; batch std of [1,0,1,0] (ddof=1) = 0.577350
    close(group_advantages(torch.tensor([1.0, 0, 1, 0]), 2, "mean", "batch-std", 0.0),
          [0.866025, -0.866025, 0.866025, -0.866025])


def test_zero_variance_groups():
    assert zero_variance_groups(torch.tensor([1.0, 1, 0, 1, 2, 2]), 2).tolist() == [True, False, True]


def _loss(logp, old, adv, spec, **kw):
    lp = torch.tensor([[logp]], dtype=torch.float32)
    ol = torch.tensor([[old]], dtype=torch.float32)
    return per_token_loss(lp, ol, torch.tensor([adv]), torch.ones(1, 1), spec, **kw)


def test_clipped_surrogate_positive_advantage_is_clipped():
    loss, st = _loss(math.log(1.5), 0.0, 1.0, LossSpec(clip_low=0.2, clip_high=0.2))
    close(loss, [[-1.2]])
    close(st["clip_fraction"], 1.0)


def test_clipped_surrogate_negative_advantage_uses_min_too():
    loss, st = _loss(math.log(1.5), 0.0, -1.0, LossSpec(clip_low=0.2, clip_high=0.2))
    close(loss, [[1.5]])  # min(1.5 * -1, 1.2 * -1) = -1.5 -> loss +1.5 (not the max, which would be 1.2)
    close(st["clip_fraction"], 0.0)


def test_clip_inactive():
    loss, st = _loss(math.log(1.1), 0.0, 1.0, LossSpec(clip_low=0.2, clip_high=0.2))
    close(loss, [[-1.1]])
    close(st["clip_fraction"], 0.0)


def test_clip_higher_uses_the_upper_epsilon():
    loss, _ = _loss(math.log(1.5), 0.0, 1.0, LossSpec(clip_low=0.2, clip_high=0.28))
    close(loss, [[-1.28]])
    loss, _ = _loss(math.log(0.5), 0.0, -1.0, LossSpec(clip_low=0.2, clip_high=0.28))
    close(loss, [[0.8]])  # min(0.5 * -1, 0.8 * -1) = -0.8


def test_k3_kl():
    close(kl_penalty(torch.tensor(math.log(0.5)), torch.tensor(math.log(0.25)), "k3"), 0.193147)


def test_k3_at_equality_is_exactly_zero():
    x = torch.tensor([-0.3, -2.0, -7.5])
    assert torch.equal(kl_penalty(x, x.clone(), "k3"), torch.zeros(3))


def test_k1_k2_and_unbiased_k3():
    logp, ref = torch.tensor(math.log(0.5)), torch.tensor(math.log(0.25))
    close(kl_penalty(logp, ref, "k1"), 0.693147)  # log 2
    close(kl_penalty(logp, ref, "k2"), 0.240227)  # (log 2)^2 / 2
    # pi / pi_old = 0.5 / 0.4 = 1.25; 1.25 * 0.193147 = 0.241434
    close(kl_penalty(logp, ref, "k3-unbiased", old_logp=torch.tensor(math.log(0.4))), 0.241434)


def test_kl_enters_the_loss_with_beta():
    loss, st = _loss(math.log(0.5), math.log(0.5), 0.0, LossSpec(beta=0.5, kl_estimator="k3"),
                     ref_logp=torch.tensor([[math.log(0.25)]]))
    close(loss, [[0.096574]])  # 0 surrogate + 0.5 * 0.193147
    close(st["kl"], 0.193147)


PER_TOKEN = torch.tensor([[1.0, 1, 1, 1], [2, 2, 0, 0]])
MASK = torch.tensor([[1.0, 1, 1, 1], [1, 1, 0, 0]])


@pytest.mark.parametrize("mode,expected", [
    ("token-mean", 1.333333), ("seq-mean-token-mean", 1.5), ("seq-mean-token-sum-norm", 1.0),
    ("seq-mean-token-sum", 4.0),
])
def test_aggregation(mode, expected):
    close(aggregate(PER_TOKEN, MASK, mode, LossNorm(num_seqs=2, num_tokens=6, max_len=4)), expected)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm", "seq-mean-token-sum"])
def test_micro_batches_add_up_to_the_batch_loss(mode):
    norm = LossNorm(num_seqs=2, num_tokens=6, max_len=4)
    whole = aggregate(PER_TOKEN, MASK, mode, norm)
    parts = aggregate(PER_TOKEN[:1], MASK[:1], mode, norm) + aggregate(PER_TOKEN[1:], MASK[1:], mode, norm)
    close(parts, whole)


def test_on_policy_identity():
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.1, -0.2, -3.0]])
    mask = torch.tensor([[1.0, 1, 0], [1, 1, 1]])
    adv = torch.tensor([0.7, -1.3])
    loss, _ = per_token_loss(logp, logp.clone(), adv, mask, LossSpec())
    total = aggregate(loss, mask, "token-mean", LossNorm(2, 5, 3))
    close(total, -(adv[:, None] * mask).sum() / mask.sum())  # = -(0.7*2 - 1.3*3)/5 = 0.5
    close(total, 0.5)


@pytest.mark.parametrize("objective,ratio_level", [("clip", "token"), ("cispo", "token"), ("pg", "token"),
                                                   ("clip", "sequence")])
def test_gradient_sign_raises_the_favoured_row(objective, ratio_level):
    logits = torch.zeros(2, 3, 5, requires_grad=True)  # 2 rows, 3 tokens, vocab 5
    targets = torch.tensor([[1, 2, 3], [0, 4, 1]])
    mask = torch.ones(2, 3)

    def row_logp():
        return logits.log_softmax(-1).gather(2, targets[..., None]).squeeze(-1)

    before = row_logp().detach()
    spec = LossSpec(objective=objective, ratio_level=ratio_level, clip_low=0.2, clip_high=0.2)
    loss, _ = per_token_loss(row_logp(), before, torch.tensor([1.0, 0.0]), mask, spec)
    aggregate(loss, mask, "token-mean", LossNorm(2, 6, 3)).backward()
    with torch.no_grad():
        logits -= 1.0 * logits.grad
    after = row_logp().detach()
    assert (after[0] > before[0]).all()  # A > 0: every token of row 0 became more likely
    torch.testing.assert_close(after[1], before[1], rtol=0, atol=0)  # A = 0: untouched


def test_sequence_ratio_is_the_geometric_mean():
    logp = torch.tensor([[math.log(2.0), math.log(0.5), 0.0]])
    old = torch.zeros(1, 3)
    mask = torch.tensor([[1.0, 1, 0]])
    _, st = per_token_loss(logp, old, torch.tensor([1.0]), mask, LossSpec(ratio_level="sequence"))
    close(st["ratio_mean"], 1.0)  # exp((log 2 + log 0.5)/2) = 1


def test_cispo_clips_the_detached_weight():
    logp = torch.tensor([[math.log(3.0)]], requires_grad=True)
    loss, st = per_token_loss(logp, torch.zeros(1, 1), torch.tensor([1.0]), torch.ones(1, 1),
                              LossSpec(objective="cispo", clip_low=1.0, clip_high=1.0))
    close(loss, [[-2.0 * math.log(3.0)]])  # weight min(3, 2) = 2, times A * logp
    loss.sum().backward()
    close(logp.grad, [[-2.0]])
    close(st["clip_fraction"], 1.0)


def test_truncated_importance_sampling_caps_the_weight():
    logp = torch.zeros(1, 2)
    sampler = torch.tensor([[math.log(0.25), math.log(2.0)]])  # weights pi_old/pi_sampler = 4 and 0.5
    loss, _ = per_token_loss(logp, logp.clone(), torch.tensor([1.0]), torch.ones(1, 2), LossSpec(tis_cap=2.0),
                             sampler_logp=sampler)
    close(loss, [[-2.0, -0.5]])


def test_offpolicy_sequence_mask_drops_only_negative_drifted_rows():
    logp = torch.tensor([[-1.0, -1.0], [-1.0, -1.0], [-1.0, -1.0]])
    old = torch.tensor([[-0.5, -0.5], [-0.5, -0.5], [-0.99, -0.99]])  # drift old - new: 0.5, 0.5, 0.01
    adv = torch.tensor([-1.0, 1.0, -1.0])
    loss, st = per_token_loss(logp, old, adv, torch.ones(3, 2), LossSpec(offpolicy_mask_delta=0.1, clip_low=10,
                                                                         clip_high=10))
    assert torch.equal(loss[0], torch.zeros(2))  # A<0 and drift 0.5 > 0.1: masked
    assert (loss[1] != 0).all() and (loss[2] != 0).all()
    close(st["offpolicy_masked"], 1 / 3)


def test_overlong_penalty():
    close(overlong_penalty(torch.tensor([10, 48, 56, 64, 70]), 64, 16), [0.0, 0.0, -0.5, -1.0, -1.0])
