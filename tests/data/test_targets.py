"""Tests of jaxbp.data.targets: a target read as the task says, or refused naming the fix."""

import numpy as np
import pytest

from jaxbp.data.targets import MAX_CLASSES, TASKS, read_targets

RNG = np.random.default_rng(0)
PRICES = RNG.choice(np.arange(50_000, 900_000), size=250, replace=False)  # 250 distinct ints
ROOMS = np.arange(60) % 5 + 1  # 1..5, each 12 times
REALS = np.round(RNG.normal(size=40), 3)


def test_the_tasks_are_auto_classification_and_regression():
    assert TASKS == ("auto", "classification", "regression") and MAX_CLASSES == 20


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint16])
def test_auto_refuses_integers_whose_classes_mostly_appear_once(dtype):
    with pytest.raises(
        ValueError, match="250 distinct values and 250 of them appear only once"
    ) as e:
        read_targets(PRICES.astype(dtype), "auto", "'prices.npz'")
    message = str(e.value)
    assert message.startswith("'prices.npz': ")
    assert "task=regression" in message and "task=classification" in message


def test_auto_keeps_many_integer_classes_seen_several_times():
    labels, task, names = read_targets(np.arange(300) % 30, "auto", "f")
    assert (task, len(names)) == ("classification", 30)
    np.testing.assert_array_equal(labels, np.arange(300) % 30)


def test_auto_reads_few_integer_values_as_classes_and_other_numbers_as_values():
    labels, task, names = read_targets(ROOMS.astype(np.float64), "auto", "f")
    assert (task, names) == ("classification", ("1", "2", "3", "4", "5"))
    np.testing.assert_array_equal(labels, ROOMS - 1)
    values, task, names = read_targets(REALS, "auto", "f")
    assert (task, names) == ("regression", None)
    np.testing.assert_array_equal(values, REALS)
    # integer-valued floats with more than MAX_CLASSES values are values, as a csv column is
    values, task, _ = read_targets(PRICES.astype(np.float64), "auto", "f")
    assert task == "regression"
    np.testing.assert_array_equal(values, PRICES)


@pytest.mark.parametrize("y", [PRICES, ROOMS, ROOMS.astype(np.float64), REALS])
def test_regression_reads_any_numbers_as_values(y):
    values, task, names = read_targets(y, "regression", "f")
    assert (task, names, values.dtype) == ("regression", None, np.float64)
    np.testing.assert_array_equal(values, y)


def test_regression_refuses_class_names():
    with pytest.raises(ValueError, match=r"'f': the target holds class names \['cat', 'dog'\]"):
        read_targets(np.array(["cat", "dog", "cat"]), "regression", "'f'")


def test_classification_reads_integers_however_many_and_names():
    labels, task, names = read_targets(PRICES, "classification", "f")
    assert (task, len(names)) == ("classification", 250)
    np.testing.assert_array_equal(np.asarray(names, dtype=np.int64)[labels], PRICES)
    labels, task, names = read_targets(np.array(["b", "a", "b"]), "classification", "f")
    assert (task, names) == ("classification", ("a", "b"))
    np.testing.assert_array_equal(labels, [1, 0, 1])


def test_classification_refuses_values_that_are_not_integers():
    with pytest.raises(
        ValueError, match=r"values that are not integers \(e.g. 2.5\).*task=regression"
    ):
        read_targets(np.array([1.0, 2.5, 1.0]), "classification", "f")


def test_columns_one_hot_are_classes_unless_regression_others_are_values():
    one_hot = np.eye(3)[[0, 2, 1, 2]]
    labels, task, _ = read_targets(one_hot, "auto", "f")
    assert task == "classification"
    np.testing.assert_array_equal(labels, [0, 2, 1, 2])
    values, task, _ = read_targets(one_hot, "regression", "f")
    assert task == "regression"
    np.testing.assert_array_equal(values, one_hot)
    with pytest.raises(ValueError, match="2 columns whose rows are not one-hot"):
        read_targets(np.ones((4, 2)), "classification", "f")


def test_an_unknown_task_is_refused():
    with pytest.raises(ValueError, match="task='numbers' is not one of auto, classification"):
        read_targets(ROOMS, "numbers", "f")
