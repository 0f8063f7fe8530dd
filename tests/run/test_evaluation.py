"""Tests of jaxbp.run.evaluation on the tiny runs of trained_runs (trained once per module)."""

import json
import os

import numpy as np
import pytest
from trained_runs import true_indices

from jaxbp.run import evaluation, inference, recipe


@pytest.mark.parametrize("name", ["iris", "moons", "diabetes", "iris64"])
def test_evaluate_workdir_gives_the_summary_test_metrics(trained, name):
    workdir, _, summary = trained(name)
    result = evaluation.evaluate_workdir(workdir)
    summary_keys = {k for k in summary if k.startswith("test_")}
    assert summary_keys == {k for k in result if k.startswith("test_")}
    # The loss and the accuracy, or R² with the RMSE and MAE in the target's units, each
    # with its mean and std over the members (one).
    assert len(summary_keys) == 3 * (4 if name == "diabetes" else 2)
    assert summary["members"][0]["member"] == 0
    for key in summary_keys:
        assert result[key] == pytest.approx(summary[key], rel=1e-6), key
    assert result["best_epoch"] == summary["best_epoch"]
    with open(os.path.join(workdir, "eval.json")) as f:
        assert json.load(f) == result


@pytest.mark.parametrize("name", ["iris", "moons"])
def test_confusion_matrix_and_per_class_scores_count_the_test_split(trained, name):
    workdir, config, summary = trained(name)
    result = evaluation.evaluate_workdir(workdir)
    ds = recipe.load_data(config)
    matrix = np.array(result["confusion_matrix"])
    num_classes = len(ds.class_names)
    assert result["class_names"] == list(ds.class_names)
    assert matrix.shape == (num_classes, num_classes)
    assert matrix.sum() == len(ds.x_test) == result["num_test_examples"]
    # Rows are the true classes.
    true_counts = np.bincount(true_indices(ds.y_test), minlength=num_classes)
    np.testing.assert_array_equal(matrix.sum(axis=1), true_counts)
    assert np.trace(matrix) / matrix.sum() == pytest.approx(summary["test_accuracy"], rel=1e-6)
    for i, c in enumerate(ds.class_names):
        predicted, present = matrix[:, i].sum(), matrix[i].sum()
        precision = matrix[i, i] / predicted if predicted else 0.0
        recall = matrix[i, i] / present if present else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        assert result["precision"][c] == pytest.approx(precision, abs=1e-12)
        assert result["recall"][c] == pytest.approx(recall, abs=1e-12)
        assert result["f1"][c] == pytest.approx(f1, abs=1e-12)


def test_evaluation_refuses_data_that_changed_since_training(trained, monkeypatch):
    workdir, _, _ = trained("iris")
    load_data = recipe.load_data

    def changed(config):
        ds = load_data(config)
        return ds._replace(x_scale=ds.x_scale * 1.001)

    monkeypatch.setattr(recipe, "load_data", changed)
    with pytest.raises(evaluation.DataChangedError, match="x_scale differ"):
        evaluation.evaluate_workdir(workdir)


def test_regression_errors_are_in_the_targets_units(trained):
    workdir, config, summary = trained("diabetes")
    ds = recipe.load_data(config)
    x_raw = ds.x_test.astype(np.float64) * ds.x_scale + ds.x_mean
    y_raw = ds.y_test.astype(np.float64) * ds.y_scale + ds.y_mean  # progression scores
    values, _ = inference.predict_rows(workdir, x_raw)
    error = values - y_raw[:, 0]
    rmse, mae = np.sqrt(np.mean(error**2)), np.mean(np.abs(error))
    assert rmse > 10  # in score units, not standardised ones (y_scale ≈ 77)
    result = evaluation.evaluate_workdir(workdir)
    for figures in (summary, result):
        assert figures["test_rmse"] == pytest.approx(rmse, rel=1e-4)
        assert figures["test_mae"] == pytest.approx(mae, rel=1e-4)
    assert {"val_rmse", "val_mae", "last_epoch_test_rmse"} <= set(summary)
    assert result["members_used"] == [0] and result["predictions_from"] == "the single run"


def test_one_member_of_a_set_is_evaluated_alone(trained):
    workdir, _, summary = trained("iris_pair")
    members = summary["members"]
    for k, stored in enumerate(members):
        result = evaluation.evaluate_workdir(workdir, member=k)
        assert result["test_loss"] == pytest.approx(stored["test_loss"], rel=1e-6)
        assert result["test_accuracy"] == pytest.approx(stored["test_accuracy"], rel=1e-6)
        assert result["best_epoch"] == stored["best_epoch"]
        assert [m["member"] for m in result["members"]] == [k]  # a run of that one member
        assert result["members_used"] == [k] and result["member_choice"] == k
        assert result["predictions_from"].startswith(f"member {k} (seed {stored['seed']}")
    loaded = inference.load_trained(workdir)
    val_losses = [m["best_val_loss"] for m in loaded.members]
    best = int(np.argmin(val_losses))
    result = evaluation.evaluate_workdir(workdir, member="best")
    assert result["members_used"] == [best]
    assert "the lowest best validation loss" in result["predictions_from"]
    assert result["test_loss"] == pytest.approx(members[best]["test_loss"], rel=1e-6)
    ensemble = evaluation.evaluate_workdir(workdir)
    assert ensemble["members_used"] == [0, 1] and "ensemble" in ensemble["predictions_from"]
    with pytest.raises(inference.NoSuchMemberError, match="2 members: 0 to 1"):
        evaluation.evaluate_workdir(workdir, member=2)


def test_a_single_run_is_member_0_and_its_own_best(trained):
    workdir, _, summary = trained("iris")
    for member in (0, "best"):
        result = evaluation.evaluate_workdir(workdir, member=member)
        assert result["test_loss"] == pytest.approx(summary["test_loss"], rel=1e-6)
        assert result["members_used"] == [0]
    with pytest.raises(inference.NoSuchMemberError, match="a single run: member 0"):
        evaluation.evaluate_workdir(workdir, member=1)
