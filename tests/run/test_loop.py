"""Tests of jaxbp.run.loop: outputs, task-aware heads, resume, checkpoints, faults."""

import json
import os
import shutil
import time

import jax
import numpy as np
import pytest

from jaxbp import data as data_lib
from jaxbp import training
from jaxbp.run import checkpoints, evaluation, inference, loop, recipe, restore
from jaxbp.run import config as config_lib
from jaxbp.run import workdir as workdir_lib
from jaxbp.run.config import ConfigError


def _train(workdir, dataset="iris", log=None, allow_changes=(), **overrides):
    fields = dict(epochs=3, checkpoint_interval=1, checkpoint_seconds=0.0)
    fields.update(overrides)
    config = config_lib.make_config(dataset, **fields)
    lines = [] if log is None else log
    return loop.train_and_evaluate(
        config, str(workdir), allow_changes=allow_changes, log=lines.append
    )


def _records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _latest_params(workdir):
    """The params of the newest train-state checkpoint, stacked ``(1, ...)``."""
    checkpointer = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints"))
    params = checkpointer.restore_params(checkpointer.latest_epoch())
    checkpointer.close()
    return params


def _assert_same_leaves(a, b):
    for leaf_a, leaf_b in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(leaf_a), np.asarray(leaf_b))


def test_a_run_leaves_every_output_and_names_its_model_first(tmp_path):
    lines = []
    started = time.perf_counter()
    summary = _train(tmp_path / "w", log=lines)
    wall = time.perf_counter() - started
    workdir = tmp_path / "w"
    for name in ("metrics.jsonl", "curves.png", "summary.json", "run.json"):
        assert os.path.getsize(workdir / name) > 0, name
    assert os.listdir(workdir / "tensorboard")
    assert sorted(os.listdir(workdir / "checkpoints")) == ["1", "2", "3"]
    assert len(os.listdir(workdir / "best")) == 1
    assert lines[0].startswith("iris: classification, sizes 4-16-3, tanh hidden, softmax output")
    assert "loss softmax_cross_entropy" in lines[0] and "adam" in lines[0]
    records = _records(workdir)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    expected = {"train_loss", "train_accuracy", "train_grad_norm", "val_loss", "val_accuracy"}
    assert expected | {"learning_rate"} <= set(records[0])
    flow = {k: v for k, v in records[0].items() if k.startswith("train_flow/")}
    assert set(flow) == {
        "train_flow/delta_norm/1",
        "train_flow/delta_norm/2",
        "train_flow/grad_norm/1",
        "train_flow/grad_norm/2",
        "train_flow/noise_scale",
        "train_flow/snr/1",
        "train_flow/snr/2",
    }
    assert all(np.isfinite(v) and v > 0 for v in flow.values())
    lrs = [r["learning_rate"] for r in records]
    assert lrs[0] > lrs[1] > lrs[2] >= 0  # cosine decays
    schedule = recipe.build_schedule(config_lib.make_config("iris", epochs=3), records[0]["step"])
    for record in records:  # the rate of the epoch's last step, as the optimizer state has it
        assert record["learning_rate"] == pytest.approx(float(schedule(record["step"] - 1)))
    with open(workdir / "summary.json") as f:
        stored = json.load(f)
    assert stored == json.loads(json.dumps(summary))
    for key in ("test_accuracy", "test_loss", "val_loss", "last_epoch_test_loss", "best_epoch"):
        assert key in stored, key
    assert stored["status"] == "completed" and stored["epochs"] == 3
    assert stored["seconds"] > 0 and stored["compile_seconds"] > 0
    phases = stored["phase_seconds"]
    assert tuple(phases) == loop.PHASES and all(v > 0 for v in phases.values())
    assert phases["training"] == stored["seconds"]
    assert phases["compile"] == stored["compile_seconds"]
    assert sum(phases.values()) <= wall  # each phase is timed once, none overlaps another
    assert stored["versions"]["jax"] == jax.__version__ and stored["cpu_count"] >= 1
    assert stored["config"]["dataset"] == "iris" and stored["platform"] == jax.default_backend()
    best = min(records, key=lambda r: r["val_loss"])
    assert stored["best_epoch"] == best["epoch"]
    assert stored["val_loss"] == pytest.approx(best["val_loss"], rel=1e-6)


