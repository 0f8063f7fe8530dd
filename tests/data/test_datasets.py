"""Tests for jaxbp.data: shapes, encodings, splits, standardisation, file formats, errors."""

import os
import subprocess
import sys

import numpy as np
import pytest
from data_writers import id_npz, unstandardise, write_columns_csv, write_idx

from jaxbp.data import DATASETS, load_dataset, sources, split_record

# name -> (total examples, num_features, num_outputs, task, num_classes)
BUILTIN = {
    "digits": (1797, 64, 10, "classification", 10),
    "breast_cancer": (569, 30, 1, "classification", 2),
    "iris": (150, 4, 3, "classification", 3),
    "wine": (178, 13, 3, "classification", 3),
    "diabetes": (442, 10, 1, "regression", None),
    "moons": (1000, 2, 1, "classification", 2),
    "spirals": (1000, 2, 1, "classification", 2),
    "teacher": (1000, 8, 1, "regression", None),
}


def _write_fake_mnist(directory, n_train=50, n_test=20, seed=0):
    """Writes a fake MNIST (random 28x28 uint8 images), the training images gzipped."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(n_test, dtype=np.uint8) % 10,
    }
    for file, array in arrays.items():
        write_idx(os.path.join(directory, file), array, gz=file.endswith(".gz"))
    return arrays


def _check_encoding(ds):
    for y in (ds.y_train, ds.y_val, ds.y_test):
        assert y.dtype == ds.x_train.dtype and y.shape[1] == ds.num_outputs
        if ds.task == "regression":
            continue
        assert np.isin(y, (0.0, 1.0)).all()
        if ds.num_classes > 2:
            np.testing.assert_array_equal(y.sum(axis=1), 1.0)  # one-hot rows


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_builtin_datasets_have_documented_shapes_and_encoding(name):
    total, num_features, num_outputs, task, num_classes = BUILTIN[name]
    ds = load_dataset(name)
    assert (ds.name, ds.task, ds.num_classes) == (name, task, num_classes)
    assert (ds.num_features, ds.num_outputs) == (num_features, num_outputs)
    assert len(ds.x_train) + len(ds.x_val) + len(ds.x_test) == total
    assert len(ds.x_test) == pytest.approx(0.2 * total, abs=num_outputs + 1)
    assert len(ds.x_val) == pytest.approx(0.1 * total, abs=num_outputs + 1)
    for x, y in ((ds.x_train, ds.y_train), (ds.x_val, ds.y_val), (ds.x_test, ds.y_test)):
        assert x.dtype == np.float32 and x.shape == (len(y), num_features)
        assert np.isfinite(x).all() and np.isfinite(y).all()
    _check_encoding(ds)
    assert (ds.y_mean is None) == (task == "classification")


def test_every_name_in_datasets_is_covered_here():
    assert set(DATASETS) == set(BUILTIN) | {"xor", "npz", "csv", "mnist", "fashion_mnist"}


def test_xor_is_the_truth_table_in_every_split():
    ds = load_dataset("xor")
    for x, y in ((ds.x_train, ds.y_train), (ds.x_val, ds.y_val), (ds.x_test, ds.y_test)):
        bits = np.rint(unstandardise(ds, x)).astype(int)
        np.testing.assert_array_equal(y[:, 0], bits[:, 0] ^ bits[:, 1])
        assert sorted(map(tuple, bits)) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    np.testing.assert_allclose(np.abs(ds.x_train), 1.0)  # {0, 1} standardised to {-1, +1}


def test_import_does_not_need_sklearn():
    code = "import sys, jaxbp.data; assert 'sklearn' not in sys.modules"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_digits_read_from_the_shipped_file_equal_load_digits():
    from sklearn.datasets import load_digits

    raw = sources.read_shipped_digits()
    bunch = load_digits()
    assert raw is not None
    np.testing.assert_array_equal(raw.x, bunch.data)
    np.testing.assert_array_equal(raw.y, bunch.target)
    assert raw.feature_names == tuple(bunch.feature_names)
    assert raw.class_names == tuple(str(c) for c in bunch.target_names)


def test_loading_digits_does_not_import_sklearn():
    code = (
        "import sys; from jaxbp import data; ds = data.load_dataset('digits'); "
        "assert 'sklearn' not in sys.modules and ds.x_train.shape[1] == 64"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


@pytest.mark.parametrize("name", ["iris", "spirals", "teacher"])
def test_split_is_deterministic_per_seed_and_differs_across_seeds(name):
    a, b, c = (load_dataset(name, seed=s) for s in (3, 3, 4))
    for field in ("x_train", "y_train", "x_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.x_train.shape == c.x_train.shape and not np.array_equal(a.x_train, c.x_train)


def test_splits_partition_rows_and_standardise_with_train_statistics_only(tmp_path):
    path, x, y = id_npz(tmp_path)
    ds = load_dataset("npz", path=path, dtype=np.float64)
    ids = [
        np.rint(unstandardise(ds, s)[:, 0]).astype(int) for s in (ds.x_train, ds.x_val, ds.x_test)
    ]
    np.testing.assert_array_equal(np.sort(np.concatenate(ids)), np.arange(len(x)))
    assert [len(i) for i in ids] == [140, 20, 40]
    train = x[ids[0]]
    np.testing.assert_allclose(ds.x_mean[:2], train[:, :2].mean(axis=0))
    np.testing.assert_allclose(ds.x_scale[:2], train[:, :2].std(axis=0))
    np.testing.assert_allclose(ds.x_train[:, :2].mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(ds.x_train[:, :2].std(axis=0), 1.0)
    np.testing.assert_allclose(ds.x_test[:, 1], (x[ids[2], 1] - train[:, 1].mean()) / ds.x_scale[1])
    assert abs(ds.x_test[:, 1].mean()) > 1e-6  # test is not re-standardised with its own stats
    # Regression targets: standardised with train statistics; y_mean / y_scale undo it.
    assert ds.task == "regression" and ds.y_train.shape == (140, 1)
    np.testing.assert_allclose(ds.y_mean, [y[ids[0]].mean()])
    np.testing.assert_allclose(ds.y_test[:, 0] * ds.y_scale[0] + ds.y_mean[0], y[ids[2]])


def test_zero_variance_feature_gets_scale_one(tmp_path):
    path, _, _ = id_npz(tmp_path)
    ds = load_dataset("npz", path=path)
    assert ds.x_scale[2] == 1.0 and ds.x_mean[2] == 7.0
    for x in (ds.x_train, ds.x_val, ds.x_test):
        assert np.isfinite(x).all()
        np.testing.assert_array_equal(x[:, 2], 0.0)


def test_classification_split_is_stratified():
    ds = load_dataset("breast_cancer", seed=1)
    overall = (212 + 0.0) / 569  # malignant (label 0) share of the whole set
    for y in (ds.y_train, ds.y_val, ds.y_test):
        assert np.mean(y[:, 0] == 0) == pytest.approx(overall, abs=0.02)


def test_num_samples_and_dtype_are_respected():
    ds = load_dataset("moons", num_samples=100, dtype=np.float64, val_fraction=0.2)
    assert len(ds.x_train) + len(ds.x_val) + len(ds.x_test) == 100
    assert len(ds.x_val) == 20 and ds.x_train.dtype == ds.y_test.dtype == np.float64
    assert np.mean(np.concatenate([ds.y_train, ds.y_val, ds.y_test])) == 0.5  # balanced


def test_npz_with_own_test_split_and_one_hot_images(tmp_path):
    rng = np.random.default_rng(0)
    x_train, x_test = rng.normal(size=(60, 4, 4)), rng.normal(size=(15, 4, 4))
    y_train, y_test = np.eye(3)[np.arange(60) % 3], np.eye(3)[np.arange(15) % 3]
    path = tmp_path / "split.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    ds = load_dataset("npz", path=str(path), dtype=np.float64)
    assert (ds.task, ds.num_classes, ds.num_features) == ("classification", 3, 16)
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (54, 6, 15)
    np.testing.assert_allclose(unstandardise(ds, ds.x_test), x_test.reshape(15, 16))
    np.testing.assert_array_equal(ds.y_test, y_test)
    _check_encoding(ds)


def test_npz_integer_labels_are_classes_even_when_many(tmp_path):
    path = tmp_path / "labels.npz"
    np.savez(path, x=np.random.default_rng(0).normal(size=(300, 2)), y=np.arange(300) % 30)
    ds = load_dataset("npz", path=str(path))
    assert (ds.task, ds.num_classes, ds.num_outputs) == ("classification", 30, 30)
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (210, 30, 60)
    np.testing.assert_array_equal(ds.y_val.sum(axis=0), 1.0)  # stratified: one of each class


def test_npz_object_array_is_refused(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, x=np.zeros((4, 2)), y=np.array([1, "a", None, 2.0], dtype=object))
    with pytest.raises(ValueError, match="object array"):
        load_dataset("npz", path=str(path))


def test_npz_with_wrong_keys_names_the_expected_ones(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, features=np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"'features'.*expected 'x' and 'y'"):
        load_dataset("npz", path=str(path))


def test_csv_with_named_columns(tmp_path):
    rng = np.random.default_rng(0)
    numeric = {
        "height": np.round(rng.normal(size=60), 4),
        "weight": np.arange(60) % 7,  # integer-valued with 7 values: class labels
        "price": np.round(rng.normal(size=60) * 100, 3),  # real-valued: regression
    }
    species = [("setosa", "virginica", "versicolor")[i % 3] for i in range(60)]
    path = write_columns_csv(tmp_path / "table.csv", {" species ": species, **numeric})
    ds = load_dataset("csv", path=path, target_column="species")  # header cells are stripped
    assert (ds.task, ds.num_classes, ds.num_features) == ("classification", 3, 3)
    assert ds.class_names == ("setosa", "versicolor", "virginica")
    _check_encoding(ds)
    with pytest.raises(ValueError, match="'species' is not numeric"):
        load_dataset("csv", path=path, target_column="price")
    with pytest.raises(ValueError, match="'colour' is not in"):
        load_dataset("csv", path=path, target_column="colour")
    path = write_columns_csv(tmp_path / "numeric.csv", numeric)
    ds = load_dataset("csv", path=path, target_column="price")
    assert (ds.task, ds.num_outputs, ds.num_features) == ("regression", 1, 2)
    ds = load_dataset("csv", path=path, target_column="weight")
    assert (ds.task, ds.num_classes, ds.class_names) == ("classification", 7, tuple("0123456"))


def test_fake_mnist_loads_with_official_test_split(tmp_path):
    arrays = _write_fake_mnist(tmp_path)
    ds = load_dataset("mnist", data_dir=str(tmp_path))
    assert (ds.num_features, ds.num_outputs, ds.num_classes) == (784, 10, 10)
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (45, 5, 20)
    np.testing.assert_allclose(
        unstandardise(ds, ds.x_test) * 255,
        arrays["t10k-images-idx3-ubyte"].reshape(20, -1),
        atol=1e-3,
    )
    np.testing.assert_array_equal(ds.y_test.argmax(axis=1), arrays["t10k-labels-idx1-ubyte"])
    _check_encoding(ds)
    assert len(set(ds.x_scale)) == 1  # one scale for all pixels
    fashion = load_dataset("fashion_mnist", data_dir=str(tmp_path))
    assert fashion.class_names[9] == "Ankle boot"


def test_missing_mnist_files_are_listed(tmp_path):
    _write_fake_mnist(tmp_path)
    os.remove(tmp_path / "train-images-idx3-ubyte.gz")
    os.remove(tmp_path / "t10k-labels-idx1-ubyte")
    with pytest.raises(FileNotFoundError) as error:
        load_dataset("mnist", data_dir=str(tmp_path))
    message = str(error.value)
    assert "train-images-idx3-ubyte" in message and "t10k-labels-idx1-ubyte" in message
    assert "train-labels" not in message and "t10k-images" not in message
    assert str(tmp_path) in message and "download" in message


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"name": "cifar"}, ValueError, "Unknown dataset 'cifar'.*digits, breast_cancer"),
        ({"name": "iris", "val_fraction": 0.0}, ValueError, "val_fraction must be in"),
        ({"name": "iris", "test_fraction": 1.5}, ValueError, "test_fraction must be in"),
        ({"name": "iris", "val_fraction": 0.5, "test_fraction": 0.5}, ValueError, "< 1"),
        ({"name": "npz"}, ValueError, "needs path="),
        ({"name": "csv", "path": __file__}, ValueError, "needs target_column="),
        ({"name": "mnist"}, ValueError, "needs data_dir="),
        ({"name": "npz", "path": "/no/such.npz"}, FileNotFoundError, "/no/such.npz"),
        ({"name": "iris", "num_samples": 10}, ValueError, "num_samples=10 was given for 'iris'"),
        ({"name": "iris", "dtype": np.int32}, ValueError, "float dtype"),
        ({"name": "xor", "num_samples": 4}, ValueError, "Drop it"),
        ({"name": "moons", "num_samples": 5}, ValueError, "validation split is empty"),
    ],
)
def test_bad_input_is_explained(kwargs, error, match):
    with pytest.raises(error, match=match):
        load_dataset(**kwargs)


# name -> the first feature names: scikit-learn's own, else x0, x1, ...
FIRST_FEATURES = {
    "digits": ("pixel_0_0", "pixel_0_1"),
    "breast_cancer": ("mean radius", "mean texture"),
    "iris": ("sepal length (cm)", "sepal width (cm)"),
    "wine": ("alcohol", "malic_acid"),
    "diabetes": ("age", "sex"),
    "moons": ("x0", "x1"),
    "spirals": ("x0", "x1"),
    "teacher": ("x0", "x1"),
}


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_feature_names_of_builtin_datasets(name):
    ds = load_dataset(name)
    assert len(ds.feature_names) == ds.num_features == len(set(ds.feature_names))
    assert all(isinstance(f, str) for f in ds.feature_names)
    assert ds.feature_names[:2] == FIRST_FEATURES[name]


def test_feature_names_of_xor_npz_csv_and_mnist(tmp_path):
    assert load_dataset("xor").feature_names == ("x0", "x1")
    assert load_dataset("teacher").feature_names == tuple(f"x{i}" for i in range(8))
    path = tmp_path / "images.npz"
    np.savez(path, x=np.random.default_rng(0).normal(size=(30, 4, 4)), y=np.arange(30) % 2)
    assert load_dataset("npz", path=str(path)).feature_names == tuple(f"x{i}" for i in range(16))
    columns = {"w": np.arange(30) * 0.5, "label": np.arange(30) % 2, "h": np.arange(30) ** 2}
    ds = load_dataset(
        "csv", path=write_columns_csv(tmp_path / "t.csv", columns), target_column="label"
    )
    assert ds.feature_names == ("w", "h")  # header order, target left out
    _write_fake_mnist(tmp_path)
    ds = load_dataset("mnist", data_dir=str(tmp_path))
    assert ds.feature_names == tuple(f"pixel{i}" for i in range(784))


def test_module_constants_are_consistent():
    assert len(sources.FASHION_NAMES) == 10 and len(set(DATASETS)) == len(DATASETS)


def _prices_npz(tmp_path, n=200):
    """An npz whose integer target is a price: n distinct integers, each appearing once."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, 3))
    y = (100_000 + 20_000 * x[:, 0]).astype(np.int64) + np.arange(n)  # distinct: +row
    assert len(np.unique(y)) == n
    path = tmp_path / "prices.npz"
    np.savez(path, x=x, y=y)
    return str(path), y


