"""The TensorFlow network, its two losses, and the NumPy batch preparation feeding them.

Network (the same as SLIDE's and as the paper's ``example_full_softmax.py``)::

    sparse x (B x F) --sparse_dense_matmul--> W_0 (F x h_0) + b_0 --ReLU--> [dense h_i layers + ReLU]
                     --> logits = h @ W_out^T + b_out  (W_out is L x h_last, one row per label)

``W_out`` is stored label-major (``L x h``) because ``tf.nn.sampled_softmax_loss`` gathers rows of
it; the full softmax multiplies by its transpose (``matmul(..., transpose_b=True)``), so both
losses share one parameter layout and one checkpoint format. Weights are initialised as in the
reference scripts: truncated normal (cut at two standard deviations) with standard deviation
``2 / sqrt(fan_in + fan_out)`` for weights and biases alike, drawn with NumPy from the run seed.

Losses
------
``full``
    ``tf.nn.softmax_cross_entropy_with_logits`` against soft targets ``1/|y|`` on the true labels
    of each point (a point without labels contributes a zero loss), averaged over the batch: what
    the reference ``example_full_softmax.py`` computed. The dense ``B x L`` target matrix is
    built inside the graph with ``tf.scatter_nd`` from the CSR label batch.
``sampled``
    ``tf.nn.sampled_softmax_loss`` with ``num_sampled`` classes drawn once per batch by a TF
    candidate sampler (``log_uniform`` -- TensorFlow's default, used by the reference -- or
    ``uniform``). The true labels of each point are a ``B x num_true`` matrix made by
    :func:`true_label_matrix`; see there for the single- and multi-label rules.
"""

from __future__ import annotations

import numpy as np

from slide.data.dataset import take_rows
from slide.settings import FLOAT

from .device import import_tf


# ----------------------------------------------------------------------------- NumPy batch prep
def sparse_batch(data, rows: np.ndarray):
    """The CSR rows of ``data`` as ``tf.SparseTensor`` parts: ``(indices (nnz,2) int64, values float32)``.

    Vectorised: ``indices = [row ids repeated by row length, feature ids]``.
    """
    indptr, pos = take_rows(data.x_indptr, np.asarray(rows, dtype=np.int64))
    indices = np.empty((pos.shape[0], 2), dtype=np.int64)
    indices[:, 0] = np.repeat(np.arange(indptr.shape[0] - 1, dtype=np.int64), np.diff(indptr))
    indices[:, 1] = data.x_indices[pos]
    return indices, np.ascontiguousarray(data.x_data[pos], dtype=FLOAT)


def label_batch(data, rows: np.ndarray):
    """Labels of ``rows`` as ``(row ids int64, label ids int64, lengths int64)`` in CSR order."""
    indptr, pos = take_rows(data.y_indptr, np.asarray(rows, dtype=np.int64))
    lengths = np.diff(indptr)
    row_ids = np.repeat(np.arange(lengths.shape[0], dtype=np.int64), lengths)
    return row_ids, data.y_indices[pos].astype(np.int64), lengths


def soft_targets(data, rows: np.ndarray):
    """Sparse soft targets for the full softmax: ``(indices (m,2) int64, values 1/|y| float32)``."""
    row_ids, labels, lengths = label_batch(data, rows)
    indices = np.stack([row_ids, labels], axis=1)
    values = (1.0 / np.maximum(lengths, 1)).astype(FLOAT)[row_ids]
    return indices, values