def _moons_npz(tmp_path):
    ds = data_lib.load_dataset("moons", num_samples=1000)
    x = np.concatenate([ds.x_train, ds.x_val, ds.x_test])
    y = np.concatenate([ds.y_train, ds.y_val, ds.y_test])[:, 0].astype(np.int64)
    path = tmp_path / "binary.npz"
    np.savez(path, x=x, y=y)
    return path


def test_a_binary_npz_trains_a_useful_model_with_defaults(tmp_path):
    path = _moons_npz(tmp_path)
    lines = []
    config = config_lib.make_config("npz", data_path=str(path))
    summary = loop.train_and_evaluate(config, str(tmp_path / "w"), log=lines.append)
    assert summary["sizes"][-1] == 1 and summary["loss"] == "bce"
    assert summary["output_activation"] == "sigmoid"
    assert "sigmoid output, loss bce" in lines[0]
    assert summary["test_accuracy"] >= 0.9


def test_a_regression_csv_trains_a_useful_model_with_defaults(tmp_path):
    ds = data_lib.load_dataset("diabetes")
    x = np.concatenate([ds.x_train, ds.x_val, ds.x_test]) * ds.x_scale + ds.x_mean
    y = np.concatenate([ds.y_train, ds.y_val, ds.y_test])[:, 0] * ds.y_scale[0] + ds.y_mean[0]
    path = tmp_path / "houses.csv"
    header = [f"f{i}" for i in range(x.shape[1])] + ["price"]
    rows = [",".join(header)] + [
        ",".join(f"{v:.6g}" for v in (*r, t)) for r, t in zip(x, y, strict=False)
    ]
    path.write_text("\n".join(rows) + "\n")
    summary = _train(tmp_path / "w", "csv", data_path=str(path), target_column="price", epochs=60)
    assert summary["task"] == "regression" and summary["loss"] == "mse"
    assert summary["output_activation"] == "identity"
    assert summary["test_r2"] >= 0.3


def test_resumed_run_ends_exactly_like_a_straight_run(tmp_path):
    straight = _train(tmp_path / "straight", epochs=4, schedule="constant")
    _train(tmp_path / "resumed", epochs=2, schedule="constant")
    lines = []
    resumed = _train(tmp_path / "resumed", log=lines, epochs=4, schedule="constant")
    assert "resuming from the checkpoint of epoch 2" in lines[0]

    def strip(records):
        return [{k: v for k, v in r.items() if k != "steps_per_second"} for r in records]

    assert strip(_records(tmp_path / "resumed")) == strip(_records(tmp_path / "straight"))
    assert resumed["test_loss"] == straight["test_loss"]
    _assert_same_leaves(_latest_params(tmp_path / "resumed"), _latest_params(tmp_path / "straight"))
    with open(tmp_path / "resumed" / "run.json") as f:
        starts = json.load(f)["starts"]
    assert [s["from_epoch"] for s in starts] == [0, 2]
    assert starts[1]["changes"] == {"epochs": [2, 4]}


def test_raising_epochs_on_a_cosine_run_says_what_changes(tmp_path):
    _train(tmp_path / "w", epochs=2)
    lines = []
    _train(tmp_path / "w", log=lines, epochs=4)
    assert any("cosine schedule now spans 4 epochs" in line for line in lines)