def test_an_npz_of_integer_prices_is_refused_under_auto_and_regressed_when_asked(tmp_path):
    path, y = _prices_npz(tmp_path)
    with pytest.raises(ValueError, match="200 distinct values and 200 of them appear only once"):
        load_dataset("npz", path=path)
    ds = load_dataset("npz", path=path, task="regression")
    assert (ds.task, ds.num_outputs, ds.num_classes) == ("regression", 1, None)
    regressed = np.concatenate([ds.y_train, ds.y_val, ds.y_test]) * ds.y_scale + ds.y_mean
    np.testing.assert_allclose(np.sort(regressed[:, 0]), np.sort(y), rtol=1e-6)
    # told classification, it makes 200 classes of one example: no validation split is left
    with pytest.raises(ValueError, match="validation split is empty"):
        load_dataset("npz", path=path, task="classification")


def test_a_csv_task_overrides_what_auto_reads(tmp_path):
    rooms = {"area": np.arange(60) * 1.5, "rooms": np.arange(60) % 5 + 1}
    path = write_columns_csv(tmp_path / "rooms.csv", rooms)
    assert load_dataset("csv", path=path, target_column="rooms").num_classes == 5
    ds = load_dataset("csv", path=path, target_column="rooms", task="regression")
    assert (ds.task, ds.num_outputs) == ("regression", 1)
    with pytest.raises(ValueError, match="not integers .*task=regression"):
        load_dataset("csv", path=path, target_column="area", task="classification")


