"""The PyTorch network, its two losses, the NumPy batch preparation and the memory model.

Network (the same as SLIDE's and as the TensorFlow baselines')::

    sparse x (B x F) --> x @ W_0 (F x h_0) + b_0 --ReLU--> [dense h_i layers + ReLU]
                     --> logits = h @ W_out^T + b_out  (W_out is L x h_last, one row per label)

The parameters have the TF baselines' names, shapes, layout and initial values (the same
:func:`baselines.tf.model.init_weights`, NumPy only), so a TF and a torch run from one seed start
from the same weights. The batch preparation is also shared (``sparse_batch``, ``label_batch``,
``true_label_matrix`` of :mod:`baselines.tf.model`, which import no TensorFlow).

Sparse input, three ways (``input`` key; measured in ``baselines/README.md``)
-----------------------------------------------------------------------------
``bag`` (default)
    ``torch.nn.functional.embedding_bag(feature ids, W_0, offsets, per_sample_weights=values,
    mode='sum')``: row ``i`` of ``x @ W_0`` is the value-weighted sum of the rows of ``W_0`` its
    features select -- a gather of the batch's rows of ``W_0``, no densified input.
``sparse``
    a ``torch.sparse_coo_tensor`` batch (``B x F``) times ``W_0`` with ``torch.sparse.mm``.
``gathered``
    the batch's distinct features ``U`` gathered into a dense ``B x |U|`` block, times
    ``W_0[U]`` (``index_select``).

Losses
------
``full``
    cross-entropy against the soft targets ``1/|y|`` on the true labels of each point, averaged
    over the batch (a point without labels contributes 0), computed without a dense target
    matrix: ``loss_i = logsumexp(z_i) * sum_j t_ij - sum_j t_ij z_ij`` over the point's labels.
``sampled``
    sampled softmax with the log-Q correction (Jean et al. 2015; Bengio and Senecal 2008) and
    several true labels per point: see :func:`sampled_softmax_loss`.
"""

from __future__ import annotations

import numpy as np

from baselines.tf.model import init_weights, label_batch, true_label_matrix  # NumPy only, no TensorFlow
from slide.data.dataset import take_rows
from slide.settings import FLOAT

from .device import import_torch

NEG = -1e9  # logit of a masked column: finite, so a 0 target times it stays 0


# ----------------------------------------------------------------------------- NumPy batch prep
def csr_batch(data, rows: np.ndarray):
    """The CSR rows of ``data``: ``(row ids int64, feature ids int64, values float32, offsets int64)``."""
    indptr, pos = take_rows(data.x_indptr, np.asarray(rows, dtype=np.int64))
    row_ids = np.repeat(np.arange(indptr.shape[0] - 1, dtype=np.int64), np.diff(indptr))
    feats = data.x_indices[pos].astype(np.int64)
    values = np.ascontiguousarray(data.x_data[pos], dtype=FLOAT)
    return row_ids, feats, values, indptr[:-1].copy()


def full_targets(data, rows: np.ndarray):
    """Soft targets of the full softmax as pairs: ``(row ids int64, label ids int64, 1/|y| float32)``."""
    row_ids, labels, lengths = label_batch(data, rows)
    return row_ids, labels, (1.0 / np.maximum(lengths, 1)).astype(FLOAT)[row_ids]


def draw_candidates(num_labels: int, num_sampled: int, sampler: str, rng: np.random.Generator):
    """``num_sampled`` candidate classes for one batch and the log of their expected counts.

    * ``uniform``: distinct classes, drawn without replacement; each is in the sample with
      probability ``S/L``, its expected count.
    * ``log_uniform``: TensorFlow's ``log_uniform_candidate_sampler`` law ``P(c) = log((c+2)/(c+1))
      / log(L+1)`` (it assumes ids sorted by frequency), ``S`` draws with replacement; expected
      count ``S P(c)``.
    """
    L, S = int(num_labels), int(num_sampled)
    if sampler == "uniform":
        ids = np.sort(rng.choice(L, size=S, replace=False)).astype(np.int64)
        return ids, np.full(S, np.log(S / L), dtype=FLOAT)
    ids = np.clip(np.floor(np.exp(rng.random(S) * np.log(L + 1.0))).astype(np.int64) - 1, 0, L - 1)
    return ids, log_expected_count(ids, L, S, sampler)


