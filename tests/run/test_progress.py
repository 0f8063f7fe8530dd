"""Tests of jaxbp.run.progress: each member's best, divergence and the progress line."""

import math

import numpy as np

from jaxbp.run.config import Member
from jaxbp.run.programs import EpochLosses
from jaxbp.run.progress import EPOCH_LOSS_LABEL, Progress, member_label, progress_line


def test_a_new_progress_has_no_best_and_every_member_training():
    progress = Progress.new(3)
    assert progress.best_epoch == [None] * 3 and progress.diverged_at == [None] * 3
    assert np.all(np.isinf(progress.best_val)) and progress.active().all()
    assert progress.unsaved_best() is None


def test_bests_are_noted_and_recorded_once():
    progress = Progress.new(2)
    improved = progress.improved(np.array([0.5, 0.7]))
    progress.note_best(improved, np.array([0.5, 0.7]), epoch=1)
    assert progress.best_epoch == [1, 1] and list(progress.best_val) == [0.5, 0.7]
    assert list(progress.improved(np.array([0.6, 0.6]))) == [False, True]
    epoch, record = progress.unsaved_best()
    assert epoch == 1 and record["members"] == [
        {"epoch": 1, "val_loss": 0.5},
        {"epoch": 1, "val_loss": 0.7},
    ]
    progress.saved_best = 1
    assert progress.unsaved_best() is None


def test_a_single_run_records_its_best_as_a_set_of_one():
    progress = Progress.new(1)
    progress.note_best(np.array([True]), np.array([0.25]), epoch=4)
    assert progress.unsaved_best() == (4, {"epoch": 4, "members": [{"epoch": 4, "val_loss": 0.25}]})


def test_resume_best_takes_up_the_stored_record():
    progress = Progress.new(2)
    record = {"epoch": 3, "members": [{"epoch": 3, "val_loss": 0.4}, {"epoch": None}]}
    progress.resume_best(3, record, params="params")
    assert progress.best_epoch == [3, None] and progress.best_val[0] == 0.4
    assert math.isinf(progress.best_val[1])
    assert progress.best_params == "params" and progress.saved_best == 3


def test_a_diverged_member_is_frozen_and_left_out_of_the_patience():
    members = [Member(0, 0, {"learning_rate": 0.1}), Member(1, 1, {"learning_rate": 10.0})]
    progress = Progress.new(2)
    progress.note_best(np.array([True, False]), np.array([0.5, 0.0]), epoch=1)
    newly = np.array([False, True])
    losses = EpochLosses(np.array([[0.1, 0.2], [0.3, np.nan]]), np.array([0.1, 0.2]))
    causes = progress.causes(newly, losses, epoch=2, steps_per_epoch=2)
    assert causes == {1: "the loss became nan at step 4"}
    lines = progress.mark_diverged(newly, causes, 2, members)
    assert progress.diverged_at == [None, 2] and list(progress.active()) == [True, False]
    assert lines == [
        "member 1 (seed 1, learning_rate=10) diverged in epoch 2 (the loss became nan at step "
        "4); it keeps its params of epoch 1 and is left out of the means."
    ]
    assert progress.patience_out(3, patience=2) and not progress.patience_out(2, patience=2)
    assert progress.best_epochs(5) == [1, None]


def test_the_cause_names_a_loss_that_overflows_after_the_epoch_or_non_finite_params():
    progress = Progress.new(3)
    losses = EpochLosses(np.ones((3, 2)), np.array([np.inf, 1.0, 1.0]))
    causes = progress.causes(np.array([True, True, False]), losses, epoch=1, steps_per_epoch=2)
    assert causes == {
        0: "the loss at its params after the epoch is inf",
        1: "its params became non-finite",
    }


def test_member_label_names_the_seed_and_the_swept_values():
    assert member_label(Member(0, 7, {})) == "seed 7"
    assert member_label(Member(0, 7, {"momentum": 0.9})) == "seed 7, momentum=0.9"


def test_the_progress_line_is_the_mean_over_the_live_members():
    records = [
        {
            "epoch": 2,
            "epoch_loss": loss,
            "train_accuracy": acc,
            "val_accuracy": acc,
            "steps_per_second": 1000.0,
        }
        for loss, acc in ((0.5, 0.9), (0.7, 0.7), (9.0, 0.1))
    ]
    line = progress_line(records, 10, 4.2, np.array([True, True, False]))
    assert line.startswith(
        "epoch  2/10  epoch-mean loss 0.6000 ± 0.1000  train accuracy 80.00% ± 10.00%"
    )
    assert "3 members (1 diverged, left out)" in line and line.endswith("ETA 5s")
    single = progress_line(records[:1], 10, 0.0, np.array([True]))
    assert "±" not in single and "members" not in single


def test_the_progress_line_names_its_loss_and_gives_regression_errors_in_units():
    record = {
        "epoch": 1,
        "epoch_loss": 0.25,
        "train_r2": 0.5,
        "val_r2": 0.4,
        "val_rmse": 51.25,
        "val_mae": 40.5,
        "steps_per_second": 10.0,
    }
    line = progress_line([record], 5, 1.0, np.array([True]))
    # The epoch mean of the step losses, named so (curves.png's train loss is another one).
    assert f"{EPOCH_LOSS_LABEL} 0.2500" in line and EPOCH_LOSS_LABEL == "epoch-mean loss"
    assert "val r2 0.4000  val RMSE 51.25 MAE 40.5 (target units)" in line
    pair = [record, {**record, "val_rmse": 48.75, "val_mae": 39.5}]
    assert "val RMSE 50 ± 1.25 MAE 40 ± 0.5" in progress_line(pair, 5, 1.0, np.ones(2, bool))