def test_a_built_in_set_takes_only_its_own_task():
    assert load_dataset("xor", task="classification").task == "classification"
    with pytest.raises(ValueError, match="task=regression was given for 'iris', a classification"):
        load_dataset("iris", task="regression")
    with pytest.raises(ValueError, match="task='numbers' is not one of"):
        load_dataset("iris", task="numbers")


@pytest.mark.parametrize("fractions", [(0.1, 0.2), (0.25, 0.35)])
def test_split_record_gives_the_fractions_and_sizes(fractions):
    ds = load_dataset("iris", val_fraction=fractions[0], test_fraction=fractions[1])
    sizes = (len(ds.x_train), len(ds.x_val), len(ds.x_test))
    assert sizes == {(0.1, 0.2): (105, 15, 30), (0.25, 0.35): (60, 38, 52)}[fractions]
    record = split_record(ds, *fractions)
    assert record == {
        "train": sizes[0],
        "val": sizes[1],
        "test": sizes[2],
        "val_fraction": fractions[0],
        "test_fraction": fractions[1],
        "test_source": "split",
    }


def test_split_record_says_when_the_data_bring_their_own_test_or_are_not_split(tmp_path):
    _write_fake_mnist(tmp_path)
    record = split_record(load_dataset("mnist", data_dir=str(tmp_path)), 0.1, 0.2)
    assert record == {
        "train": 45,
        "val": 5,
        "test": 20,
        "val_fraction": 0.1,
        "test_fraction": None,
        "test_source": "own",
    }
    record = split_record(load_dataset("xor"), 0.1, 0.2)
    assert (record["test_source"], record["val_fraction"], record["test_fraction"]) == (
        "all",
        None,
        None,
    )


