"""Tests of jaxbp.data.files: new examples' features read from csv and npz, or refused."""

import gzip

import numpy as np
import pytest
from data_writers import id_npz, unstandardise, write_columns_csv, write_npz, write_text

from jaxbp.data import files, load_dataset
from jaxbp.data.files import read_features


def test_read_features_csv_in_any_column_order_ignores_other_columns(tmp_path):
    rng = np.random.default_rng(0)
    table = {"a": np.round(rng.normal(size=40), 4), "y": np.arange(40) % 2}
    table["b"] = np.round(rng.normal(size=40), 4)
    ds = load_dataset(
        "csv", path=write_columns_csv(tmp_path / "train.csv", table), target_column="y"
    )
    new = {"note": ["n"] * 5, "b": table["b"][:5], "a": table["a"][:5]}  # no target column
    x = read_features(write_columns_csv(tmp_path / "new.txt", new), ds.feature_names)
    assert x.dtype == np.float64
    np.testing.assert_array_equal(x, np.column_stack([table["a"][:5], table["b"][:5]]))


def test_read_features_npz_standardises_like_the_dataset(tmp_path):
    path, x, _ = id_npz(tmp_path)
    ds = load_dataset("npz", path=path, dtype=np.float64)
    new = read_features(path, ds.feature_names)
    np.testing.assert_array_equal(new, x)
    ids = np.rint(unstandardise(ds, ds.x_test)[:, 0]).astype(int)
    np.testing.assert_allclose((new[ids] - ds.x_mean) / ds.x_scale, ds.x_test, atol=1e-12)


def test_read_features_tells_npz_from_content_and_flattens(tmp_path):
    x = np.arange(24.0).reshape(3, 2, 4)
    path = tmp_path / "images.csv"  # misnamed: the zip signature decides
    with open(path, "wb") as f:  # a file object keeps np.savez from appending .npz
        np.savez(f, x=x, y=np.arange(3))
    out = read_features(str(path), [f"x{i}" for i in range(8)])
    np.testing.assert_array_equal(out, x.reshape(3, 8))
    bools = tmp_path / "bools.npz"
    np.savez(bools, x=np.array([[True, False]]))
    np.testing.assert_array_equal(read_features(str(bools), ("p", "q")), [[1.0, 0.0]])


# read_features errors.


def test_read_features_rejects_bad_feature_names(tmp_path):
    path = write_text(tmp_path / "f.csv", "a,b\n1,2\n")
    with pytest.raises(TypeError, match="got the string 'ab'"):
        read_features(path, "ab")
    with pytest.raises(ValueError, match="feature_names is empty"):
        read_features(path, [])
    with pytest.raises(ValueError, match=r"feature_names repeats \['a'\]"):
        read_features(path, ["a", "b", "a"])


def test_read_features_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="features file .*nothere.csv' does not exist"):
        read_features(str(tmp_path / "nothere.csv"), ["a"])


@pytest.mark.parametrize(
    "file, content, match",
    [
        ("f.npy", np.zeros((3, 2)).tobytes(), "is binary data of no known kind"),
        ("f.dat", gzip.compress(b"a,b\n1,2\n", mtime=0), "is gzip-compressed"),
        ("f.npz", b"", "is empty, not the zip archive an .npz is; .*name a csv file .csv"),
        ("f.npz", b"a,b\n1,2\n", r"is text \(a csv\?\), not the zip archive an \.npz is"),
        ("f.csv", b"\x00\x01\x02\x03", r"is binary data of no known kind; expected a csv"),
    ],
)
def test_read_features_wrong_kind_of_file(tmp_path, file, content, match):
    path = tmp_path / file
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"{file}' {match}"):
        read_features(str(path), ["a", "b"])


def test_read_features_npy_is_refused(tmp_path):
    np.save(tmp_path / "f.npy", np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"f.npy' is a \.npy file .*np.savez\(path, x=\.\.\.\)"):
        read_features(str(tmp_path / "f.npy"), ["a", "b"])


def test_read_features_csv_missing_columns_are_named(tmp_path):
    path = write_text(tmp_path / "f.csv", "b,y\n1,2\n")
    with pytest.raises(
        ValueError, match=r"lacks the feature column\(s\) \['a', 'c'\] .*\['b', 'y'\]"
    ):
        read_features(path, ["a", "b", "c"])


@pytest.mark.parametrize(
    "text, match",
    [
        ("a,b\n1,2\n3,x\n", r"feature column 'b' is not numeric \('x' on line 3\)"),
        ("a,b\n1,2\n,4\n", "feature column 'a' has empty cells on line 3"),
        ("a,b\n1,nan\n3,inf\n", "feature column 'b' has 2 NaN or infinite values, on lines 2, 3"),
        (
            "a,b\n1,2\n3,1e39\n",
            r"feature column 'b' has 1 values beyond float32's range \(±3.4e\+38\), on line 3",
        ),
        ("a,b,y\n", "has a header but no rows"),
        ("a,b,b\n1,2,3\n", r"names \['b'\] more than once"),
        ("a,b\n1,2\n3\n", "line 3 do not have 2 cells"),
    ],
)
def test_read_features_csv_bad_cells(tmp_path, text, match):
    path = write_text(tmp_path / "f.csv", text)
    with pytest.raises(ValueError, match=f"f.csv'.*{match}"):
        read_features(path, ["a", "b"])


@pytest.mark.parametrize(
    "arrays, match",
    [
        (
            {"x": np.zeros((4, 3))},
            r"x has shape \(4, 3\), 3 features per row; expected 2 \(\['a', 'b'\]\)",
        ),
        ({"x": np.zeros(2)}, r"one example is shape \(1, 2\)"),
        ({"x": np.zeros((0, 2))}, r"x has shape \(0, 2\); expected \(n, 2\) with n >= 1"),
        ({"features": np.zeros((4, 2))}, r"holds arrays \['features'\]; expected an array 'x'"),
        ({"x": np.array([[1.0, np.nan]])}, "x has 1 NaN or infinite values, in row 0 "),
        (
            {"x": np.array([[1.0, 2.0], [3.0, -1e39]])},
            r"x has 1 values beyond float32's range .*, first in row 1, column 1",
        ),
        ({"x": np.ones((3, 2)) * 1j}, "x is complex"),
        ({"x": np.array([["1", "2"]])}, "x has dtype <U1; expected numbers"),
    ],
)
def test_read_features_npz_errors(tmp_path, arrays, match):
    path = write_npz(tmp_path / "f.npz", **arrays)
    with pytest.raises(ValueError, match=f"f.npz'.*{match}"):
        read_features(path, ["a", "b"])


def test_read_column_keeps_the_cells_text(tmp_path):
    path = write_text(tmp_path / "f.csv", "id,a\n007,1\nx-2,2\n")
    np.testing.assert_array_equal(files.read_column(path, "id"), ["007", "x-2"])
    with pytest.raises(ValueError, match=r"no single column 'b' \(its header has"):
        files.read_column(path, "b")
    npz = write_npz(tmp_path / "f.npz", x=np.zeros((2, 1)), id=np.array([3, 4]))
    np.testing.assert_array_equal(files.read_column(npz, "id"), ["3", "4"])
