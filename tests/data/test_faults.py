"""Tests for jaxbp.data's refusals: each bad input gets one line naming the file and the fix."""

import gzip
import io
import os
import zipfile

import numpy as np
import pytest
from data_writers import write_idx, write_npz, write_text

from jaxbp.data import load_dataset, sources


def _write_mnist(directory, train_labels=None, train_images=None, n_test=20):
    """A fake MNIST in `directory`; the given arrays replace the training labels or images."""
    rng = np.random.default_rng(0)
    if train_labels is None:
        train_labels = np.arange(50, dtype=np.uint8) % 10
    if train_images is None:
        train_images = rng.integers(0, 256, (len(train_labels), 28, 28), dtype=np.uint8)
    arrays = {
        "train-images-idx3-ubyte": train_images,
        "train-labels-idx1-ubyte": train_labels,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(n_test, dtype=np.uint8) % 10,
    }
    for file, array in arrays.items():
        write_idx(os.path.join(directory, file), array)
    return str(directory)


def _numeric_csv(path, n=40, target_cells=None, feature_cells=None):
    """A csv `a,b,price` of n rows; the given dicts {row: cell} overwrite cells of price or a."""
    rng = np.random.default_rng(0)
    lines = ["a,b,price"]
    for i in range(n):
        a = (feature_cells or {}).get(i, f"{rng.normal():.4f}")
        price = (target_cells or {}).get(i, f"{100 * rng.normal():.3f}")
        lines.append(f"{a},{i % 3},{price}")
    return write_text(path, "\n".join(lines) + "\n")


# IDX (MNIST) files.


def test_idx_label_minus_one_is_refused_not_read_as_class_nine(tmp_path):
    labels = (np.arange(50) % 10).astype(np.int8)
    labels[7] = -1  # formerly one-hot class 9, through negative indexing
    directory = _write_mnist(tmp_path, train_labels=labels)
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte' holds 1 labels outside 0\.\.9"):
        load_dataset("mnist", data_dir=directory)
    with pytest.raises(ValueError, match=r"e\.g\. -1 in row 7\); expected class indices 0\.\.9"):
        load_dataset("mnist", data_dir=directory)


def test_idx_label_ten_is_refused(tmp_path):
    labels = np.arange(50, dtype=np.uint8) % 10
    labels[3:5] = 10
    directory = _write_mnist(tmp_path, train_labels=labels)
    with pytest.raises(ValueError, match=r"holds 2 labels outside 0\.\.9 \(e\.g\. 10 in rows 3, 4"):
        load_dataset("fashion_mnist", data_dir=directory)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_idx_float_labels_are_refused(tmp_path, dtype):
    directory = _write_mnist(tmp_path, train_labels=(np.arange(50) % 10).astype(dtype))
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte' holds float.*integer labels"):
        load_dataset("mnist", data_dir=directory)