def test_resume_refuses_other_settings_and_fewer_epochs(tmp_path):
    _train(tmp_path / "w", epochs=3)
    with pytest.raises(workdir_lib.ResumeConflictError, match="seed 0 -> 1"):
        _train(tmp_path / "w", seed=1)
    with pytest.raises(workdir_lib.ResumeConflictError, match="allow_changes=learning_rate"):
        _train(tmp_path / "w", learning_rate=0.1)
    with pytest.raises(ConfigError, match="below the 3 epochs") as info:
        _train(tmp_path / "w", epochs=2)
    assert info.value.field == "epochs"
    lines = []
    _train(tmp_path / "w", log=lines, epochs=4, learning_rate=0.1, allow_changes=("learning_rate",))
    assert any("learning_rate 0.01 -> 0.1" in line for line in lines)
    with open(tmp_path / "w" / "summary.json") as f:
        assert json.load(f)["config"]["learning_rate"] == 0.1


def test_a_live_run_holds_the_workdir(tmp_path):
    (tmp_path / "w").mkdir()
    with (
        workdir_lib.locked(str(tmp_path / "w")),
        pytest.raises(workdir_lib.WorkdirError, match="in use by a live run"),
    ):
        _train(tmp_path / "w")


@pytest.mark.parametrize(
    "extra, learning_rate, cause",
    [
        ({}, 1e12, r"the loss became inf at step \d+"),
        # One step an epoch (a batch of all 310 training rows): at lr 1e25 the step of epoch
        # 3 starts from finite params with a finite loss and ends at params near 1e25,
        # finite, whose loss overflows float32. Epoch 3 is not good either.
        ({"batch_size": 310}, 1e25, r"the loss at its params after the epoch is inf"),
    ],
)
def test_a_non_finite_loss_stops_and_keeps_only_good_checkpoints(
    tmp_path, extra, learning_rate, cause
):
    common = dict(dataset="diabetes", optimizer="sgd", schedule="constant", **extra)
    _train(tmp_path / "w", epochs=2, learning_rate=1e-3, **common)
    with pytest.raises(
        loop.NonFiniteError,
        match=rf"the run diverged by epoch 3 \({cause}\); in .*, checkpoints/ holds the state "
        r"of epoch 2; best/ the best-validation params as of epoch 2",
    ):
        _train(
            tmp_path / "w",
            epochs=4,
            learning_rate=learning_rate,
            allow_changes=("learning_rate",),
            **common,
        )
    assert sorted(os.listdir(tmp_path / "w" / "checkpoints")) == ["1", "2"]
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(_latest_params(tmp_path / "w")))
    if not extra:
        with pytest.raises(loop.NonFiniteError, match="no checkpoint was written"):
            _train(tmp_path / "fresh", epochs=2, learning_rate=learning_rate, **common)


def _damage_newest(workdir, how):
    newest = os.path.join(workdir, "checkpoints", "3")
    if how == "emptied":
        shutil.rmtree(newest)
        os.makedirs(newest)
        return
    for root, _, files in os.walk(newest):
        for name in files:
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"\x00garbage")


@pytest.mark.parametrize("how", ["garbled", "emptied"])
def test_a_damaged_newest_checkpoint_is_named_and_the_one_before_used(tmp_path, how):
    _train(tmp_path / "straight", epochs=4, schedule="constant")
    _train(tmp_path / "w", epochs=3, schedule="constant")
    _damage_newest(tmp_path / "w", how)
    lines = []
    summary = _train(tmp_path / "w", log=lines, epochs=4, schedule="constant")
    damaged = [line for line in lines if "is damaged" in line]
    if how == "garbled" or damaged:
        assert len(damaged) == 1 and "checkpoint of epoch 3 is damaged" in damaged[0]
    assert any("resuming from the checkpoint of epoch 2" in line for line in lines)
    with open(tmp_path / "straight" / "summary.json") as f:
        assert summary["test_loss"] == json.load(f)["test_loss"]