def _train_and_test_csv(tmp_path, n_train=50, n_test=12, test_columns=None):
    rng = np.random.default_rng(2)
    train = {
        "a": np.round(rng.normal(size=n_train), 4),
        "label": [("cat", "dog")[i % 2] for i in range(n_train)],
        "b": np.round(rng.normal(size=n_train), 4),
    }
    test = {
        "b": np.round(rng.normal(size=n_test), 4),
        "a": np.round(rng.normal(size=n_test), 4),
        "label": [("dog", "cat", "cat")[i % 3] for i in range(n_test)],
    }
    test = test if test_columns is None else test_columns(test)
    return (
        write_columns_csv(tmp_path / "train.csv", train),
        write_columns_csv(tmp_path / "test.csv", test),
        train,
        test,
    )


def test_a_csv_brings_its_own_test_file_and_validation_comes_from_the_training_file(tmp_path):
    train_path, test_path, train, test = _train_and_test_csv(tmp_path)
    ds = load_dataset("csv", path=train_path, target_column="label", test_path=test_path)
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (45, 5, 12)
    assert ds.test_source == "own" and ds.feature_names == ("a", "b")
    # the test file's columns come in the training file's order
    expected = np.column_stack([test["a"], test["b"]])
    np.testing.assert_allclose(unstandardise(ds, ds.x_test), expected, rtol=1e-6)
    np.testing.assert_array_equal(ds.y_test[:, 0], [t == "dog" for t in test["label"]])
    rows = np.concatenate([unstandardise(ds, ds.x_train), unstandardise(ds, ds.x_val)])
    expected = np.column_stack([train["a"], train["b"]])
    distance = np.abs(rows[:, None, :] - expected[None, :, :]).max(axis=2)  # (50, 50)
    assert (distance.min(axis=0) < 1e-5).all() and (distance.min(axis=1) < 1e-5).all()
    record = split_record(ds, 0.1, 0.2)
    assert (record["test_source"], record["test_fraction"], record["test"]) == ("own", None, 12)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda t: {**t, "c": t["a"]}, r"its header adds \['c'\] against the training file"),
        (lambda t: {"a": t["a"], "label": t["label"]}, r"its header lacks \['b'\]"),
        (lambda t: {"a": t["a"], "b": t["b"]}, "target_column 'label' is not in the header"),
        (lambda t: {**t, "label": [1.0] * len(t["a"])}, "holds numbers, but in the training"),
    ],
    ids=["extra", "missing", "no-target", "numeric-target"],
)
def test_a_csv_test_file_with_other_columns_is_refused_by_name(tmp_path, change, match):
    train_path, test_path, _, _ = _train_and_test_csv(tmp_path, test_columns=change)
    with pytest.raises(ValueError, match=match) as error:
        load_dataset("csv", path=train_path, target_column="label", test_path=test_path)
    assert "test.csv" in str(error.value)


def test_a_test_file_is_for_csv_only(tmp_path):
    path, _ = _prices_npz(tmp_path)
    with pytest.raises(ValueError, match="test_path=.* was given for 'npz', but only csv use"):
        load_dataset("npz", path=path, test_path=path, task="regression")