def test_idx_label_and_image_counts_must_match(tmp_path):
    directory = _write_mnist(tmp_path, train_images=np.zeros((49, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="holds 49 images but .*train-labels.* holds 50 labels"):
        load_dataset("mnist", data_dir=directory)


def test_idx_nan_image_is_refused(tmp_path):
    images = np.random.default_rng(0).random((50, 28, 28)).astype(np.float32)
    images[4, 3, 2] = np.nan
    directory = _write_mnist(tmp_path, train_images=images)
    with pytest.raises(
        ValueError, match=r"train-images-idx3-ubyte': the image array has 1 NaN .* row 4 "
    ):
        load_dataset("mnist", data_dir=directory)


def test_idx_test_images_of_another_size_are_refused(tmp_path):
    directory = _write_mnist(tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((20, 14, 14), np.uint8))
    with pytest.raises(ValueError, match=r"holds \(14, 14\) images but .* \(28, 28\)"):
        load_dataset("mnist", data_dir=directory)


def test_single_class_mnist_is_refused(tmp_path):
    directory = _write_mnist(tmp_path, train_labels=np.full(50, 3, np.uint8))
    with pytest.raises(ValueError, match="all 50 training examples have label '3'.*two classes"):
        load_dataset("mnist", data_dir=directory)


def _gzip_bytes(tmp_path):
    write_idx(tmp_path / "labels.gz", np.arange(3000, dtype=np.uint8) % 10, gz=True)
    return (tmp_path / "labels.gz").read_bytes()


def test_damaged_gzip_in_mnist_dir_names_the_file(tmp_path):
    directory = _write_mnist(tmp_path)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte")
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(_gzip_bytes(tmp_path)[:40])
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz' is a damaged gzip file"):
        load_dataset("mnist", data_dir=directory)


# csv files.


def test_csv_numeric_target_with_a_non_numeric_cell_is_refused(tmp_path):
    path = _numeric_csv(tmp_path / "t.csv", target_cells={5: "n/a", 9: "?"})
    with pytest.raises(
        ValueError,
        match=r"t.csv': target column 'price' is numeric but has non-numeric cells "
        r"\('n/a' on line 7, '\?' on line 11\); fix or drop those rows",
    ):
        load_dataset("csv", path=path, target_column="price")


def test_csv_target_with_no_numeric_cell_is_class_names(tmp_path):
    path = write_text(
        tmp_path / "t.csv", "a,kind\n" + "".join(f"{i},k{i % 2}\n" for i in range(20))
    )
    ds = load_dataset("csv", path=path, target_column="kind")
    assert (ds.task, ds.class_names) == ("classification", ("k0", "k1"))


@pytest.mark.parametrize("cell", ["nan", "NaN", "inf", "-Infinity"])
def test_csv_non_finite_target_is_refused(tmp_path, cell):
    path = _numeric_csv(tmp_path / "t.csv", target_cells={2: cell})
    with pytest.raises(
        ValueError, match="target column 'price' has 1 NaN or infinite values, on line 4;"
    ):
        load_dataset("csv", path=path, target_column="price")


def test_csv_empty_target_cell_is_refused(tmp_path):
    path = _numeric_csv(tmp_path / "t.csv", target_cells={0: ""})
    with pytest.raises(ValueError, match="target column 'price' has empty cells on line 2;"):
        load_dataset("csv", path=path, target_column="price")


@pytest.mark.parametrize("cell", ["nan", "inf", "-inf"])
def test_csv_non_finite_feature_is_refused(tmp_path, cell):
    path = _numeric_csv(tmp_path / "t.csv", feature_cells={3: cell, 30: cell})
    with pytest.raises(
        ValueError, match="feature column 'a' has 2 NaN or infinite values, on lines 5, 32;"
    ):
        load_dataset("csv", path=path, target_column="price")


def test_csv_empty_feature_cell_is_refused(tmp_path):
    path = _numeric_csv(tmp_path / "t.csv", feature_cells={1: ""})
    with pytest.raises(
        ValueError, match="feature column 'a' has empty cells on line 3; .*Fill them"
    ):
        load_dataset("csv", path=path, target_column="price")


def test_csv_non_numeric_feature_names_the_cell(tmp_path):
    path = _numeric_csv(tmp_path / "t.csv", feature_cells={6: "abc"})
    with pytest.raises(ValueError, match=r"feature column 'a' is not numeric \('abc' on line 8\)"):
        load_dataset("csv", path=path, target_column="price")


def test_csv_duplicate_columns_are_refused(tmp_path):
    path = write_text(tmp_path / "t.csv", "a,y,b,a,y\n" + "1,0,2,3,0\n1,1,2,3,1\n" * 10)
    with pytest.raises(ValueError, match=r"t.csv': the header names \['a', 'y'\] more than once"):
        load_dataset("csv", path=path, target_column="y")


def test_csv_that_is_not_utf8_text_is_refused(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"name,y\n" + "café,1\n".encode("latin-1") * 3)
    with pytest.raises(ValueError, match=r"latin1.csv' is not UTF-8 text .*Save it as UTF-8"):
        load_dataset("csv", path=str(path), target_column="y")


def test_npz_passed_as_csv_is_refused(tmp_path):
    path = write_npz(tmp_path / "d.npz", x=np.zeros((4, 2)), y=np.arange(4))
    with pytest.raises(ValueError, match=r"d.npz' is a zip archive .*load_dataset\('npz'"):
        load_dataset("csv", path=path, target_column="y")


def test_csv_ragged_lines_are_numbered_in_the_file(tmp_path):
    path = write_text(tmp_path / "t.csv", "a,y\n1,0\n\n2,1\n3\n4,1\n")  # a blank line 3
    with pytest.raises(ValueError, match="t.csv': line 5 do"):
        load_dataset("csv", path=path, target_column="y")


def test_csv_with_only_the_target_is_refused(tmp_path):
    path = write_text(tmp_path / "t.csv", "y\n1\n2\n")
    with pytest.raises(ValueError, match="only the target column 'y'; expected feature columns"):
        load_dataset("csv", path=path, target_column="y")


def test_single_class_csv_is_refused(tmp_path):
    path = write_text(tmp_path / "t.csv", "a,y\n" + "".join(f"{i},same\n" for i in range(20)))
    with pytest.raises(
        ValueError, match="t.csv': all 20 training examples have label 'same'; classification "
    ):
        load_dataset("csv", path=path, target_column="y")


# npz files.


@pytest.mark.parametrize("key", ["x", "y"])
def test_npz_nan_is_refused_naming_the_array_and_rows(tmp_path, key):
    rng = np.random.default_rng(0)
    arrays = {"x": rng.normal(size=(50, 3)), "y": rng.normal(size=50)}
    arrays[key][[4, 17]] = np.nan  # rows that could land in validation: NaN val_loss, no error
    path = write_npz(tmp_path / "d.npz", **arrays)
    with pytest.raises(ValueError, match=rf"d.npz': array '{key}' has \d NaN .* rows 4, 17 "):
        load_dataset("npz", path=path)


def test_npz_inf_in_own_test_split_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    x_test = rng.normal(size=(10, 2))
    x_test[9, 1] = -np.inf
    path = write_npz(
        tmp_path / "d.npz",
        x_train=rng.normal(size=(40, 2)),
        y_train=np.arange(40) % 2,
        x_test=x_test,
        y_test=np.arange(10) % 2,
    )
    with pytest.raises(ValueError, match="array 'x_test' has 1 NaN or infinite values, in row 9 "):
        load_dataset("npz", path=path)


@pytest.mark.parametrize("key", ["x", "y"])
def test_npz_complex_is_refused(tmp_path, key):
    arrays = {"x": np.ones((20, 2)), "y": np.arange(20.0) ** 1.5}
    arrays[key] = arrays[key] + 1j
    path = write_npz(tmp_path / "d.npz", **arrays)
    with pytest.raises(ValueError, match=f"array '{key}' is complex .*np.real, np.imag"):
        load_dataset("npz", path=path)


def test_npz_string_features_are_refused_and_bools_accepted(tmp_path):
    y = np.arange(20) % 2
    path = write_npz(tmp_path / "s.npz", x=np.array([["1", "2"]] * 20), y=y)
    with pytest.raises(ValueError, match=r"array 'x' has dtype <U1; expected numbers \(bool"):
        load_dataset("npz", path=path)
    x = np.stack([np.arange(20) % 3 == 0, np.arange(20) % 2 == 0], axis=1)
    ds = load_dataset("npz", path=write_npz(tmp_path / "b.npz", x=x, y=y), dtype=np.float64)
    raw = ds.x_train * ds.x_scale + ds.x_mean
    np.testing.assert_allclose(np.sort(np.unique(raw.round(12))), [0.0, 1.0])


def test_npz_single_class_is_refused(tmp_path):
    path = write_npz(tmp_path / "d.npz", x=np.ones((20, 2)), y=np.eye(3)[np.zeros(20, int)])
    with pytest.raises(ValueError, match="all 20 training examples have label '0'.*two classes"):
        load_dataset("npz", path=path)


def _npy_bytes(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "content, match",
    [
        (_npy_bytes(np.zeros((4, 2))), r"is a \.npy file of one array; expected an \.npz"),
        (b"x,y\n1,2\n", r"is text \(a csv\?\); expected an \.npz archive"),
        (bytes(range(1, 256)), "is binary data of no known kind"),
        (b"", "is empty; expected an .npz"),
        (gzip.compress(b"123", mtime=0), "is gzip-compressed; expected an .npz"),
        (b"PK but no archive", r"is a damaged \.npz archive \(not a zip archive\)"),
    ],
)
def test_wrong_kind_of_file_as_npz_is_refused(tmp_path, content, match):
    path = tmp_path / "data.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"data.npz' {match}") as error:
        load_dataset("npz", path=str(path))
    assert "np.savez" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda b: b[: len(b) - 40], "File is not a zip file"),  # truncated: BadZipFile
        (lambda b: b[:60] + b"\xff" * 8 + b[68:], r"array 'x': Error -3"),  # zlib.error
    ],
)
def test_damaged_npz_is_refused(tmp_path, damage, reason):
    path = tmp_path / "d.npz"
    np.savez_compressed(path, x=np.random.default_rng(0).random((500, 3)), y=np.arange(500))
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ValueError, match=f"d.npz' is a damaged .npz archive \\({reason}"):
        load_dataset("npz", path=str(path))