def test_a_truncated_last_metrics_line_is_repaired(tmp_path):
    _train(tmp_path / "w", epochs=2)
    path = tmp_path / "w" / "metrics.jsonl"
    with open(path, "a") as f:
        f.write('{"epoch": 3, "val_lo')
    _train(tmp_path / "w", epochs=3)
    assert [r["epoch"] for r in _records(tmp_path / "w")] == [1, 2, 3]


def test_planted_symlinks_are_never_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.write_text("keep me")
    work = tmp_path / "w"
    work.mkdir()
    for name in ("summary.json.tmp", "metrics.jsonl.tmp", ".summary.json.tmp"):
        os.symlink(outside, work / name)
    _train(work, epochs=1)
    assert outside.read_text() == "keep me"
    os.symlink(outside, work / "curves.png.link")
    os.replace(work / "curves.png.link", work / "curves.png")
    with pytest.raises(workdir_lib.WorkdirError, match="curves.png is a symlink"):
        _train(work, epochs=2)
    assert outside.read_text() == "keep me"


def test_early_stopping_reports_the_best_validation_params(tmp_path):
    summary = _train(tmp_path / "w", epochs=60, early_stopping_patience=2, learning_rate=0.05)
    assert summary["status"] == "early_stopped"
    assert summary["epochs"] - summary["best_epoch"] == 2
    records = _records(tmp_path / "w")
    assert records[-1]["epoch"] == summary["epochs"] < 60
    best = min(records, key=lambda r: r["val_loss"])
    assert summary["best_epoch"] == best["epoch"]
    assert summary["val_loss"] == pytest.approx(best["val_loss"], rel=1e-6)
    assert summary["test_loss"] != summary["last_epoch_test_loss"]


@pytest.mark.parametrize(
    "overrides, field, message",
    [
        (dict(sizes=(5, 16, 3)), "sizes", "must start with 4 and end with 3"),
        (dict(batch_size=4096), "batch_size", "does not fit the 105 training examples"),
        (dict(output_activation="sigmoid", loss="bce", dataset="diabetes"), "loss", "regression"),
        (dict(learning_rate=float("inf")), "learning_rate", "finite number > 0"),
    ],
)
def test_bad_settings_stop_before_any_write(tmp_path, overrides, field, message):
    dataset = overrides.pop("dataset", "iris")
    with pytest.raises(ConfigError, match=message) as info:
        _train(tmp_path / "w", dataset, **overrides)
    assert info.value.field == field
    assert not os.path.exists(tmp_path / "w")


def test_softmax_over_a_binary_target_is_refused(tmp_path):
    path = _moons_npz(tmp_path)
    with pytest.raises(ConfigError, match="softmax over one output unit"):
        _train(tmp_path / "w", "npz", data_path=str(path), output_activation="softmax")


def test_custom_and_autodiff_give_the_same_curves_on_digits(tmp_path):
    runs = {}
    for backward in ("custom", "autodiff"):
        workdir = tmp_path / backward
        summary = _train(workdir, "digits", epochs=4, backward=backward, checkpoint_interval=4)
        runs[backward] = (summary, np.array([r["val_loss"] for r in _records(workdir)]))
    np.testing.assert_allclose(runs["custom"][1], runs["autodiff"][1], rtol=1e-5)
    custom, autodiff = runs["custom"][0]["test_loss"], runs["autodiff"][0]["test_loss"]
    assert abs(custom - autodiff) <= 1e-5 * autodiff


def test_per_example_clipping_trains_and_changes_the_run(tmp_path):
    plain = _train(tmp_path / "plain", epochs=2)
    clipped = _train(tmp_path / "clipped", epochs=2, clip_per_example=0.05)
    assert clipped["config"]["clip_per_example"] == 0.05
    assert np.isfinite(clipped["test_loss"]) and clipped["test_loss"] != plain["test_loss"]