def true_label_matrix(data, rows: np.ndarray, num_true: int, pad: str, dummy: int, rng: np.random.Generator):
    """The ``(B, num_true)`` int64 true-class matrix for ``tf.nn.sampled_softmax_loss`` and row weights.

    * A point with more than ``num_true`` labels keeps ``num_true`` of them drawn at random without
      replacement, redrawn at every visit (the reference's ``np.random.choice``). With
      ``num_true=1`` (``label_mode: single``) this is one random true label per point.
    * A point with ``0 < k < num_true`` labels is padded:

      - ``repeat``: its labels are repeated cyclically (``a b c a b c ...``). TensorFlow gives
        every true column the target ``1/num_true``, so a label written ``r`` times gets
        ``r/num_true``; that is exactly the full softmax's ``1/k`` when ``k`` divides
        ``num_true`` and within one copy of it otherwise. A repeated label also appears ``r``
        times in the sampled partition function, a small bias toward the point's own labels.
      - ``dummy``: the free columns hold the extra class ``dummy`` (= the number of labels), an
        output neuron that is trained but never ranked (the reference's padding); each real
        label then gets the target ``1/num_true`` and the dummy the rest.
    * A point without labels gets weight 0 (excluded from the batch mean) under ``repeat``, and
      ``num_true`` dummy columns (weight 1, as in the reference) under ``dummy``.

    Returns ``(labels (B, num_true) int64, weights (B,) float32)``.
    """
    row_ids, labels, lengths = label_batch(data, rows)
    b = len(lengths)
    # random order within each row: sort by (row, random key); rows stay contiguous and in order
    order = np.lexsort((rng.random(len(labels)), row_ids))
    starts = np.zeros(b, dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    rank = np.arange(len(labels), dtype=np.int64) - np.repeat(starts, lengths)
    keep = rank < num_true
    chosen = np.full((b, num_true), dummy, dtype=np.int64)
    chosen[row_ids[keep], rank[keep]] = labels[order][keep]
    count = np.minimum(lengths, num_true)
    weights = np.ones(b, dtype=FLOAT)
    if pad == "repeat":
        cols = np.arange(num_true, dtype=np.int64)[None, :] % np.maximum(count, 1)[:, None]
        chosen = np.take_along_axis(chosen, cols, axis=1)
        empty = count == 0
        chosen[empty] = 0
        weights[empty] = 0.0
    return chosen, weights


# ----------------------------------------------------------------------------- network
def _truncated_normal(rng: np.random.Generator, shape, std: float) -> np.ndarray:
    out = rng.standard_normal(shape, dtype=FLOAT)
    bad = np.abs(out) > 2.0
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()), dtype=FLOAT)
        bad = np.abs(out) > 2.0
    out *= FLOAT(std)
    return out


def init_weights(num_features: int, num_outputs: int, hidden, seed: int) -> dict:
    """Initial weights as NumPy arrays: ``w_0, b_0, ..., w_out (L x h), b_out``."""
    rng = np.random.default_rng([int(seed), 0x7F])
    sizes = [int(num_features)] + [int(h) for h in hidden]
    out = {}
    for i in range(len(hidden)):
        std = 2.0 / np.sqrt(sizes[i] + sizes[i + 1])
        out[f"w_{i}"] = _truncated_normal(rng, (sizes[i], sizes[i + 1]), std)
        out[f"b_{i}"] = _truncated_normal(rng, (sizes[i + 1],), std)
    std = 2.0 / np.sqrt(sizes[-1] + num_outputs)
    out["w_out"] = _truncated_normal(rng, (num_outputs, sizes[-1]), std)
    out["b_out"] = _truncated_normal(rng, (num_outputs,), std)
    return out


class Network:
    """Parameters as ``tf.Variable`` s plus the forward pass (call inside the right ``tf.device``)."""

    def __init__(self, num_features: int, num_outputs: int, hidden, seed: int):
        tf = import_tf()
        self.num_features = int(num_features)
        self.num_outputs = int(num_outputs)
        self.hidden = [int(h) for h in hidden]
        init = init_weights(num_features, num_outputs, self.hidden, seed)
        self.names = list(init)
        self.variables = [tf.Variable(init[k], name=k, trainable=True) for k in self.names]
        self.by_name = dict(zip(self.names, self.variables))

    def hidden_output(self, indices, values, batch):
        """Last hidden layer for a sparse batch given as SparseTensor parts."""
        tf = import_tf()
        x = tf.SparseTensor(indices, values, tf.stack([batch, tf.constant(self.num_features, tf.int64)]))
        h = tf.nn.relu(tf.sparse.sparse_dense_matmul(x, self.by_name["w_0"]) + self.by_name["b_0"])
        for i in range(1, len(self.hidden)):
            h = tf.nn.relu(tf.matmul(h, self.by_name[f"w_{i}"]) + self.by_name[f"b_{i}"])
        return h

    def logits(self, h):
        tf = import_tf()
        return tf.matmul(h, self.by_name["w_out"], transpose_b=True) + self.by_name["b_out"]


def full_softmax_loss(net: Network, indices, values, batch, y_indices, y_values):
    """Mean softmax cross-entropy against the soft targets ``1/|y|`` (see module docs)."""
    tf = import_tf()
    logits = net.logits(net.hidden_output(indices, values, batch))
    targets = tf.scatter_nd(y_indices, y_values, tf.stack([batch, tf.constant(net.num_outputs, tf.int64)]))
    return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=targets, logits=logits))


