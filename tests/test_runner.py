"""Tests of jaxbp.runner: outputs, resume, faults and bad flags of a training run."""

import json
import os

import jax
import numpy as np
import pytest

from jaxbp import checkpoint, runner


def _config(tmp_path, name="run", **overrides):
    fields = dict(epochs=3, workdir=str(tmp_path / name), checkpoint_interval=1)
    fields.update(overrides)
    return runner.make_config(fields.pop("dataset", "iris"), **fields)


def _records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _final_params(config, epoch):
    """The params stored in the checkpoint of ``epoch`` of a finished run."""
    return runner.restore_state(config, epoch)["params"]


def test_a_run_leaves_every_output(tmp_path):
    config = _config(tmp_path)
    lines = []
    summary = runner.run(config, log=lines.append)
    workdir = config.workdir
    for name in ("metrics.jsonl", "curves.png", "summary.json"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0, name
    assert os.listdir(os.path.join(workdir, "tensorboard"))
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["1", "2", "3"]
    records = _records(workdir)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy"} <= set(records[0])
    with open(os.path.join(workdir, "summary.json")) as f:
        stored = json.load(f)
    for key in (
        "test_accuracy",
        "test_loss",
        "train_loss",
        "epochs",
        "steps",
        "seconds",
        "backward",
        "num_devices",
        "flags",
    ):
        assert key in stored, key
    assert stored == json.loads(json.dumps(summary))
    assert stored["epochs"] == 3 and stored["num_devices"] == 1
    assert len(lines) == 3 and "steps/s" in lines[0] and "ETA" in lines[0]


def test_resumed_run_ends_exactly_like_a_straight_run(tmp_path):
    common = dict(schedule="constant", checkpoint_interval=1)
    straight = _config(tmp_path, "straight", epochs=4, **common)
    runner.run(straight, log=lambda _: None)
    short = _config(tmp_path, "resumed", epochs=2, **common)
    runner.run(short, log=lambda _: None)
    resumed = _config(tmp_path, "resumed", epochs=4, **common)
    lines = []
    summary = runner.run(resumed, log=lines.append)
    assert "resuming from the checkpoint of epoch 2" in lines[0]

    def strip(records):
        return [{k: v for k, v in r.items() if k != "steps_per_second"} for r in records]

    assert strip(_records(resumed.workdir)) == strip(_records(straight.workdir))
    with open(os.path.join(straight.workdir, "summary.json")) as f:
        reference = json.load(f)
    assert summary["test_loss"] == reference["test_loss"]
    assert summary["train_loss"] == reference["train_loss"]
    a, b = _final_params(resumed, 4), _final_params(straight, 4)
    for leaf_a, leaf_b in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(leaf_a, leaf_b)


def test_an_interrupted_checkpoint_write_is_ignored(tmp_path):
    config = _config(tmp_path, epochs=2)
    runner.run(config, log=lambda _: None)
    # What a kill during orbax's save leaves: a temporary folder that was never renamed.
    partial = os.path.join(config.workdir, "checkpoints", "3.orbax-checkpoint-tmp-1234")
    os.makedirs(os.path.join(partial, "state"))
    with open(os.path.join(partial, "state", "junk"), "w") as f:
        f.write("half a checkpoint")
    lines = []
    runner.run(_config(tmp_path, epochs=3), log=lines.append)
    assert "resuming from the checkpoint of epoch 2" in lines[0]
    assert [r["epoch"] for r in _records(config.workdir)] == [1, 2, 3]


def test_a_checkpoint_of_another_network_is_refused(tmp_path):
    runner.run(_config(tmp_path, epochs=1, hidden_sizes=(16,)), log=lambda _: None)
    with pytest.raises(checkpoint.CheckpointMismatchError, match="different network"):
        runner.run(_config(tmp_path, epochs=2, hidden_sizes=(8,)), log=lambda _: None)


def test_a_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    good = _config(
        tmp_path,
        epochs=2,
        dataset="diabetes",
        optimizer="sgd",
        learning_rate=1e-3,
        schedule="constant",
    )
    runner.run(good, log=lambda _: None)
    exploding = _config(
        tmp_path,
        epochs=4,
        dataset="diabetes",
        optimizer="sgd",
        learning_rate=1e12,
        schedule="constant",
    )
    with pytest.raises(runner.NonFiniteLossError, match=r"at step \d+ \(epoch 3\)"):
        runner.run(exploding, log=lambda _: None)
    assert sorted(os.listdir(os.path.join(good.workdir, "checkpoints"))) == ["1", "2"]
    params = _final_params(good, 2)
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(params))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(dataset="imagenet"), "unknown dataset 'imagenet'"),
        (dict(learning_rate=-0.1), "--learning_rate must be positive"),
        (dict(batch_size=4096), r"batch_size must be in \[1, num_examples=105\], got 4096"),
        (dict(sizes=(5, 16, 3)), "--sizes=5,16,3 does not match iris"),
        (dict(loss="bce"), "needs output_activation='sigmoid'"),
        (dict(optimizer="lbfgs"), "--optimizer='lbfgs' is not one of"),
        (dict(activation="swish"), "unknown activation 'swish'"),
        (dict(clip_per_example=-1.0), "--clip_per_example must be positive"),
        (dict(clip_per_example=1.0, backward="autodiff"), "use --backward=custom"),
    ],
)
def test_bad_settings_stop_before_any_work(tmp_path, overrides, message):
    dataset = overrides.pop("dataset", "iris")
    if dataset not in runner.DATASET_DEFAULTS:
        with pytest.raises(ValueError, match=message):
            runner.make_config(dataset)
        return
    config = _config(tmp_path, dataset=dataset, **overrides)
    with pytest.raises(ValueError, match=message):
        runner.run(config, log=lambda _: None)
    assert not os.path.exists(config.workdir)


def test_custom_and_autodiff_give_the_same_curves_on_digits(tmp_path):
    summaries = {}
    for backward in ("custom", "autodiff"):
        config = _config(
            tmp_path, backward, dataset="digits", epochs=5, backward=backward, checkpoint_interval=5
        )
        summaries[backward] = runner.run(config, log=lambda _: None)
        summaries[backward + "_records"] = _records(config.workdir)
    custom, autodiff = summaries["custom_records"], summaries["autodiff_records"]
    losses_c = np.array([r["val_loss"] for r in custom])
    losses_a = np.array([r["val_loss"] for r in autodiff])
    np.testing.assert_allclose(losses_c, losses_a, rtol=1e-5)
    rel = abs(summaries["custom"]["test_loss"] - summaries["autodiff"]["test_loss"])
    assert rel / summaries["autodiff"]["test_loss"] <= 1e-5


def test_per_example_clipping_trains_and_changes_the_run(tmp_path):
    plain = runner.run(_config(tmp_path, "plain", epochs=2), log=lambda _: None)
    clipped = runner.run(
        _config(tmp_path, "clipped", epochs=2, clip_per_example=0.05), log=lambda _: None
    )
    assert clipped["flags"]["clip_per_example"] == 0.05
    assert np.isfinite(clipped["test_loss"]) and clipped["test_loss"] != plain["test_loss"]
