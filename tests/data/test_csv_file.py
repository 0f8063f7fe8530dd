"""Tests of jaxbp.data.csv_file: a data set's csv and its own test csv, read as written."""

import numpy as np
import pytest
from data_writers import write_text

from jaxbp.data.csv_file import read_csv_data, read_csv_test_data


def test_read_csv_data_gives_features_target_and_names_as_written(tmp_path):
    path = write_text(tmp_path / "d.csv", "a,y,b\n1,cat,2.5\n3,dog,-4\n")
    x, y, names = read_csv_data(path, "y")
    np.testing.assert_array_equal(x, [[1.0, 2.5], [3.0, -4.0]])
    np.testing.assert_array_equal(y, ["cat", "dog"])
    assert names == ("a", "b") and x.dtype == np.float64


def test_read_csv_test_data_puts_columns_in_the_training_order(tmp_path):
    path = write_text(tmp_path / "test.csv", "b,y,a\n20,1.5,10\n40,2.5,30\n")
    x, y = read_csv_test_data(path, "y", ("a", "b"), "train.csv")
    np.testing.assert_array_equal(x, [[10.0, 20.0], [30.0, 40.0]])
    np.testing.assert_array_equal(y, [1.5, 2.5])


def test_read_csv_test_data_names_the_columns_that_differ(tmp_path):
    path = write_text(tmp_path / "test.csv", "a,c,y\n1,2,3\n")
    with pytest.raises(ValueError) as error:
        read_csv_test_data(path, "y", ("a", "b"), "train.csv")
    message = str(error.value)
    assert message.startswith(f"{path!r}: its header lacks ['b'] and adds ['c']")
    assert "'train.csv'" in message and "Make the headers the same." in message
