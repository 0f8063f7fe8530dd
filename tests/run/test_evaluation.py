"""Tests of jaxbp.run.evaluation on the tiny runs of trained_runs (trained once per module)."""

import json
import os

import numpy as np
import pytest
from trained_runs import true_indices

from jaxbp.run import evaluation, recipe


@pytest.mark.parametrize("name", ["iris", "moons", "diabetes", "iris64"])
def test_evaluate_workdir_gives_the_summary_test_metrics(trained, name):
    workdir, _, summary = trained(name)
    result = evaluation.evaluate_workdir(workdir)
    summary_keys = {k for k in summary if k.startswith("test_")}
    assert summary_keys == {k for k in result if k.startswith("test_")}
    # The loss and the accuracy or R², each with its mean and std over the members (one).
    assert len(summary_keys) == 6 and summary["members"][0]["member"] == 0
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
