"""XC split files, train/test loading and the fixed shuffled test order.

A split file (``bibtex_trSplit.txt``) has one line per selected record and one
whitespace-separated column per random split; entries are 1-based record numbers
(1 = first record after the header). ``column`` is 1-based as in the XC docs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slide.data.cache import load_xc
from slide.data.dataset import XCDataset
from slide.errors import ConfigError, DatasetFormatError
from slide.io import atomic_path, read_regular_file

__all__ = ["read_split", "load_split", "load_train_test", "test_order", "write_test_order",
           "load_test_order", "refuse_empty", "TEST_ORDER_FILE", "TEST_ORDER_SEED"]

#: File name of the shuffled test order written by ``fetch`` and ``prepare``.
TEST_ORDER_FILE = "test_order.npy"
#: Seed of the shuffled test order.
TEST_ORDER_SEED = 0


def _read_split_lines(path, column: int):
    path = Path(path)
    if isinstance(column, bool) or not isinstance(column, (int, np.integer)) or column < 1:
        raise DatasetFormatError(path, None, f"split column must be an integer >= 1, got {column!r}")
    raw = read_regular_file(path, "split file").tobytes()  # one line if missing, a folder, a FIFO...
    if not raw.strip():
        raise DatasetFormatError(path, 1, "empty split file")
    text = raw.decode("ascii", errors="replace")
    lines = text.split("\n")
    if lines and lines[-1].strip() == "":
        lines.pop()
    values = np.empty(len(lines), dtype=np.int64)
    ncols = None
    for i, line in enumerate(lines):
        parts = line.split()
        if not parts:
            raise DatasetFormatError(path, i + 1, "blank line in split file")
        if ncols is None:
            ncols = len(parts)
            if column > ncols:
                raise DatasetFormatError(
                    path, i + 1, f"split column {column} requested but the file has {ncols} columns")
        elif len(parts) != ncols:
            raise DatasetFormatError(path, i + 1, f"expected {ncols} columns, found {len(parts)}")
        tok = parts[column - 1]
        if not (tok.isascii() and tok.isdigit()):
            raise DatasetFormatError(path, i + 1, f"non-numeric record number {tok!r} in column {column}")
        v = int(tok)
        if v < 1:
            raise DatasetFormatError(path, i + 1, f"record number {v} in column {column} is not 1-based (>= 1)")
        values[i] = v - 1
    order = np.argsort(values, kind="stable")
    dup = np.nonzero(values[order][1:] == values[order][:-1])[0]
    if len(dup):
        second = int(order[dup[0] + 1])
        raise DatasetFormatError(path, second + 1,
                                 f"record number {values[second] + 1} repeated in column {column}")
    return values


def read_split(path, column: int = 1, num_records: int | None = None) -> np.ndarray:
    """0-based int64 record indices from column ``column`` (1-based) of an XC split file.

    With ``num_records`` every index is also checked to name an existing record.
    """
    values = _read_split_lines(path, column)
    if num_records is not None:
        bad = np.nonzero(values >= num_records)[0]
        if len(bad):
            i = int(bad[0])
            raise DatasetFormatError(
                path, i + 1, f"record number {values[i] + 1} exceeds the {num_records} records of the data file")
    return values


def load_split(data_path, split_path, column: int = 1, cache: bool = True) -> XCDataset:
    """``load_xc(data_path)`` restricted to the records listed in ``split_path``."""
    ds = load_xc(data_path, cache=cache)
    return ds.subset(read_split(split_path, column, num_records=len(ds)))


def load_train_test(train, test, train_split=None, test_split=None, split_column: int = 1,
                    cache: bool = True) -> tuple[XCDataset, XCDataset]:
    """Load a train and a test set.

    Either two XC files (Delicious/Amazon style), or one data file given as both
    ``train`` and ``test`` with split files selecting the records (Bibtex style); each
    split applies to its own file. The two sets must declare the same dimensions, and
    neither may be empty (0 points is refused with one line naming the file).
    """
    same = Path(train).resolve() == Path(test).resolve()
    if same and (train_split is None or test_split is None):
        raise ConfigError(
            f"train and test are the same file ({test}): both a train and a test split file are needed")
    train_ds = load_xc(train, cache=cache)
    test_ds = train_ds if same else load_xc(test, cache=cache)
    if (test_ds.num_features, test_ds.num_labels) != (train_ds.num_features, train_ds.num_labels):
        raise DatasetFormatError(
            test, 1, f"header declares {test_ds.num_features} features and {test_ds.num_labels} labels "
                     f"but the train file {train} declares {train_ds.num_features} and {train_ds.num_labels}")
    if train_split is not None:
        train_out = train_ds.subset(read_split(train_split, split_column, num_records=len(train_ds)))
    else:
        train_out = train_ds
    if test_split is not None:
        test_out = test_ds.subset(read_split(test_split, split_column, num_records=len(test_ds)))
    else:
        test_out = test_ds
    refuse_empty("train", len(train_out), train)
    refuse_empty("test", len(test_out), test)
    return train_out, test_out


def refuse_empty(what: str, n_points: int, path) -> None:
    """Raise a one-line error naming ``path`` when the ``what`` set (train or test) is empty.

    A 0-point file is valid XC (the reader accepts it) but cannot be trained or
    evaluated on: training would do nothing and report P@k over 0 points as completed.
    """
    if n_points == 0:
        raise DatasetFormatError(path, None, f"the {what} set has 0 points; nothing to "
                                             f"{'train on' if what == 'train' else 'evaluate on'}")


def test_order(n: int, seed: int = TEST_ORDER_SEED) -> np.ndarray:
    """Fixed shuffled order of ``n`` test points: an int64 permutation of range(n).

    The official XC test files are sorted by label, so evaluations on a prefix of the
    test set must take it in this order: ``test.subset(test_order(len(test))[:k])``.
    """
    return np.random.default_rng(seed).permutation(int(n)).astype(np.int64)


test_order.__test__ = False  # not a pytest test despite the name


def write_test_order(path, n: int, seed: int = TEST_ORDER_SEED) -> Path:
    """Write :func:`test_order` ``(n, seed)`` to ``path`` (``.npy``) atomically."""
    path = Path(path)
    order = test_order(n, seed)
    with atomic_path(path, suffix=".npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, order, allow_pickle=False)
    return path


def load_test_order(path, n: int | None = None) -> np.ndarray:
    """Read a test order file and check it is a permutation (of ``range(n)`` if given)."""
    path = Path(path)
    try:
        order = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DatasetFormatError(path, None, "no such file") from None
    except (ValueError, OSError) as exc:
        raise DatasetFormatError(path, None, f"unreadable test order: {exc}") from None
    if order.ndim != 1 or order.dtype != np.int64:
        raise DatasetFormatError(path, None, f"test order must be a 1-D int64 array, got {order.dtype} {order.shape}")
    if n is not None and len(order) != n:
        raise DatasetFormatError(path, None, f"test order has {len(order)} entries but the test set has {n} points")
    if not np.array_equal(np.sort(order), np.arange(len(order))):
        raise DatasetFormatError(path, None, "test order is not a permutation")
    return order
