"""Tests of member sets (repeats and sweeps) in the config, the trainer, evaluation and
inference."""

import json
import os

import jax
import numpy as np
import pytest

from jaxbp.run import (
    checkpoints,
    config_checks,
    evaluation,
    inference,
    loop,
    prediction_file,
    recipe,
)
from jaxbp.run import config as config_lib
from jaxbp.run import workdir as workdir_lib
from jaxbp.run.config import ConfigError
from jaxbp.run.restore import restore_trained

LR = (1e-2, 3e-2)


def _train(workdir, dataset="iris", log=None, **overrides):
    fields = dict(epochs=3, checkpoint_interval=1, checkpoint_seconds=0.0)
    fields.update(overrides)
    config = config_lib.make_config(dataset, **fields)
    lines = [] if log is None else log
    return loop.train_and_evaluate(config, str(workdir), log=lines.append)


def _records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [
            {k: v for k, v in json.loads(line).items() if k != "steps_per_second"} for line in f
        ]


def _latest_state(workdir):
    """The stacked train state of the newest checkpoint of a member set."""
    config = workdir_lib.config_from_record(workdir_lib.read_run_record(str(workdir)))
    model = restore_trained(str(workdir))[1]
    like = recipe.initial_member_state(config, model, recipe.member_optimizer(config, 1))
    checkpointer = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints"))
    state = checkpointer.restore(checkpointer.latest_epoch(), like)
    checkpointer.close()
    return state


# -- the grid and its refusals ---------------------------------------------------------------


def test_the_grid_crosses_sweeps_and_repeats_with_the_repeat_fastest():
    config = config_lib.make_config(
        "digits",
        seed=7,
        repeats=2,
        sweep=(("learning_rate", (1e-3, 1e-2)), ("weight_decay", (0.0, 1e-4, 1e-3))),
    )
    config_checks.validate(config)
    grid = config_lib.member_grid(config)
    assert len(grid) == 2 * 3 * 2
    assert [m.index for m in grid] == list(range(12))
    assert [m.seed for m in grid] == [7, 8] * 6
    assert grid[0].values == {"learning_rate": 1e-3, "weight_decay": 0.0}
    assert grid[3].values == {"learning_rate": 1e-3, "weight_decay": 1e-4}
    assert grid[11].values == {"learning_rate": 1e-2, "weight_decay": 1e-3}
    member = config_lib.member_config(config, grid[3])
    assert (member.seed, member.weight_decay, member.repeats, member.sweep) == (8, 1e-4, 1, ())
    single = config_lib.make_config("digits")
    assert config_lib.member_grid(single) == (config_lib.Member(0, 0, {}),)


def test_a_sweep_parses_from_flag_words_and_survives_the_run_record():
    sweep = config_lib.parse_sweep(["learning_rate=1e-3,3e-3", "momentum=0.5,0.9"])
    assert sweep == (("learning_rate", (1e-3, 3e-3)), ("momentum", (0.5, 0.9)))
    config = config_lib.make_config("digits", optimizer="momentum", sweep=sweep)
    config_checks.validate(config)
    record = json.loads(json.dumps({"config": __import__("dataclasses").asdict(config)}))
    assert workdir_lib.config_from_record(record) == config
    assert config_lib.format_value(sweep) == "learning_rate=0.001,0.003 momentum=0.5,0.9"


@pytest.mark.parametrize(
    "sweep, message",
    [
        (["hidden_sizes=16,32"], "hidden_sizes changes the network's shapes"),
        (["batch_size=8,16"], "run each batch_size as a separate run"),
        (["optimizer=adam,sgd"], "run each optimizer as a separate run"),
        (["activation=relu"], "run each activation as a separate run"),
        (["learning_rate"], "expected NAME=v1,v2,..."),
        (["learning_rate=fast"], "expected NAME=v1,v2,..."),
    ],
)
def test_a_sweep_that_changes_the_program_or_cannot_be_read_is_refused(sweep, message):
    with pytest.raises(ConfigError, match=message) as info:
        config_lib.parse_sweep(sweep)
    assert info.value.field == "sweep" and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(sweep=(("hidden_sizes", (16.0,)),)), "run each hidden_sizes as a separate run"),
        (dict(sweep=(("learning_rate", (1e-3, -1.0)),)), "learning_rate=-1: must be a finite"),
        (dict(sweep=(("momentum", (0.5,)),)), "momentum does nothing for optimizer=adam"),
        (dict(sweep=(("learning_rate", (1e-3, 1e-3)),)), "needs distinct values"),
        (
            dict(sweep=(("learning_rate", (1e-3,)), ("learning_rate", (1e-2,)))),
            "learning_rate is swept twice",
        ),
        (dict(sweep=(("clip_per_example", (1.0,)),), backward="autodiff"), "use backward=custom"),
        (dict(repeats=0), "repeats=0: must be an integer in [1, 4096]"),
        (dict(repeats=2, seed=config_lib.MAX_SEED), "seeds past"),
    ],
)
def test_bad_member_settings_are_refused_in_one_line(overrides, message):
    with pytest.raises(ConfigError) as info:
        config_checks.validate(config_lib.make_config("digits", **overrides))
    assert message in str(info.value) and "\n" not in str(info.value)