def log_expected_count(ids: np.ndarray, num_labels: int, num_sampled: int, sampler: str) -> np.ndarray:
    """log of the expected count of classes ``ids`` in a sample (the log-Q of the correction)."""
    ids = np.asarray(ids, dtype=np.float64)
    if sampler == "uniform":
        return np.full(ids.shape, np.log(num_sampled / num_labels), dtype=FLOAT)
    p = np.log((ids + 2.0) / (ids + 1.0)) / np.log(num_labels + 1.0)
    return np.log(num_sampled * p).astype(FLOAT)


def accidental_hits(data, rows: np.ndarray, sampled: np.ndarray):
    """``(row, position)`` pairs where candidate ``sampled[position]`` is a true label of point ``rows[row]``.

    Every label of the point counts, also those not among its ``num_true`` columns this visit.
    """
    row_ids, labels, _ = label_batch(data, rows)
    order = np.argsort(sampled, kind="stable")
    ss = sampled[order]
    lo = np.searchsorted(ss, labels, "left")
    n = np.searchsorted(ss, labels, "right") - lo
    total = int(n.sum())
    offsets = np.zeros(len(n) + 1, dtype=np.int64)
    np.cumsum(n, out=offsets[1:])
    pos = order[np.repeat(lo - offsets[:-1], n) + np.arange(total, dtype=np.int64)]
    return np.repeat(row_ids, n), pos.astype(np.int64)


def sampled_targets(data, rows, num_true: int, num_labels: int, rng: np.random.Generator):
    """True columns of the sampled loss: ``(labels (B, T) int64 with L as padding, counts (B,) int64)``.

    A point keeps ``min(|y|, T)`` of its labels, drawn without replacement at every visit
    (:func:`baselines.tf.model.true_label_matrix` with dummy padding); padded columns are
    masked out of the loss, so each kept label gets the target ``1/min(|y|, T)``.
    """
    labels, _ = true_label_matrix(data, rows, int(num_true), "dummy", int(num_labels), rng)
    counts = (labels < num_labels).sum(axis=1).astype(np.int64)
    return labels, counts


# ----------------------------------------------------------------------------- network
def make_parameters(num_features: int, num_outputs: int, hidden, seed: int, device):
    """Initial weights as ``torch.nn.Parameter`` s on ``device``: ``(names, parameters)``."""
    torch = import_torch()
    init = init_weights(num_features, num_outputs, hidden, seed)
    names = list(init)
    params = [torch.nn.Parameter(torch.from_numpy(init[k]).to(device)) for k in names]
    return names, params


def first_layer(p: dict, batch, input_mode: str, num_features: int):
    """``x @ W_0 + b_0`` for a batch given as device tensors ``(row_ids, feats, values, offsets, B)``."""
    torch = import_torch()
    F = torch.nn.functional
    row_ids, feats, values, offsets, b = batch
    w0 = p["w_0"]
    if input_mode == "bag":
        z = F.embedding_bag(feats, w0, offsets, mode="sum", per_sample_weights=values)
    elif input_mode == "sparse":
        x = torch.sparse_coo_tensor(torch.stack([row_ids, feats]), values, (b, num_features),
                                    check_invariants=False)
        z = torch.sparse.mm(x, w0)
    else:  # gathered: distinct features of the batch, a dense B x U block
        uniq, inverse = torch.unique(feats, return_inverse=True)
        x = torch.zeros((b, uniq.shape[0]), dtype=values.dtype, device=values.device)
        x.index_put_((row_ids, inverse), values, accumulate=True)
        z = x @ w0.index_select(0, uniq)
    return z + p["b_0"]


def hidden_output(p: dict, hidden, batch, input_mode: str, num_features: int):
    """The last hidden layer (ReLU after every layer)."""
    torch = import_torch()
    h = torch.relu(first_layer(p, batch, input_mode, num_features))
    for i in range(1, len(hidden)):
        h = torch.relu(h @ p[f"w_{i}"] + p[f"b_{i}"])
    return h