def sampled_softmax_loss(net: Network, indices, values, batch, labels, weights, *, num_sampled: int,
                         num_true: int, sampler: str, remove_accidental_hits: bool, seed: int):
    """Weighted mean of ``tf.nn.sampled_softmax_loss`` over the batch (see module docs)."""
    tf = import_tf()
    h = net.hidden_output(indices, values, batch)
    draw = (tf.random.log_uniform_candidate_sampler if sampler == "log_uniform"
            else tf.random.uniform_candidate_sampler)
    sampled = draw(true_classes=labels, num_true=num_true, num_sampled=num_sampled, unique=True,
                   range_max=net.num_outputs, seed=seed)
    per_row = tf.nn.sampled_softmax_loss(
        weights=net.by_name["w_out"], biases=net.by_name["b_out"], labels=labels, inputs=h,
        num_sampled=num_sampled, num_classes=net.num_outputs, num_true=num_true, sampled_values=sampled,
        remove_accidental_hits=remove_accidental_hits)
    return tf.reduce_sum(per_row * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)


# ----------------------------------------------------------------------------- memory model
#: TensorFlow runtime, Python and NumPy resident before any model is built (measured, TF 2.21 CPU).
TF_BASE_BYTES = 700 << 20


#: float32 copies of the parameters alive at the peak of a training step (weights, Adam's two
#: slots, the gradients and the temporaries of Keras' unfused Adam update). The sampled loss's
#: gradients of the output layer are IndexedSlices, which Keras' Adam applies with extra
#: full-size temporaries: more copies than the full loss.
PARAMS_FACTOR = {"full": 6.5, "sampled": 7.5}
#: Copies of weights and Adam slots the training loop's warm-up keeps while it runs one untimed
#: step (it restores the state afterwards; see :meth:`slide.adapter.Method.warm_up`).
WARMUP_COPIES = 3.0


def estimate_memory_bytes(num_features: int, num_outputs: int, hidden, batch_size: int, *, loss: str,
                          num_sampled: int = 0, num_true: int = 1, scoring_rows: int = 0,
                          params_factor: float | None = None, logits_factor: float = 3.0,
                          warmup_copies: float = WARMUP_COPIES) -> int:
    """Peak resident bytes of a training process, from the parameter count and the batch shape.

    ``params_factor`` (default :data:`PARAMS_FACTOR` of ``loss``) plus ``warmup_copies`` count the
    float32 copies of the parameters alive at the peak. ``logits_factor`` counts ``batch x
    outputs`` float32 buffers (logits, softmax/gradient, dense targets); the sampled loss has
    ``num_sampled + num_true`` outputs per row instead of ``L``, and as many gathered rows of the
    output weights (``width x hidden``, the same number of copies). Evaluation holds one
    ``scoring_rows x L`` logits block (and its top-k) instead of the batch buffers.

    Calibration (TF 2.21 CPU, 2 threads, batch 128, hidden [128], peak RSS of warm-up, two
    training batches and a prediction, synthetic data; estimate in parentheses, MiB):

    ============================  ============  ============  ===================
    features x labels             full          sampled 10%   sampled 1% / 40%
    ============================  ============  ============  ===================
    135,909 x 670,091 (Amazon)    4,647 (5,445) 4,307 (5,370)
    100 x 800,000                 4,749 (5,612) 4,576 (5,341) 4,417 (5,341) / -
    100 x 400,000                 2,719 (3,156) 2,594 (3,277) 2,544 / 2,929 (3,277)
    100 x 200,000                 -             1,665 (2,245)
    ============================  ============  ============  ===================

    The estimate stays above every measured peak, by 12-35% (the evaluation block of 512 MiB is
    the floor of the batch term). Without the warm-up the peaks are lower (100 x 800,000: full
    3,570, sampled 3,037): the warm-up holds about 3 more parameter copies. Fitted on the
    100-feature sampled runs, the peak is about 0.75 GiB + 9 parameter copies + 2.5 x num_sampled x
    (hidden + batch) x 4 bytes; at 6,000,000 labels that is 28 GiB, the process the kernel killed
    at 24 GB (issue 10); the estimate there is 33 GiB.
    """
    sizes = [int(num_features)] + [int(h) for h in hidden]
    params = sum(sizes[i] * sizes[i + 1] + sizes[i + 1] for i in range(len(hidden)))
    params += sizes[-1] * int(num_outputs) + int(num_outputs)
    factor = (PARAMS_FACTOR[loss] if params_factor is None else float(params_factor)) + float(warmup_copies)
    if loss == "full":
        per_batch = int(batch_size) * int(num_outputs) * 4 * logits_factor
    else:
        width = int(num_sampled) + int(num_true)
        per_batch = width * (int(batch_size) + sizes[-1]) * 4 * logits_factor
    scoring = int(scoring_rows) * int(num_outputs) * 4 * 2
    return int(TF_BASE_BYTES + params * 4 * factor + max(per_batch, scoring))


__all__ = ["Network", "full_softmax_loss", "sampled_softmax_loss", "sparse_batch", "soft_targets",
           "label_batch", "true_label_matrix", "init_weights", "estimate_memory_bytes"]
