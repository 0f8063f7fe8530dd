"""Tests of jaxbp.run.prediction_file: the csv that predict writes."""

import csv
import os

import numpy as np
import pytest

from jaxbp.run import prediction_file


def test_write_predictions_columns_and_values(tmp_path):
    probabilities = np.array([[0.25, 0.75], [0.9, 0.1]], np.float32)
    path = tmp_path / "p.csv"
    prediction_file.write_predictions(str(path), np.array(["b", "a"]), probabilities, ["a", "b"])
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["prediction", "probability_a", "probability_b"]
    assert [r[0] for r in rows[1:]] == ["b", "a"]
    read = np.array([[float(v) for v in r[1:]] for r in rows[1:]], np.float32)
    np.testing.assert_array_equal(read, probabilities)  # float32 digits round-trip exactly

    values = np.array([[1.5, -2.0], [3.25, 1e-300]])
    prediction_file.write_predictions(str(path), values)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["prediction_0", "prediction_1"]
    np.testing.assert_array_equal(np.array(rows[1:], float), values)


def test_write_predictions_refuses_a_missing_folder_and_mismatched_arrays(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist; create it"):
        prediction_file.write_predictions(str(tmp_path / "no" / "p.csv"), np.zeros(2))
    with pytest.raises(ValueError, match=r"need \(2, 3\)"):
        prediction_file.write_predictions(
            str(tmp_path / "p.csv"), np.zeros(2), np.zeros((2, 2)), ["a", "b", "c"]
        )
    with pytest.raises(ValueError, match="is a folder"):
        prediction_file.write_predictions(str(tmp_path), np.zeros(2))
    assert os.listdir(tmp_path) == []