def test_npz_corrupt_member_crc_is_refused(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((50, 3)), y=np.arange(50) % 2)
    content = bytearray(path.read_bytes())
    content[200:210] = b"\xff" * 10  # inside x's data: the zip CRC no longer matches
    path.write_bytes(bytes(content))
    with pytest.raises(ValueError, match="damaged .npz archive \\(array 'x': Bad CRC-32"):
        load_dataset("npz", path=str(path))


def test_npz_member_that_is_not_an_array_is_refused(tmp_path):
    path = tmp_path / "d.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x", b"not an array")
        archive.writestr("y.npy", _npy_bytes(np.arange(4)))
    with pytest.raises(ValueError, match=r"damaged \.npz archive \(member 'x' is not a \.npy"):
        load_dataset("npz", path=str(path))


def test_npz_empty_arrays_are_refused(tmp_path):
    path = write_npz(tmp_path / "d.npz", x=np.zeros((0, 3)), y=np.zeros(0))
    with pytest.raises(ValueError, match=r"array 'x' has shape \(0, 3\); expected one row"):
        load_dataset("npz", path=path)


def test_npz_train_and_test_widths_must_match(tmp_path):
    path = write_npz(
        tmp_path / "d.npz",
        x_train=np.ones((20, 3)),
        y_train=np.arange(20) % 2,
        x_test=np.ones((5, 4)),
        y_test=np.arange(5) % 2,
    )
    with pytest.raises(ValueError, match=r"differ past the first axis"):
        load_dataset("npz", path=path)


