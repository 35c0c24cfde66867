"""steps_per_generation: one rollout call per round of S steps, lagging groups trained against their sampling
policy, checkpoints that keep the rest of a round, and exact resume in the middle of one."""

import math
import signal

import pytest
import torch

from grpolab.batch import Group, group_from_state, group_state, split_round, to_update_batch
from grpolab.checkpoint import latest_checkpoint
from grpolab.config import Config
from grpolab.models import load_model
from grpolab.report.jsonl import read_jsonl
from grpolab.tasks import Example
from grpolab.trainer import train
from grpolab.update import UpdateBatch, policy_update

TIMING = {"train_seconds", "step_seconds", "update_seconds", "sync_seconds", "gen_seconds", "gen_tokens_per_s",
          "old_logp_seconds", "eval_seconds"}


def _steps(run):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_jsonl(run / "metrics.jsonl") if "reward" in r]


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "weights.safetensors"))


def _group(i: int, rewards: list[float], T: int = 3) -> Group:
    G = len(rewards)
    return Group(Example(f"e{i}", f"p{i}", "1", {"k": i}), [1, 2, i], torch.full((G, T), i), torch.ones(G, T),
                 torch.zeros(G, dtype=torch.bool), torch.full((G, T), -0.5), None, [f"t{i}"] * G,
                 {"correct": rewards}, torch.tensor(rewards, dtype=torch.float32), torch.tensor(rewards) - 0.5,
                 kept=len(set(rewards)) > 1)


def test_split_round_deals_b_kept_groups_per_step_and_logs_filtered_ones_with_the_first():
    seen = [_group(0, [1., 0.]), _group(1, [1., 1.]), _group(2, [0., 1.]), _group(3, [1., 0.]), _group(4, [0., 1.])]
    kept = [g for g in seen if g.kept]
    info = {"gen_seconds": 2.0, "gen_tokens_per_s": 30.0, "groups_sampled": 5.0, "groups_resampled": 1.0}
    steps = split_round(kept, seen, info, steps=3, B=2)
    assert [[g.example.id for g in k] for k, _, _ in steps] == [["e0", "e2"], ["e3", "e4"], []]
    assert [g.example.id for g in steps[0][1]] == ["e0", "e2", "e1"]  # the filtered group is logged once, first
    assert [g.lag for g in kept] == [0, 0, 1, 1]
    first, second, empty = (s[2] for s in steps)
    assert (first["gen_seconds"], first["gen_tokens_per_s"], first["groups_sampled"]) == (2.0, 30.0, 5.0)
    assert (second["gen_seconds"], second["gen_tokens_per_s"], second["groups_kept"]) == (0.0, 0.0, 2.0)
    assert first["reward"] == pytest.approx(4 / 6) and second["reward"] == 0.5
    assert [s["policy_lag"] for s in (first, second, empty)] == [0.0, 1.0, 2.0]
    assert empty["groups_kept"] == 0.0  # filtering left too few groups: an empty step
    assert split_round(kept, seen, info, steps=1, B=2) == [(kept, seen, info)]


def test_a_group_survives_the_checkpoint_round_trip():
    g = _group(7, [1., 0.])
    g.lag, g.behaviour_logp = 1, torch.full((2, 3), -0.25)
    back = group_from_state(group_state(g))
    assert back.example == g.example and back.example.meta == {"k": 7} and back.texts == g.texts
    for f in ("completion_ids", "mask", "truncated", "sampler_logp", "rewards", "advantages", "behaviour_logp"):
        assert torch.equal(getattr(back, f), getattr(g, f)), f
    assert (back.lag, back.kept, back.keep_threshold, back.scores) == (1, True, None, g.scores)
    assert torch.equal(to_update_batch([g], Config.from_flat(max_new_tokens=3)).old_logp, g.behaviour_logp)


def test_old_logprobs_of_a_lagging_batch_drive_the_clip(tiny_model_dir):
    """Old log-probs ln(1.5) below the current ones: every ratio is 1.5, above 1 + 0.2, so with A > 0 every
    token is clipped, the gradient is exactly zero and the weights do not move."""
    cfg = Config.from_flat(model=str(tiny_model_dir), beta=0.0, loss_aggregation="token-mean")
    model, tok = load_model(cfg.model)
    g = torch.Generator().manual_seed(0)
    G, T = 4, 5
    ids, mask = torch.randint(3, 200, (G, T), generator=g), torch.ones(G, T)
    from grpolab.logprobs import token_logprobs

    with torch.no_grad():
        current, _ = token_logprobs(model, [[1, 5, 6]] * G, ids, mask, 1.0, tok.pad_token_id)
    batch = UpdateBatch([[1, 5, 6]] * G, ids, mask, torch.ones(G), None, T, old_logp=current - math.log(1.5))
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    st = policy_update(model, batch, cfg.algo, opt, sched, temperature=1.0, pad_id=tok.pad_token_id, micro_batch=0,
                       grad_clip=1.0)
    assert st["clip_fraction"] == 1.0 and st["ratio_mean"] == pytest.approx(1.5, abs=1e-5)
    assert st["grad_norm"] == 0.0
    assert all(torch.equal(p, start[n]) for n, p in model.named_parameters())


