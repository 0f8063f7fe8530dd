"""Tests of jaxbp.data.npz_file: a data set's arrays read as saved, without unpickling."""

import numpy as np
import pytest
from data_writers import write_npz

from jaxbp.data.npz_file import read_npz_data


def test_read_npz_data_gives_the_arrays_as_saved(tmp_path):
    x, y = np.arange(12.0).reshape(4, 3), np.array([0, 1, 1, 0])
    arrays = read_npz_data(write_npz(tmp_path / "d.npz", x=x, y=y, notes=np.zeros(2)))
    assert list(arrays) == ["x", "y"]  # other arrays are not read
    np.testing.assert_array_equal(arrays["x"], x)
    np.testing.assert_array_equal(arrays["y"], y)
    split = dict(x_train=x, y_train=y, x_test=x[:2], y_test=y[:2])
    arrays = read_npz_data(write_npz(tmp_path / "s.npz", **split))
    assert list(arrays) == ["x_train", "y_train", "x_test", "y_test"]
    for key, value in split.items():
        np.testing.assert_array_equal(arrays[key], value)


def test_read_npz_data_refuses_rows_that_do_not_pair(tmp_path):
    path = write_npz(tmp_path / "d.npz", x=np.zeros((4, 2)), y=np.zeros(3))
    with pytest.raises(ValueError, match="x has 4 rows but y has 3; make them equal"):
        read_npz_data(path)
