"""The in-memory container every method reads: CSR features and CSR labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class XCDataset:
    """A multi-label dataset in CSR form.

    Attributes
    ----------
    x_indptr : int64 array, shape (n + 1,)
    x_indices : int32 array, feature ids, 0-based
    x_data : float32 array, feature values
    y_indptr : int64 array, shape (n + 1,)
    y_indices : int32 array, label ids, 0-based
    num_features, num_labels : int
        Dimensions declared by the file header.
    """

    x_indptr: np.ndarray
    x_indices: np.ndarray
    x_data: np.ndarray
    y_indptr: np.ndarray
    y_indices: np.ndarray
    num_features: int
    num_labels: int

    def __len__(self) -> int:
        return len(self.x_indptr) - 1

    @property
    def nnz(self) -> int:
        return int(self.x_indptr[-1])

    def subset(self, rows) -> "XCDataset":
        """Return the points ``rows`` (any order, repeats allowed) as a new dataset."""
        rows = np.asarray(rows, dtype=np.int64)
        xp, xi = take_rows(self.x_indptr, rows)
        yp, yi = take_rows(self.y_indptr, rows)
        return XCDataset(xp, self.x_indices[xi], self.x_data[xi], yp, self.y_indices[yi],
                         self.num_features, self.num_labels)

    def to_dense_labels(self, rows=None) -> np.ndarray:
        """Dense 0/1 float32 label matrix for ``rows``; only for small tests."""
        sub = self if rows is None else self.subset(rows)
        out = np.zeros((len(sub), sub.num_labels), dtype=np.float32)
        r = np.repeat(np.arange(len(sub)), np.diff(sub.y_indptr))
        out[r, sub.y_indices] = 1.0
        return out

    def to_dense_features(self, rows=None) -> np.ndarray:
        """Dense float32 feature matrix for ``rows``; only for small tests."""
        sub = self if rows is None else self.subset(rows)
        out = np.zeros((len(sub), sub.num_features), dtype=np.float32)
        r = np.repeat(np.arange(len(sub)), np.diff(sub.x_indptr))
        out[r, sub.x_indices] = sub.x_data
        return out


def row_lengths(indptr, rows):
    """The number of entries of each of ``rows`` (an int64 array) in a CSR matrix with ``indptr``."""
    return indptr[rows + 1] - indptr[rows]


def take_rows(indptr, rows):
    """New indptr and the flat positions of the entries of ``rows`` (vectorised gather).

    Every method's batch preparation gathers CSR rows with this (features and labels alike).
    """
    lengths = row_lengths(indptr, rows)
    new_indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_indptr[1:])
    starts = np.repeat(indptr[rows] - new_indptr[:-1], lengths)
    positions = starts + np.arange(new_indptr[-1], dtype=np.int64)
    return new_indptr, positions