# -- the run -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def member_set(tmp_path_factory):
    """An iris set: 2 learning rates x 2 repeats, 3 epochs."""
    workdir = tmp_path_factory.mktemp("set") / "w"
    lines = []
    summary = _train(workdir, log=lines, repeats=2, sweep=(("learning_rate", LR),))
    return workdir, summary, lines


def test_a_member_set_summary_has_each_member_and_their_mean_and_std(member_set):
    workdir, summary, lines = member_set
    members = summary["members"]
    assert [(m["member"], m["seed"], m["learning_rate"]) for m in members] == [
        (0, 0, LR[0]),
        (1, 1, LR[0]),
        (2, 0, LR[1]),
        (3, 1, LR[1]),
    ]
    accuracy = np.asarray([m["test_accuracy"] for m in members])
    loss = np.asarray([m["test_loss"] for m in members])
    assert summary["test_accuracy"] == summary["test_accuracy_mean"]
    assert summary["test_accuracy_mean"] == pytest.approx(accuracy.mean(), rel=1e-12)
    assert summary["test_accuracy_std"] == pytest.approx(accuracy.std(), rel=1e-12)
    assert summary["test_loss"] == pytest.approx(loss.mean(), rel=1e-12)
    assert summary["test_loss_std"] == pytest.approx(loss.std(), rel=1e-12)
    assert len(set(loss)) == 4  # four different runs
    assert summary["num_members"] == 4 and summary["num_diverged"] == 0
    assert all(m["diverged_at_epoch"] is None and 1 <= m["best_epoch"] <= 3 for m in members)
    bests = {m["best_epoch"] for m in members}  # the one they share, else None
    assert summary["best_epoch"] == (bests.pop() if len(bests) == 1 else None)
    with open(workdir / "summary.json") as f:
        assert json.load(f) == json.loads(json.dumps(summary))
    assert "4 members" in lines[1]


def test_a_member_is_the_single_run_of_its_seed_and_values(member_set, tmp_path):
    _, summary, _ = member_set
    single = _train(tmp_path / "single", seed=1, learning_rate=LR[1])
    member = summary["members"][3]
    assert (member["seed"], member["learning_rate"]) == (1, LR[1])
    assert member["test_loss"] == pytest.approx(single["test_loss"], rel=1e-4)
    assert member["best_epoch"] == single["best_epoch"]


def test_a_member_set_writes_member_lines_one_tensorboard_writer_curves_and_a_table(member_set):
    workdir, summary, _ = member_set
    records = _records(workdir)
    assert [(r["epoch"], r["member"]) for r in records] == [
        (e, k) for e in (1, 2, 3) for k in range(4)
    ]
    # Each member's peak rate on the shared unit schedule, at the epoch's last step.
    steps = records[0]["step"]  # per epoch
    unit = recipe.build_schedule(config_lib.make_config("iris", epochs=3, learning_rate=1.0), steps)
    for r in records:
        peak = summary["members"][r["member"]]["learning_rate"]
        assert r["learning_rate"] == pytest.approx(peak * float(unit(r["step"] - 1)), rel=1e-6)
    assert records[0]["learning_rate"] != records[2]["learning_rate"]  # per member
    events = [name for name in os.listdir(workdir / "tensorboard") if name.startswith("events")]
    assert len(events) == 1  # one writer for the set, the members as tags
    assert (workdir / "curves.png").stat().st_size > 0
    table = (workdir / "sweep.md").read_text().splitlines()
    assert len(table) == 4 and table[2].startswith("| learning_rate=0.01 | 2 | 0 |")
    group = [m["test_loss"] for m in summary["members"][:2]]
    assert f"{np.mean(group):.4g} ± {np.std(group):.2g}" in table[2]


def test_a_member_set_resumes_bit_identical(tmp_path):
    fields = dict(repeats=2, sweep=(("weight_decay", (0.0, 1e-3)),), schedule="constant")
    straight = _train(tmp_path / "straight", epochs=4, **fields)
    _train(tmp_path / "resumed", epochs=2, **fields)
    lines = []
    resumed = _train(tmp_path / "resumed", log=lines, epochs=4, **fields)
    assert "resuming from the checkpoint of epoch 2" in lines[0]
    assert _records(tmp_path / "resumed") == _records(tmp_path / "straight")
    assert resumed["members"] == straight["members"]
    a, b = _latest_state(tmp_path / "resumed"), _latest_state(tmp_path / "straight")
    assert a.params[0]["W"].shape == (4, 16, 4)
    for leaf_a, leaf_b in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(leaf_a), np.asarray(leaf_b))


