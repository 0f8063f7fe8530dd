"""Files for the data tests to read: IDX, csv and npz written from arrays, and a helper that
undoes a data set's standardisation."""

import gzip
import struct

import numpy as np

IDX_CODES = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}


def write_idx(path, array, gz=False):
    """Writes `array` in IDX format (big-endian header and data), gzipped if `gz`."""
    header = bytes([0, 0, IDX_CODES[array.dtype.str[1:]], array.ndim])
    header += struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(payload)
    return str(path)


def write_columns_csv(path, columns):
    """Writes `columns` (name -> list of cells) as a CSV with a header row."""
    lines = [",".join(columns)] + [
        ",".join(map(str, row)) for row in zip(*columns.values(), strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def write_text(path, text):
    path.write_text(text)
    return str(path)


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def id_npz(tmp_path, n=200, seed=0):
    """An npz whose first feature is the row id, so splits can be traced back to rows."""
    rng = np.random.default_rng(seed)
    x = np.column_stack([np.arange(n), rng.normal(5.0, 3.0, n), np.full(n, 7.0)])
    y = 2.0 * x[:, 1] + rng.normal(size=n)  # regression target
    path = tmp_path / "ids.npz"
    np.savez(path, x=x, y=y)
    return str(path), x, y


def unstandardise(ds, x):
    """Undoes the standardisation of `x`."""
    return x * ds.x_scale + ds.x_mean