_SOFT_CE = None


def _soft_target_ce():
    """``torch.autograd.Function`` for the mean soft-target cross-entropy of a ``B x L`` logits block.

    Written out because autograd's version holds several ``B x L`` buffers at once (the
    exponentials of logsumexp, a dense zero gradient for the gathered true logits, their sum),
    each hundreds of MB at the paper's shapes. Here the backward turns the saved logits into the
    gradient in place, ``(softmax * m_i - t) / B`` (``m_i = sum_j t_ij``), and nothing else of that
    size is allocated. The logits may be overwritten because no other backward needs them (the
    matmul that made them keeps its inputs, and a float32 cast under AMP keeps nothing).
    """
    global _SOFT_CE
    if _SOFT_CE is None:
        torch = import_torch()

        class SoftTargetCE(torch.autograd.Function):
            @staticmethod
            def forward(ctx, z, t_rows, t_labels, t_values):
                lse = torch.logsumexp(z, dim=1)
                mass = torch.zeros_like(lse).index_add_(0, t_rows, t_values)  # 1 for a point with labels
                loss = ((lse * mass).sum() - (z[t_rows, t_labels] * t_values).sum()) / z.shape[0]
                ctx.save_for_backward(z, lse, mass, t_rows, t_labels, t_values)
                return loss

            @staticmethod
            def backward(ctx, grad):
                z, lse, mass, t_rows, t_labels, t_values = ctx.saved_tensors
                g = z.sub_(lse[:, None]).exp_().mul_(mass[:, None])
                g.index_put_((t_rows, t_labels), -t_values, accumulate=True)
                g.mul_(grad / z.shape[0])
                return g, None, None, None

        _SOFT_CE = SoftTargetCE
    return _SOFT_CE


def full_softmax_loss(p: dict, h, t_rows, t_labels, t_values):
    """Mean cross-entropy of the last hidden layer ``h`` against the soft targets ``1/|y|``, given as
    ``(row, label, value)`` device tensors (see module docs and :func:`_soft_target_ce`)."""
    z = (h @ p["w_out"].t() + p["b_out"]).float()
    return _soft_target_ce().apply(z, t_rows, t_labels, t_values)


def sampled_softmax_loss(p: dict, h, true_labels, counts, sampled, logq_sampled, logq_true, hit_mask, *,
                         num_labels: int, logq: bool = True, positives: str = "each"):
    """Sampled softmax with the log-Q correction and up to ``T`` true labels per point.

    For point ``i`` with kept true labels ``y_i`` (``k_i = |y_i|`` of the ``T`` columns; the rest is
    padding) and the batch's shared candidates ``s_1..s_S``, the logits are
    ``o_c = z_c - log Q(c)`` (``Q``: the expected count of ``c`` in the sample; ``logq=False``
    drops the correction), and candidates that are true labels of the point (``hit_mask``) and
    padded true columns get a large negative logit. Then

    * ``positives="each"`` (default): every kept true label is its own softmax against the
      candidates, ``-(1/k_i) sum_{j in y_i} log(exp(o_j) / (exp(o_j) + sum_s exp(o_s)))``: the
      expectation, over the draw, of the one-random-true-label loss of the TF baseline, computed
      from all kept labels at once (less noise); true labels do not compete with each other.
    * ``positives="joint"``: one softmax over ``[true columns, candidates]`` against the target
      ``1/k_i`` on each kept label: ``tf.nn.sampled_softmax_loss`` with ``num_true = T`` (the full
      softmax's soft targets, restricted to the sample).

    Points without labels have weight 0 in the batch mean.
    """
    torch = import_torch()
    w_out, b_out = p["w_out"], p["b_out"]
    valid = true_labels < num_labels
    safe = torch.where(valid, true_labels, torch.zeros_like(true_labels))
    z_true = (torch.einsum("bh,bth->bt", h, w_out[safe]) + b_out[safe]).float()
    z_samp = (h @ w_out[sampled].t() + b_out[sampled]).float()
    if logq:
        z_true = z_true - logq_true
        z_samp = z_samp - logq_sampled
    z_true = z_true.masked_fill(~valid, NEG)
    if hit_mask is not None:
        z_samp = z_samp.masked_fill(hit_mask, NEG)
    if positives == "joint":
        logp_true = z_true - torch.logsumexp(torch.cat([z_true, z_samp], dim=1), dim=1, keepdim=True)
    else:
        lse_neg = torch.logsumexp(z_samp, dim=1, keepdim=True)
        logp_true = z_true - torch.logaddexp(z_true, lse_neg)
    k = counts.to(logp_true.dtype)
    weights = (k > 0).to(logp_true.dtype)
    per_row = -(logp_true * valid.to(logp_true.dtype)).sum(dim=1) / k.clamp(min=1.0)
    return (per_row * weights).sum() / weights.sum().clamp(min=1.0)