DIVERGING = dict(
    optimizer="sgd",
    activation="relu",
    schedule="constant",
    sweep=(("learning_rate", (0.05, 1e30)),),
)


def test_a_diverging_member_is_frozen_marked_and_poisons_nothing(tmp_path):
    lines = []
    summary = _train(tmp_path / "w", log=lines, epochs=2, **DIVERGING)
    good, bad = summary["members"]
    assert bad["diverged_at_epoch"] == 1 and bad["best_epoch"] is None
    assert good["diverged_at_epoch"] is None
    assert summary["num_diverged"] == 1
    assert any("member 1 (seed 0, learning_rate=1e+30) diverged in epoch 1" in x for x in lines)
    # The means leave it out; the other member is the single run of its rate.
    assert summary["test_loss"] == good["test_loss"] and summary["test_loss_std"] == 0.0
    single = _train(tmp_path / "single", epochs=2, **{**DIVERGING, "sweep": ()}, learning_rate=0.05)
    assert good["test_loss"] == pytest.approx(single["test_loss"], rel=1e-4)
    # Its params stay those before the divergence (the initial ones), finite in every file.
    state = _latest_state(tmp_path / "w")
    initial = recipe.initial_member_state(
        config_lib.make_config("iris", epochs=2, **DIVERGING),
        restore_trained(str(tmp_path / "w"))[1],
        recipe.member_optimizer(config_lib.make_config("iris", **DIVERGING), 1),
    )
    leaves = zip(jax.tree.leaves(state.params), jax.tree.leaves(initial.params), strict=True)
    for leaf, first in leaves:
        np.testing.assert_array_equal(np.asarray(leaf)[1], np.asarray(first)[1])
        assert np.isfinite(np.asarray(leaf)).all()
    records = _records(tmp_path / "w")
    assert [r["epoch_loss"] is None for r in records] == [False, True, False, True]
    assert (
        "| learning_rate=1e+30 | 1 | 1 | - | - | - |" in (tmp_path / "w" / "sweep.md").read_text()
    )


def test_a_diverged_member_stays_frozen_across_a_resume(tmp_path):
    _train(tmp_path / "straight", epochs=3, **DIVERGING)
    _train(tmp_path / "resumed", epochs=1, **DIVERGING)
    resumed = _train(tmp_path / "resumed", epochs=3, **DIVERGING)
    assert resumed["members"][1]["diverged_at_epoch"] == 1
    assert _records(tmp_path / "resumed") == _records(tmp_path / "straight")


def test_a_set_whose_every_member_diverges_stops(tmp_path):
    with pytest.raises(
        loop.NonFiniteError,
        match=r"every member diverged by epoch 1 \(member 0: the loss became .* at step \d; "
        r"member 1: .*\); in .*, no checkpoint was written .*; best/ holds nothing",
    ):
        _train(tmp_path / "w", **{**DIVERGING, "sweep": (("learning_rate", (1e30, 1e31)),)})
    assert not os.listdir(tmp_path / "w" / "checkpoints")


@pytest.mark.parametrize("sweep", [(30.0, 40.0), ()])
def test_when_every_member_diverges_the_state_they_kept_is_on_disk(tmp_path, sweep):
    """Both members (or the single run, lr 30) of sgd at these rates diverge in epoch 2; with
    checkpoint_seconds large no interval checkpoint was due, so the run saves the state they
    kept, epoch 1's, says so, and a lower rate resumes from it."""
    fields = dict(DIVERGING, sweep=(("learning_rate", sweep),) if sweep else ())
    fields.update(learning_rate=30.0, checkpoint_seconds=1e6, epochs=4)
    with pytest.raises(
        loop.NonFiniteError,
        match=r"diverged by epoch 2 \(.*\); in .*, checkpoints/ holds the state of epoch 1; "
        r"best/ the best-validation params as of epoch 1\.",
    ):
        _train(tmp_path / "w", **fields)
    state = _latest_state(tmp_path / "w")
    assert int(state.epoch) == 1
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(state.params))
    trained = inference.load_trained(str(tmp_path / "w"))
    assert trained.best_epoch == 1 and all(m["diverged_at_epoch"] is None for m in trained.members)
    if sweep:  # a member set's rates are its sweep, a fixed setting
        return
    lines = []
    summary = loop.train_and_evaluate(
        config_lib.make_config("iris", checkpoint_interval=1, **dict(fields, learning_rate=0.05)),
        str(tmp_path / "w"),
        allow_changes=("learning_rate",),
        log=lines.append,
    )
    assert "resuming from the checkpoint of epoch 1" in lines[0]
    assert summary["status"] == "completed" and summary["members"][0]["diverged_at_epoch"] is None


