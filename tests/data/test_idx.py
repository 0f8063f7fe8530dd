"""Tests of jaxbp.data.idx: IDX files read back exactly, damaged ones refused in one line."""

import struct

import numpy as np
import pytest
from data_writers import write_idx

from jaxbp.data.idx import read_idx


def _gzip_bytes(tmp_path):
    write_idx(tmp_path / "labels.gz", np.arange(3000, dtype=np.uint8) % 10, gz=True)
    return (tmp_path / "labels.gz").read_bytes()


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
def test_read_idx_round_trip(tmp_path, dtype):
    array = (np.arange(24) - 5).reshape(2, 3, 4).astype(dtype) % 200
    write_idx(tmp_path / "a.idx", array, gz=dtype == np.int32)
    out = read_idx(str(tmp_path / "a.idx"))
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, array)


def test_read_idx_rejects_bad_magic_and_truncated_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x12\x34\x08\x01" + bytes(8))
    with pytest.raises(ValueError, match="magic number '12340801'"):
        read_idx(str(tmp_path / "bad"))
    write_idx(tmp_path / "ok", np.zeros((3, 4), np.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "ok").read_bytes()[:-1])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(str(tmp_path / "short"))
    with pytest.raises(FileNotFoundError, match="nothere"):
        read_idx(str(tmp_path / "nothere"))


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda b: b[: len(b) // 2], "ended before"),  # truncated: EOFError
        (lambda b: b[:12] + b"\xff" * 8 + b[20:], "Error -3"),  # corrupt stream: zlib.error
        (lambda b: b[:-8] + bytes([b[-8] ^ 0xFF]) + b[-7:], "CRC check failed"),  # BadGzipFile
    ],
)
def test_damaged_gzip_is_one_line(tmp_path, damage, reason):
    path = tmp_path / "damaged"
    path.write_bytes(damage(_gzip_bytes(tmp_path)))
    with pytest.raises(ValueError, match=f"'{path}' is a damaged gzip file \\(.*{reason}") as error:
        read_idx(str(path))
    assert "\n" not in str(error.value) and "fetch it again" in str(error.value)


def test_idx_header_cut_short_is_refused(tmp_path):
    path = tmp_path / "short"
    path.write_bytes(bytes([0, 0, 0x08, 3]) + struct.pack(">I", 60000))
    with pytest.raises(ValueError, match="promises 3 sizes but the file ends after 8 bytes"):
        read_idx(str(path))
