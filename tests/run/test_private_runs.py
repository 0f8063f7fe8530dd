"""Tests of DP-SGD training runs: jaxbp.run.privacy_plan and the private epoch in the loop."""

import json
import os

import jax
import pytest

from jaxbp import privacy
from jaxbp.run import config as config_lib
from jaxbp.run import loop, privacy_plan
from jaxbp.run import workdir as workdir_lib
from jaxbp.run.config import ConfigError

DP = dict(dp_noise_multiplier=1.5, clip_per_example=1.0)


def _train(workdir, epochs, **overrides):
    fields = dict(epochs=epochs, schedule="constant", checkpoint_interval=1, checkpoint_seconds=0.0)
    config = config_lib.make_config("iris", **{**fields, **overrides})
    return loop.train_and_evaluate(config, str(workdir), log=lambda _: None)


def _records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("num, delta", [(1437, 1e-4), (1000, 1e-4), (999, 1e-3), (105, 1e-3)])
def test_the_default_delta_is_a_power_of_ten_below_one_over_n(num, delta):
    assert privacy_plan.default_delta(num) == pytest.approx(delta, rel=1e-12)
    assert privacy_plan.default_delta(num) < 1 / num


def test_the_plan_samples_at_batch_size_over_n_and_calibrates_to_the_target():
    config = config_lib.make_config("iris", epochs=5, dp_target_epsilon=4.0, clip_per_example=1)
    plan = privacy_plan.plan_privacy(config, 105)
    assert plan.sampler.sampling_rate == 8 / 105 and plan.sampler.steps_per_epoch == 13
    assert plan.delta == pytest.approx(1e-3)
    steps = 5 * plan.sampler.steps_per_epoch
    spent = privacy.epsilon(plan.noise_multiplier, plan.sampler.sampling_rate, steps, plan.delta)
    assert 3.99 < spent <= 4.0
    assert privacy_plan.plan_privacy(config_lib.make_config("iris"), 105) is None


@pytest.mark.parametrize(
    "overrides, field, message",
    [
        (dict(dp_delta=0.01, **DP), "dp_delta", "must be below 1/N = 0.00952"),
        (dict(dp_target_epsilon=1e5, clip_per_example=1.0), "dp_target_epsilon", "already met"),
    ],
)
def test_settings_that_need_the_data_size_are_refused_before_any_write(
    tmp_path, overrides, field, message
):
    with pytest.raises(ConfigError, match=message) as info:
        _train(tmp_path / "w", 2, **overrides)
    assert info.value.field == field
    assert not os.path.exists(tmp_path / "w")


def test_a_private_run_resumes_bit_identical_and_accounts_every_epoch(tmp_path):
    straight = _train(tmp_path / "straight", 4, **DP)
    _train(tmp_path / "resumed", 2, **DP)
    resumed = _train(tmp_path / "resumed", 4, **DP)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "steps_per_second"} for r in rs]  # noqa: E731
    records = _records(tmp_path / "straight")
    assert strip(_records(tmp_path / "resumed")) == strip(records)
    assert resumed["test_loss"] == straight["test_loss"]
    q, steps_per_epoch = 8 / 105, 105 // 8  # iris: 105 training rows, batches of 8
    for r in records:  # nothing computed on training rows outside the private step
        assert not any(k.startswith("train_") for k in r) and "epoch_loss" not in r
        assert "val_grad_norm" in r
        expected = privacy.epsilon(1.5, q, r["epoch"] * steps_per_epoch, 1e-3)
        assert r["privacy/epsilon"] == pytest.approx(expected, rel=1e-12)
    assert straight["privacy"] == {
        "noise_multiplier": 1.5,
        "sampling_rate": q,
        "steps": 4 * steps_per_epoch,
        "delta": 1e-3,
        "accountant": "rdp",
        "epsilon": records[-1]["privacy/epsilon"],
    }
    assert "train_loss" not in straight


def test_a_swept_noise_multiplier_gives_each_member_its_own_noise_and_account(tmp_path):
    fields = dict(clip_per_example=1.0, dp_accountant="pld", learning_rate=0.03)
    swept = _train(tmp_path / "set", 2, sweep=(("dp_noise_multiplier", (0.8, 3.0)),), **fields)
    single = _train(tmp_path / "one", 2, dp_noise_multiplier=3.0, **fields)
    members = swept["members"]
    assert [m["privacy"]["noise_multiplier"] for m in members] == [0.8, 3.0]
    for m in members:
        account = privacy.account(m["dp_noise_multiplier"], 8 / 105, 2 * 13, 1e-3, "pld")
        assert m["privacy"] == account._replace(epsilon=pytest.approx(account.epsilon))._asdict()
    assert members[0]["privacy"]["epsilon"] > members[1]["privacy"]["epsilon"]
    assert swept["privacy"] == members[0]["privacy"]  # the weakest guarantee
    # Member 1 is the single run of its σ (to float rounding: a batched matmul).
    assert members[1]["test_loss"] == pytest.approx(single["test_loss"], rel=1e-5)
    assert jax.numpy.isfinite(swept["test_loss_mean"])


def test_a_calibrated_run_refuses_other_epochs_on_resume(tmp_path):
    target = dict(dp_target_epsilon=4.0, clip_per_example=1.0)
    _train(tmp_path / "w", 1, **target)
    with pytest.raises(workdir_lib.ResumeConflictError, match="calibrated the noise multiplier"):
        _train(tmp_path / "w", 2, **target)