# -- eval and predict ----------------------------------------------------------------------


def test_evaluate_workdir_of_a_set_gives_members_mean_and_ensemble(member_set):
    workdir, summary, _ = member_set
    result = evaluation.evaluate_workdir(str(workdir))
    assert result["test_loss"] == pytest.approx(summary["test_loss"], rel=1e-6)
    assert result["test_accuracy_std"] == pytest.approx(summary["test_accuracy_std"], rel=1e-6)
    for ours, stored in zip(result["members"], summary["members"], strict=True):
        assert ours["test_loss"] == pytest.approx(stored["test_loss"], rel=1e-6)
        assert ours["best_epoch"] == stored["best_epoch"] and ours["seed"] == stored["seed"]
    # The ensemble: the members' probabilities averaged, then its argmax.
    trained = inference.load_trained(str(workdir))
    ds = recipe.load_data(trained.config)
    x_raw = ds.x_test.astype(np.float64) * ds.x_scale + ds.x_mean
    labels, probabilities = inference.predict_rows(trained, x_raw)
    each = inference.member_predictions(trained, x_raw)
    np.testing.assert_allclose(
        probabilities, np.mean([p for _, p in each], axis=0), rtol=1e-6, atol=1e-7
    )
    truth = np.asarray(trained.preprocessing["class_names"])[np.argmax(ds.y_test, axis=1)]
    assert result["ensemble"]["test_accuracy"] == pytest.approx(np.mean(labels == truth))
    assert result["ensemble"]["num_members"] == 4
    for (member_labels, _), stored in zip(each, summary["members"], strict=True):
        assert np.mean(member_labels == truth) == pytest.approx(stored["test_accuracy"], abs=1e-6)
    assert np.asarray(result["confusion_matrix"]).sum() == len(ds.y_test)


def test_the_ensemble_leaves_a_diverged_member_out(tmp_path):
    _train(tmp_path / "w", epochs=2, **DIVERGING)
    trained = inference.load_trained(str(tmp_path / "w"))
    assert [m["diverged_at_epoch"] for m in trained.members] == [None, 1]
    result = evaluation.evaluate_workdir(str(tmp_path / "w"))
    assert result["ensemble"]["num_members"] == 1
    assert result["ensemble"]["test_accuracy"] == pytest.approx(
        result["members"][0]["test_accuracy"]
    )


def test_write_predictions_adds_a_column_per_member(tmp_path):
    path = tmp_path / "p.csv"
    prediction_file.write_predictions(
        str(path), np.asarray(["a", "b"]), member_predictions=[np.asarray(["a", "a"])] * 2
    )
    assert path.read_text().splitlines() == ["prediction,member_0,member_1", "a,a,a", "b,a,a"]
    with pytest.raises(ValueError, match="member 0's predictions have shape"):
        prediction_file.write_predictions(
            str(path), np.asarray(["a", "b"]), member_predictions=[np.asarray(["a"])]
        )


@pytest.mark.parametrize(
    "swept, fixed",
    [
        ("weight_decay", dict(optimizer="adam")),
        ("momentum", dict(optimizer="nesterov", learning_rate=0.05)),
        ("clip_per_example", dict(optimizer="sgd", learning_rate=0.1)),
    ],
)
def test_a_swept_number_gives_each_member_the_single_run_of_that_value(tmp_path, swept, fixed):
    values = {"weight_decay": (0.0, 1e-2), "momentum": (0.5, 0.9), "clip_per_example": (0.1, 1.0)}
    summary = _train(tmp_path / "set", sweep=((swept, values[swept]),), **fixed)
    for member, value in zip(summary["members"], values[swept], strict=True):
        single = _train(tmp_path / f"single-{value}", **{**fixed, swept: value})
        assert member[swept] == value
        assert member["test_loss"] == pytest.approx(single["test_loss"], rel=1e-4)
    losses = [m["test_loss"] for m in summary["members"]]
    assert losses[0] != losses[1]


def test_early_stopping_waits_for_every_member(tmp_path):
    summary = _train(tmp_path / "w", epochs=60, repeats=3, early_stopping_patience=2)
    assert summary["status"] == "early_stopped"
    best = [m["best_epoch"] for m in summary["members"]]
    assert summary["epochs"] - max(best) == 2  # the last member to improve set the stop
    assert all(summary["epochs"] - b >= 2 for b in best)
