import json

import pytest

from grpolab.config import Config, field_index
from grpolab.errors import UserError
from grpolab.recipes import BASE_KNOBS, RECIPES

# The DESIGN.md recipe table, knob by knob.
EXPECTED = {
    "grpo": dict(advantage_scale="group-std", std_eps=1e-4, loss_aggregation="seq-mean-token-mean", clip_low=0.2,
                 clip_high=0.2, beta=0.04, kl_estimator="k3", ratio_level="token", objective="clip"),
    "dr-grpo": dict(advantage_scale="none", loss_aggregation="seq-mean-token-sum-norm", clip_low=0.2, clip_high=0.2,
                    beta=0.0, kl_estimator="none"),
    "dapo": dict(advantage_scale="group-std", loss_aggregation="token-mean", clip_low=0.2, clip_high=0.28, beta=0.0,
                 zero_variance="filter", overlong="penalty"),
    "olmo3": dict(advantage_scale="none", loss_aggregation="token-mean", clip_low=0.2, clip_high=0.272, tis_cap=2.0,
                  beta=0.0, zero_variance="filter"),
    "deepseek-v3.2": dict(advantage_scale="group-std", std_eps=1e-4, loss_aggregation="seq-mean-token-mean",
                          kl_estimator="k3-unbiased", offpolicy_mask_delta=0.1, keep_sampling_mask=True),
    "gspo": dict(advantage_scale="group-std", loss_aggregation="seq-mean-token-mean", ratio_level="sequence", beta=0.0),
    "rloo": dict(advantage_baseline="leave-one-out", advantage_scale="none", loss_aggregation="token-mean", beta=0.0),
    "reinforce": dict(advantage_scale="group-std", std_eps=1e-4, loss_aggregation="seq-mean-token-sum", objective="pg",
                      beta=0.0, num_updates=1),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recipe_expands_to_the_table(name):
    algo = Config.from_flat(recipe=name).algo
    for knob, value in EXPECTED[name].items():
        assert getattr(algo, knob) == value, (name, knob)
    assert all(getattr(algo, k) is not None for k in BASE_KNOBS)


def test_every_recipe_validates():
    for name in RECIPES:
        Config.from_flat(recipe=name)


def test_explicit_knob_beats_recipe():
    algo = Config.from_flat(recipe="dapo", clip_high=0.3, beta=0.01).algo
    assert algo.clip_high == 0.3 and algo.beta == 0.01 and algo.kl_estimator == "k3"


def test_round_trip_through_json_is_identical():
    cfg = Config.from_flat(recipe="olmo3", group_size=4, lr=3e-6, lora_rank=8)
    again = Config.from_dict(json.loads(cfg.to_json()))
    assert again == cfg


def test_replace_lets_a_new_beta_pick_an_estimator():
    cfg = Config.from_flat(recipe="dr-grpo")
    assert cfg.algo.kl_estimator == "none"
    assert cfg.replace(beta=0.1).algo.kl_estimator == "k3"


def test_toml_sections_and_flat_keys(tmp_path):
    f = tmp_path / "run.toml"
    f.write_text('recipe = "dapo"\n[rollout]\ngroup-size = 4\n[train]\nlr = 2e-6\n')
    cfg = Config.from_file(f)
    assert (cfg.algo.recipe, cfg.rollout.group_size, cfg.train.lr) == ("dapo", 4, 2e-6)


def test_field_names_are_unique_across_sections():
    assert len(field_index()) == sum(1 for _ in field_index())


@pytest.mark.parametrize("kw,needle", [
    (dict(group_size=1), "--group-size 1"),
    (dict(max_new_tokens=0), "--max-new-tokens 0"),
    (dict(recipe="grpoo"), "Did you mean 'grpo'"),
    (dict(temperature=0), "--temperature 0"),
    (dict(top_p=1.5), "--top-p 1.5"),
    (dict(clip_low=0.3, clip_high=0.2), "--clip-high 0.2 is below --clip-low 0.3"),
    (dict(recipe="dr-grpo", kl_estimator="k3"), "recipe 'dr-grpo' has beta 0"),
    (dict(beta=0.0, kl_estimator="k2"), "--kl-estimator k2 was set but --beta is 0"),
    (dict(group_size="eight"), "--group-size expects an int, got 'eight'"),
    (dict(grop_size=8), "unknown setting 'grop_size'"),
    (dict(resample_budget=3), "--resample-budget 3 only acts"),
    (dict(engine="turbo"), "unknown value for --engine 'turbo'"),
    (dict(min_lr_ratio=1.5, lr_schedule="cosine"), "--min-lr-ratio 1.5 must be in [0, 1]"),
    (dict(min_lr_ratio=0.1), "--min-lr-ratio 0.1 only acts with a decaying schedule"),
    (dict(lr_schedule="step"), "unknown value for --lr-schedule 'step'"),
])
def test_bad_values_name_the_value_and_the_fix(kw, needle):
    with pytest.raises(UserError) as e:
        Config.from_flat(**kw)
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_toml_is_a_user_error(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("group_size = = 3")
    with pytest.raises(UserError, match="not valid TOML"):
        Config.from_file(f)


def test_int8_rollouts_turn_on_truncated_importance_sampling():
    assert Config.from_flat(rollout_quant="int8").algo.tis_cap == 2.0
    assert Config.from_flat(rollout_quant="int8", tis_cap=3.0).algo.tis_cap == 3.0
    assert Config.from_flat(rollout_quant="int8", tis_cap=0).algo.tis_cap == 0.0
    assert Config.from_flat().algo.tis_cap == 0.0


def test_bf16_autocast_turns_on_truncated_importance_sampling():
    """fp32 sampling and a bf16 update differ in their log-probs as low-precision sampling does: corrected."""
    assert Config.from_flat(autocast="bf16").algo.tis_cap == 2.0
    assert Config.from_flat(autocast="bf16", tis_cap=0).algo.tis_cap == 0.0


def test_the_demo_preset_is_a_valid_configuration():
    from grpolab.presets import DEMO

    cfg = Config.from_flat(**DEMO)
    assert (cfg.task.digits, cfg.task.terms) == (1, 3) and cfg.rollout.rollout_quant == "fp16"
    assert cfg.train.max_minutes > 0 and cfg.train.lr_schedule == "cosine"  # decays over the time budget
    assert cfg.eval.eval_every_minutes > 0  # the demo shows held-out accuracy while it trains


def test_the_demo_takes_the_bf16_settings_only_on_a_cpu_with_amx(monkeypatch):
    """E23: on AMX CPUs bf16 sampling + bf16 update + 4 steps per rollout call gained more; elsewhere bf16 is slower."""
    from grpolab import runtime
    from grpolab.presets import DEMO, DEMO_AMX, demo_settings

    monkeypatch.setattr(runtime, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})
    settings, why = demo_settings("cpu")
    assert settings == {**DEMO, **DEMO_AMX} and "AMX" in why
    cfg = Config.from_flat(**settings)
    assert (cfg.rollout.rollout_quant, cfg.train.autocast, cfg.train.steps_per_generation) == ("bf16", "bf16", 4)
    assert cfg.algo.tis_cap == 2.0  # the bf16 sampler's mismatch is corrected
    for flags in ({"avx2", "fma"}, {"avx512f", "avx512_bf16"}):  # the AMD machine; a Xeon without AMX
        monkeypatch.setattr(runtime, "cpu_flags", lambda flags=flags: flags)
        assert demo_settings("cpu") == (DEMO, "")