# ----------------------------------------------------------------------------- memory model
#: Python, NumPy, PyTorch (CPU build, about 400 MiB measured, torch 2.13) and room for the data.
TORCH_BASE_BYTES = 700 << 20
#: A CUDA context and PyTorch's kernels on the GPU (typical; varies with the driver and the card).
CUDA_CONTEXT_BYTES = 600 << 20


def estimate_memory_bytes(num_features: int, num_outputs: int, hidden, batch_size: int, *, loss: str,
                          num_sampled: int = 0, num_true: int = 1, scoring_rows: int = 0,
                          params_factor: float = 7.5, logits_factor: float = 4.0) -> dict:
    """Peak bytes of a training process, from the parameter count and the batch shape.

    Returns ``{"params": ..., "buffers": ..., "host": ..., "device": ...}``. ``params_factor``
    counts float32 copies of the parameters alive at the peak on the CPU: weights, Adam's two
    slots, the dense gradients, the three copies of weights and Adam slots that the warm-up's
    snapshot (or a checkpoint's :meth:`state_arrays`) holds, and half a copy of allocator slack. ``logits_factor`` counts
    ``batch x outputs`` float32 buffers alive together in the full softmax's forward and backward
    (logits, the exponentials of logsumexp, the ``L x h`` gradient temporaries of ``W_out``, a
    float32 copy under AMP; the gradient reuses the logits, see :func:`_soft_target_ce`); the sampled loss has ``num_sampled + num_true`` outputs per row and gathers
    ``num_sampled`` rows of ``W_out`` (and their gradient). Evaluation holds one
    ``scoring_rows x L`` block and its top-k instead.

    Calibration (torch 2.13 CPU, Amazon-670K shape, batch 128, hidden [128], ``bench`` peak RSS,
    synthetic data of about 0.4 GB included; estimate in parentheses): full softmax 3,760 MiB
    (4,980), sampled 10% 3,773 (4,180).

    On a GPU, ``device`` = CUDA context + the same parameter copies (the warm-up snapshot is
    made on the device) + the buffers, and ``host_with_gpu`` = runtime + the 3 checkpoint copies.
    """
    sizes = [int(num_features)] + [int(h) for h in hidden]
    params = sum(sizes[i] * sizes[i + 1] + sizes[i + 1] for i in range(len(hidden)))
    params += sizes[-1] * int(num_outputs) + int(num_outputs)
    width = int(num_outputs) if loss == "full" else int(num_sampled) + int(num_true)
    per_batch = int(batch_size) * width * 4 * logits_factor
    if loss != "full":
        per_batch += int(num_sampled) * sizes[-1] * 4 * 3
    scoring = int(scoring_rows) * int(num_outputs) * 4 * 2
    buffers = int(max(per_batch, scoring))
    return {"params": int(params), "buffers": buffers,
            "host": int(TORCH_BASE_BYTES + params * 4 * params_factor + buffers),
            "device": int(CUDA_CONTEXT_BYTES + params * 4 * params_factor + buffers),
            "host_with_gpu": int(TORCH_BASE_BYTES + params * 4 * 3)}


__all__ = ["csr_batch", "full_targets", "draw_candidates", "log_expected_count",
           "accidental_hits", "sampled_targets", "make_parameters", "first_layer", "hidden_output",
           "full_softmax_loss", "sampled_softmax_loss", "estimate_memory_bytes", "TORCH_BASE_BYTES",
           "CUDA_CONTEXT_BYTES"]
