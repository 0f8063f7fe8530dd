"""Tests of jaxbp.run.inference on the tiny runs of trained_runs (trained once per module)."""

import csv
import os
import re
import shutil

import numpy as np
import pytest
from trained_runs import true_indices

from jaxbp.data import files
from jaxbp.run import evaluation, inference, recipe
from jaxbp.run import workdir as workdir_lib


def _raw_test_rows(config):
    """The test split in the data file's units, and the Dataset it comes from."""
    ds = recipe.load_data(config)
    return ds.x_test.astype(np.float64) * ds.x_scale + ds.x_mean, ds


def test_float64_run_is_evaluated_in_float64(trained):
    workdir, _, _ = trained("iris64")
    loaded = inference.load_trained(workdir)
    assert {leaf.dtype for layer in loaded.params for leaf in layer.values()} == {
        np.dtype(np.float64)
    }


@pytest.mark.parametrize("name", ["iris", "moons"])
def test_predictions_on_raw_test_rows_have_the_test_accuracy(trained, name):
    workdir, config, summary = trained(name)
    x_raw, ds = _raw_test_rows(config)
    labels, probabilities = inference.predict_rows(workdir, x_raw)
    truth = np.asarray(ds.class_names)[true_indices(ds.y_test)]
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
    x_read = files.read_features(str(path), names)
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


def test_predict_rows_refuses_a_row_beyond_float32_and_never_returns_nan(trained):
    workdir, _, _ = trained("iris")
    loaded = inference.load_trained(workdir)
    names = loaded.preprocessing["feature_names"]
    rows = np.ones((3, 4))
    rows[2, 1] = 1e39  # finite in float64, inf once standardised in the run's float32
    with pytest.raises(ValueError, match=re.escape(f"row 2, feature {names[1]!r} is beyond")):
        inference.predict_rows(loaded, rows)
    blown_up = loaded._replace(
        params=[{k: v * np.nan for k, v in layer.items()} for layer in loaded.params]
    )
    with pytest.raises(ValueError, match="3 of 3 rows give NaN or infinite outputs"):
        inference.predict_rows(blown_up, np.ones((3, 4)))


def test_a_folder_without_a_trained_run_is_refused(trained, tmp_path):
    with pytest.raises(inference.NotTrainedError, match="does not exist"):
        evaluation.evaluate_workdir(str(tmp_path / "missing"))
    with pytest.raises(inference.NotTrainedError, match=r"holds no run \(run.json is missing\)"):
        evaluation.evaluate_workdir(str(tmp_path))
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
        evaluation.evaluate_workdir(str(copy))
    assert f"checkpoint in {copy} cannot be read" in str(error.value)


def test_a_run_still_training_is_read_again_or_said_to_be_writing(trained, tmp_path, monkeypatch):
    """While a live run holds the workdir, a failed read is retried (the run may have just
    replaced its newest checkpoint), and the error, if it stays, names the live run."""
    workdir, _, _ = trained("iris")
    copy = shutil.copytree(workdir, tmp_path / "copy")
    real_restore, calls = inference.restore_trained, []

    def replaced_once(path):
        calls.append(path)
        if len(calls) == 1:
            raise FileNotFoundError("the checkpoint went away while it was read")
        return real_restore(path)

    monkeypatch.setattr(inference, "_READ_RETRY_SECONDS", 0.0)
    monkeypatch.setattr(inference, "restore_trained", replaced_once)
    with workdir_lib.locked(str(copy)):
        assert workdir_lib.live_run(str(copy)) == str(os.getpid())
        loaded = inference.load_trained(str(copy))
        assert len(calls) == 2 and loaded.best_epoch is not None
        (epoch,) = os.listdir(copy / "best")
        (copy / "best" / epoch / "meta" / "metadata").write_text("{not json")
        with pytest.raises(inference.UnreadableCheckpointError, match="is still training"):
            inference.load_trained(str(copy))
    assert workdir_lib.live_run(str(copy)) is None
