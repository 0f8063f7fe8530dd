"""Tests of jaxbp.inference on tiny runs trained here (a few epochs each, once per module)."""

import csv
import json
import os
import shutil

import numpy as np
import pytest

from jaxbp import config as config_lib
from jaxbp import data_files, inference, recipe, trainer

RUNS = {  # name -> make_config arguments: three tasks and a float64 run
    "iris": ("iris", {"epochs": 3}),  # three classes, softmax
    "moons": ("moons", {"epochs": 3, "num_samples": 200}),  # two classes, one sigmoid unit
    "diabetes": ("diabetes", {"epochs": 3}),  # regression, one target
    "iris64": ("iris", {"epochs": 3, "precision": "float64"}),
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Trains each run on first use: name -> (workdir, config, summary)."""
    root = tmp_path_factory.mktemp("runs")
    done = {}

    def get(name):
        if name not in done:
            dataset, overrides = RUNS[name]
            config = config_lib.make_config(dataset, **overrides)
            workdir = str(root / name)
            summary = trainer.train_and_evaluate(config, workdir, log=lambda _: None)
            done[name] = workdir, config, summary
        return done[name]

    return get


def _raw_test_rows(config):
    """The test split in the data file's units, and the Dataset it comes from."""
    ds = recipe.load_data(config)
    return ds.x_test.astype(np.float64) * ds.x_scale + ds.x_mean, ds


def _true_indices(y):
    return (y[:, 0] > 0.5).astype(int) if y.shape[1] == 1 else np.argmax(y, axis=1)


@pytest.mark.parametrize("name", ["iris", "moons", "diabetes", "iris64"])
def test_evaluate_workdir_gives_the_summary_test_metrics(trained, name):
    workdir, _, summary = trained(name)
    result = inference.evaluate_workdir(workdir)
    summary_keys = {k for k in summary if k.startswith("test_")}
    assert summary_keys == {k for k in result if k.startswith("test_")}
    assert len(summary_keys) == 2  # the loss and the accuracy or R²
    for key in summary_keys:
        assert result[key] == pytest.approx(summary[key], rel=1e-6), key
    assert result["best_epoch"] == summary["best_epoch"]
    with open(os.path.join(workdir, "eval.json")) as f:
        assert json.load(f) == result


def test_float64_run_is_evaluated_in_float64(trained):
    workdir, _, _ = trained("iris64")
    loaded = inference.load_trained(workdir)
    assert {leaf.dtype for layer in loaded.params for leaf in layer.values()} == {
        np.dtype(np.float64)
    }


@pytest.mark.parametrize("name", ["iris", "moons"])
def test_confusion_matrix_and_per_class_scores_count_the_test_split(trained, name):
    workdir, config, summary = trained(name)
    result = inference.evaluate_workdir(workdir)
    ds = recipe.load_data(config)
    matrix = np.array(result["confusion_matrix"])
    num_classes = len(ds.class_names)
    assert result["class_names"] == list(ds.class_names)
    assert matrix.shape == (num_classes, num_classes)
    assert matrix.sum() == len(ds.x_test) == result["num_test_examples"]
    # Rows are the true classes.
    true_counts = np.bincount(_true_indices(ds.y_test), minlength=num_classes)
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


@pytest.mark.parametrize("name", ["iris", "moons"])
def test_predictions_on_raw_test_rows_have_the_test_accuracy(trained, name):
    workdir, config, summary = trained(name)
    x_raw, ds = _raw_test_rows(config)
    labels, probabilities = inference.predict_rows(workdir, x_raw)
    truth = np.asarray(ds.class_names)[_true_indices(ds.y_test)]
    assert labels.shape == (len(x_raw),)
    assert set(labels) <= set(ds.class_names)
    assert np.mean(labels == truth) == pytest.approx(summary["test_accuracy"], abs=1e-6)
    assert probabilities.shape == (len(x_raw), len(ds.class_names))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert np.all(probabilities >= 0)
    np.testing.assert_array_equal(np.asarray(ds.class_names)[probabilities.argmax(1)], labels)


def test_regression_predictions_are_in_the_targets_units(trained):
    workdir, config, summary = trained("diabetes")
    x_raw, ds = _raw_test_rows(config)
    values, probabilities = inference.predict_rows(workdir, x_raw)
    assert probabilities is None and values.shape == (len(x_raw),)
    y_raw = ds.y_test[:, 0] * ds.y_scale[0] + ds.y_mean[0]
    assert y_raw.min() >= 25  # diabetes progression scores run from 25 to 346
    squared = np.sum((values - y_raw) ** 2)
    # The run's mse is on standardised targets: mean squared error / y_scale².
    assert squared / len(y_raw) / ds.y_scale[0] ** 2 == pytest.approx(
        summary["test_loss"], rel=1e-4
    )
    r2 = 1 - squared / np.sum((y_raw - y_raw.mean()) ** 2)
    assert r2 == pytest.approx(summary["test_r2"], rel=1e-4, abs=1e-5)


def test_predictions_from_a_csv_with_columns_in_another_order(trained, tmp_path):
    workdir, config, _ = trained("iris")
    x_raw, _ = _raw_test_rows(config)
    loaded = inference.load_trained(workdir)
    names = loaded.preprocessing["feature_names"]
    assert names[0] == "sepal length (cm)"
    path = tmp_path / "new.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["species", *reversed(names)])
        writer.writerows(["?", *(repr(float(v)) for v in row[::-1])] for row in x_raw)
    x_read = data_files.read_features(str(path), names)
    np.testing.assert_array_equal(x_read, x_raw)
    labels, probabilities = inference.predict_rows(loaded, x_read)
    expected_labels, expected_probabilities = inference.predict_rows(workdir, x_raw)
    np.testing.assert_array_equal(labels, expected_labels)
    np.testing.assert_array_equal(probabilities, expected_probabilities)


def test_predict_rows_refuses_rows_it_cannot_read(trained):
    workdir, _, _ = trained("iris")
    loaded = inference.load_trained(workdir)
    with pytest.raises(ValueError, match=r"shape \(5, 3\).*\(n, 4\)"):
        inference.predict_rows(loaded, np.ones((5, 3)))
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        inference.predict_rows(loaded, np.ones(4))
    rows = np.ones((2, 4))
    rows[1, 2] = np.nan
    with pytest.raises(ValueError, match="not finite"):
        inference.predict_rows(loaded, rows)


def test_a_folder_without_a_trained_run_is_refused(trained, tmp_path):
    with pytest.raises(inference.NotTrainedError, match="does not exist"):
        inference.evaluate_workdir(str(tmp_path / "missing"))
    with pytest.raises(inference.NotTrainedError, match=r"holds no run \(run.json is missing\)"):
        inference.evaluate_workdir(str(tmp_path))
    workdir, _, _ = trained("iris")
    untrained = tmp_path / "untrained"
    untrained.mkdir()
    shutil.copy(os.path.join(workdir, "run.json"), untrained / "run.json")
    with pytest.raises(inference.NotTrainedError, match="holds a run but no checkpoint"):
        inference.predict_rows(str(untrained), np.ones((1, 4)))
    assert not (untrained / "eval.json").exists()
    assert issubclass(inference.NotTrainedError, FileNotFoundError)


def test_a_damaged_checkpoint_is_named_not_thrown_raw(trained, tmp_path):
    workdir, _, _ = trained("iris")
    copy = shutil.copytree(workdir, tmp_path / "copy")
    (epoch,) = os.listdir(copy / "best")
    (copy / "best" / epoch / "meta" / "metadata").write_text("{not json")
    with pytest.raises(inference.UnreadableCheckpointError, match="JSONDecodeError") as error:
        inference.evaluate_workdir(str(copy))
    assert f"checkpoint in {copy} cannot be read" in str(error.value)


def test_evaluation_refuses_data_that_changed_since_training(trained, monkeypatch):
    workdir, _, _ = trained("iris")
    load_data = recipe.load_data

    def changed(config):
        ds = load_data(config)
        return ds._replace(x_scale=ds.x_scale * 1.001)

    monkeypatch.setattr(recipe, "load_data", changed)
    with pytest.raises(inference.DataChangedError, match="x_scale differ"):
        inference.evaluate_workdir(workdir)


def test_write_predictions_columns_and_values(tmp_path):
    probabilities = np.array([[0.25, 0.75], [0.9, 0.1]], np.float32)
    path = tmp_path / "p.csv"
    inference.write_predictions(str(path), np.array(["b", "a"]), probabilities, ["a", "b"])
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["prediction", "probability_a", "probability_b"]
    assert [r[0] for r in rows[1:]] == ["b", "a"]
    read = np.array([[float(v) for v in r[1:]] for r in rows[1:]], np.float32)
    np.testing.assert_array_equal(read, probabilities)  # float32 digits round-trip exactly

    values = np.array([[1.5, -2.0], [3.25, 1e-300]])
    inference.write_predictions(str(path), values)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["prediction_0", "prediction_1"]
    np.testing.assert_array_equal(np.array(rows[1:], float), values)


def test_write_predictions_refuses_a_missing_folder_and_mismatched_arrays(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist; create it"):
        inference.write_predictions(str(tmp_path / "no" / "p.csv"), np.zeros(2))
    with pytest.raises(ValueError, match=r"need \(2, 3\)"):
        inference.write_predictions(
            str(tmp_path / "p.csv"), np.zeros(2), np.zeros((2, 2)), ["a", "b", "c"]
        )
    with pytest.raises(ValueError, match="is a folder"):
        inference.write_predictions(str(tmp_path), np.zeros(2))
    assert os.listdir(tmp_path) == []