# Generated sets: cannot hold NaN today; the check keeps it so whatever the generator does.


@pytest.mark.parametrize("field", ["x", "y"])
def test_non_finite_generated_data_is_refused(monkeypatch, field):
    def broken_teacher(request):
        n = request.num_samples
        raw = sources.Raw(np.ones((n, 3)), np.ones((n, 1)), "regression")
        getattr(raw, field)[2, 0] = np.inf
        return raw

    teacher = sources.SOURCES["teacher"]._replace(load=broken_teacher)
    monkeypatch.setitem(sources.SOURCES, "teacher", teacher)
    with pytest.raises(ValueError, match=f"dataset 'teacher': {field} has 1 NaN .* row 2 "):
        load_dataset("teacher", num_samples=50)


def test_single_class_generated_set_is_refused():
    with pytest.raises(ValueError, match="'moons': all 1 training examples .*num_samples >= 2"):
        load_dataset("moons", num_samples=1)


# Arguments that do not apply.


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            {"name": "iris", "path": "x.csv"},
            "path='x.csv' was given for 'iris', but only npz and csv",
        ),
        ({"name": "mnist", "path": "x.npz"}, "path='x.npz' was given for 'mnist'"),
        ({"name": "npz", "path": "x.npz", "target_column": "y"}, "target_column='y' .* only csv"),
        ({"name": "digits", "target_column": "y"}, "target_column='y' was given for 'digits'"),
        ({"name": "csv", "data_dir": "/d"}, "data_dir='/d' was given for 'csv', but only mnist"),
        ({"name": "moons", "data_dir": "/d"}, "data_dir='/d' .*; drop it for 'moons'"),
    ],
)
def test_arguments_that_do_not_apply_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_dataset(**kwargs)