def test_a_short_run_checkpoints_once_at_the_end_unless_told_otherwise(tmp_path):
    config = config_lib.make_config("iris", epochs=4, checkpoint_interval=1)
    assert config.checkpoint_seconds > 0  # the default: interval saves wait for it
    loop.train_and_evaluate(config, str(tmp_path / "default"), log=lambda _: None)
    _train(tmp_path / "every", epochs=4)  # checkpoint_seconds=0: every interval
    kept = {
        name: sorted(int(e) for e in os.listdir(tmp_path / name / "checkpoints") if e.isdigit())
        for name in ("default", "every")
    }
    assert kept == {"default": [4], "every": [2, 3, 4]}  # orbax keeps the newest 3


def test_a_workdir_written_before_checkpoint_seconds_resumes_and_evaluates(tmp_path):
    workdir = tmp_path / "w"
    _train(workdir, epochs=2)
    with open(workdir / "run.json") as f:
        record = json.load(f)
    del record["config"]["checkpoint_seconds"]  # as the previous layout wrote run.json
    (workdir / "run.json").write_text(json.dumps(record))
    lines = []
    summary = _train(workdir, log=lines, epochs=3, checkpoint_seconds=10.0)
    assert "resuming from the checkpoint of epoch 2" in lines[0]
    assert summary["epochs"] == 3 and summary["status"] == "completed"
    evaluated = evaluation.evaluate_workdir(str(workdir))
    assert evaluated["test_loss"] == pytest.approx(summary["test_loss"], rel=1e-6)


def _as_layout_1(workdir, config):
    """Rewrites a single run's checkpoints as layout 1 wrote them: the params and key without
    the member axis, an optimizer state without the rate, a meta without ``layout``,
    ``diverged`` or the network's ``members``, and the best record of one epoch."""
    for folder in ("checkpoints", "best"):
        path = os.path.join(workdir, folder)
        current = checkpoints.Checkpointer(path)
        stored = [(e, current.restore_params(e), current.read_meta(e)) for e in current.epochs()]
        current.close()
        shutil.rmtree(path)
        earlier = checkpoints.Checkpointer(path)
        for epoch, params, meta in stored:
            params = jax.tree.map(lambda leaf: np.asarray(leaf)[0], params)
            meta = {k: v for k, v in meta.items() if k not in ("layout", "diverged")}
            meta["network"] = {k: v for k, v in meta["network"].items() if k != "members"}
            if folder == "best":
                (best,) = meta["best"]["members"]
                meta["best"] = {"epoch": best["epoch"], "val_loss": best["val_loss"]}
                earlier.save(epoch, {"params": params}, meta)
                continue
            optimizer = training.make_optimizer(config.optimizer, recipe.build_schedule(config, 4))
            key = jax.random.PRNGKey(config.seed)
            state = recipe.TrainState(params, optimizer.init(params), np.int32(epoch), key)
            earlier.save(epoch, state, meta)
        earlier.close()


def test_a_workdir_of_the_earlier_checkpoint_layout_evaluates_and_refuses_to_resume(tmp_path):
    workdir = tmp_path / "w"
    summary = _train(workdir, epochs=2)
    _as_layout_1(workdir, config_lib.make_config("iris", epochs=2))
    trained = inference.load_trained(str(workdir))
    assert trained.params[0]["W"].shape == (1, 16, 4)
    assert trained.best_epoch == summary["best_epoch"] and len(trained.members) == 1
    evaluated = evaluation.evaluate_workdir(str(workdir))
    assert evaluated["test_loss"] == pytest.approx(summary["test_loss"], rel=1e-6)
    records = (workdir / "run.json").read_text(), (workdir / "metrics.jsonl").read_text()
    with pytest.raises(
        restore.EarlierLayoutError,
        match="earlier checkpoint layout and cannot be resumed .*; train again in a new workdir",
    ):
        _train(workdir, epochs=3)
    assert ((workdir / "run.json").read_text(), (workdir / "metrics.jsonl").read_text()) == records