def test_rounds_sample_once_and_train_lagging_groups_against_their_sampler(tiny_cfg):
    result = train(tiny_cfg(run_name="rounds", steps_per_generation=2, steps=4, export=False))
    steps = [r for r in read_jsonl(result.run_dir / "metrics.jsonl") if "reward" in r]
    assert [r["policy_lag"] for r in steps] == [0.0, 1.0, 0.0, 1.0]
    assert [r["gen_seconds"] > 0 for r in steps] == [True, False, True, False]
    assert all(r["rows_trained"] > 0 for r in steps)
    # on-policy steps have ratio 1 exactly; a lagging step whose weights moved since its groups were sampled (the
    # step before it had a gradient; the first groups of this tiny run all score alike) has a ratio off 1
    assert [r["ratio_mean"] == 1.0 for r in steps[::2]] == [True, True]
    moved = [i for i in (1, 3) if steps[i - 1]["grad_norm"] > 0]
    assert moved and all(steps[i]["ratio_mean"] != 1.0 for i in moved)
    examples = [r["example"] for r in read_jsonl(result.run_dir / "rollouts.jsonl")]
    assert len(set(examples)) == 4 * 2  # every step trained on its own two prompts


@pytest.mark.parametrize("engine", ["fast", "hf"])
def test_ctrl_c_in_the_middle_of_a_round_resumes_exactly(tiny_cfg, engine):
    """The hf engine reports no sampler log-probs: the lagging groups' old log-probs are scored right after
    sampling; the fast engine's are the sampler's own. Either way a checkpoint taken mid-round keeps the rest
    of the round, so the resumed run is the uninterrupted one, bit for bit."""
    kw = dict(steps_per_generation=3, steps=6, engine=engine, export=False)
    straight = train(tiny_cfg(run_name=f"r-straight-{engine}", **kw))

    def interrupt(record):
        if record["step"] == 2:
            signal.raise_signal(signal.SIGINT)

    part = train(tiny_cfg(run_name=f"r-part-{engine}", **kw), on_step=interrupt)
    assert part.interrupted and part.steps_done == 2
    assert (latest_checkpoint(part.run_dir / "checkpoints") / "pending.pt").is_file()
    resumed = train(None, resume=part.run_dir)
    a = _weights(latest_checkpoint(straight.run_dir / "checkpoints"))
    b = _weights(latest_checkpoint(resumed.run_dir / "checkpoints"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _steps(straight.run_dir) == _steps(resumed.run_dir)
    assert [r["policy_lag"] for r in _steps(straight.run_dir)] == [0.0, 1.0, 2.0] * 2


def test_a_run_extended_on_resume_samples_whole_rounds_as_an_uninterrupted_one(tiny_cfg):
    kw = dict(steps_per_generation=2, export=False)
    straight = train(tiny_cfg(run_name="x-straight", steps=4, **kw))
    part = train(tiny_cfg(run_name="x-part", steps=3, **kw))  # stops after the first step of round 2
    resumed = train(None, resume=part.run_dir, overrides={"steps": 4})
    a = _weights(latest_checkpoint(straight.run_dir / "checkpoints"))
    b = _weights(latest_checkpoint(resumed.run_dir / "checkpoints"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_lagging_steps_train_against_exactly_the_log_probs_their_sampler_reported(tiny_cfg, monkeypatch):
    import grpolab.trainer as trainer_mod

    sampled, seen_old = [], []
    real_update, real_generate = trainer_mod.policy_update, None

    def record_update(model, batch, *a, **kw):
        seen_old.append(None if batch.old_logp is None else batch.old_logp.clone())
        return real_update(model, batch, *a, **kw)

    monkeypatch.setattr(trainer_mod, "policy_update", record_update)
    from grpolab.rollout.fast import FastCPUEngine

    real_generate = FastCPUEngine.generate

    def record_generate(self, prompts, params, generator):
        ro = real_generate(self, prompts, params, generator)
        if params.temperature > 0:  # training rollouts, not the greedy evaluations
            sampled.append(ro.sampler_logp.clone())
        return ro

    monkeypatch.setattr(FastCPUEngine, "generate", record_generate)
    train(tiny_cfg(run_name="old-logp", steps_per_generation=2, steps=2, engine="fast", export=False))
    assert len(sampled) == 1 and seen_old[0] is None  # one rollout call; the first step is on-policy
    rows = seen_old[1].shape[0]  # the second step's B groups are the round's last rows
    assert torch.equal(seen_old[1], sampled[0][-rows:])


def test_a_warped_sampler_gets_its_lagging_old_log_probs_from_a_forward(tiny_cfg):
    """Top-k sampling reports the log-probs of the renormalised top-k distribution, not the policy's: without
    --keep-sampling-mask the lagging groups are scored by a no-grad forward right after sampling (timed)."""
    warped = train(tiny_cfg(run_name="warped", steps_per_generation=2, steps=2, top_k=5, export=False))
    plain = train(tiny_cfg(run_name="plain", steps_per_generation=2, steps=2, export=False))
    first = [r for r in read_jsonl(warped.run_dir / "metrics.jsonl") if "reward" in r][0]
    assert first["old_logp_seconds"] > 0
    assert all("old_logp_seconds" not in r for r in read_jsonl(plain.run_dir / "metrics.jsonl"))


def test_rounds_with_gradient_checkpointing_train(tiny_cfg):
    """Checkpointed layers recompute in backward with the default attention kernel, so the update keeps it."""
    result = train(tiny_cfg(run_name="ckpt", steps_per_generation=2, steps=2, gradient_checkpointing=True,
                            export=False))
    steps = [r for r in read_jsonl(result.run_dir / "metrics.jsonl") if "reward" in r]
    assert len(steps) == 2 and all(math.isfinite(r["loss"]) and r["rows_trained"] > 0 for r in steps)
