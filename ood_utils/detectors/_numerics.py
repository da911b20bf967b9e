"""Numerical building blocks shared by the detectors.

Everything here works on numpy arrays and uses torch only as a fast float32 matrix-multiply engine
(``torch.from_numpy`` shares memory, so nothing is copied). The rules that keep ImageNet-scale statistics
(200k x 2048 training features, 1000 classes) inside a few GB and the numbers trustworthy:

- never build an N x N or N x N_train matrix: distances and similarities are computed for a block of rows
  at a time (``row_blocks``), with the block size chosen from a memory budget;
- matrix products run in float32 (their error is ~1e-7 relative per entry), but every *reduction* that
  can cancel or overflow (sums of squares, Gram matrices, log-sum-exp, norms) is accumulated in float64.
"""
from __future__ import annotations

import math

import numpy as np
import scipy.linalg
import torch

#: bytes one block of temporary results may take (rows x columns x 4 bytes)
BLOCK_BYTES = 256 * 2**20
#: rows per block for streaming passes over a feature matrix
ROW_BLOCK = 8192
#: log of the largest float32: exp() of anything larger overflows in float32
FLOAT32_LOG_MAX = float(np.log(np.finfo(np.float32).max))  # 88.7228...


def row_blocks(n: int, width: int = 1, max_rows: int | None = None):
    """Yield slices covering ``range(n)`` so that a (rows x width) float32 block fits in BLOCK_BYTES."""
    rows = max(1, BLOCK_BYTES // (4 * max(1, width)))
    if max_rows is not None:
        rows = min(rows, max_rows)
    for start in range(0, n, rows):
        yield slice(start, min(n, start + rows))


def t(x: np.ndarray) -> torch.Tensor:
    """Zero-copy torch view of a numpy array (for fast BLAS matmuls)."""
    return torch.from_numpy(np.ascontiguousarray(x))


def mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` in the dtype of the inputs (float32 for features), through torch's BLAS."""
    return (t(a) @ t(b)).numpy()


def linear(feats: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Logits ``feats @ W.T + b`` in float32, computed block by block."""
    out = np.empty((feats.shape[0], W.shape[0]), dtype=np.float32)
    Wt = t(np.ascontiguousarray(W.T, dtype=np.float32))
    bt = t(b.astype(np.float32))
    for s in row_blocks(feats.shape[0], feats.shape[1] + W.shape[0]):
        out[s] = torch.addmm(bt, t(feats[s]), Wt).numpy()
    return out


def logsumexp(logits: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Row-wise log-sum-exp of ``logits * scale`` in float64 (max-shifted, so it never overflows).

    Element-wise work runs in torch (vectorised, threaded): numpy's float64 exp is ~10x slower here."""
    out = np.empty(logits.shape[0], dtype=np.float64)
    for s in row_blocks(logits.shape[0], 2 * logits.shape[1]):
        out[s] = torch.logsumexp(t(logits[s]).double() * scale, dim=1).numpy()
    return out


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64 (for one block of rows)."""
    return torch.log_softmax(t(logits).double(), dim=1).numpy()


def row_norms(x: np.ndarray) -> np.ndarray:
    """Euclidean norm of each row, squares summed in float64."""
    out = np.empty(x.shape[0], dtype=np.float64)
    for s in row_blocks(x.shape[0], 2 * x.shape[1]):
        xb = x[s].astype(np.float64)
        out[s] = np.sqrt(np.einsum("ij,ij->i", xb, xb))
    return out


def normalize_rows(x: np.ndarray, eps: float = 0.0) -> np.ndarray:
    """Rows divided by (their norm + eps), float32. A zero row stays zero instead of becoming NaN."""
    n = row_norms(x) + eps
    n[n == 0] = 1.0
    out = np.empty(x.shape, dtype=np.float32)
    for s in row_blocks(x.shape[0], x.shape[1]):
        out[s] = x[s] / n[s, None].astype(np.float32)
    return out


# ---------------------------------------------------------------------------------------------- statistics
def mean_and_scatter(x: np.ndarray, labels: np.ndarray | None = None, num_classes: int | None = None):
    """Mean (float64) and centred scatter ``sum_i (x_i - m)(x_i - m)^T`` (float64) in one streaming pass.

    Each block is shifted by the mean before its float32 Gram product, so the product does not have to
    cancel the large ``N m m^T`` term; the block Grams are summed in float64. Scatter about any other
    point ``c`` then follows exactly: ``S_c = S + N (m - c)(m - c)^T``. With ``labels`` it also returns
    the class means and counts (float64), from which the within-class scatter is
    ``S - sum_k n_k (mu_k - m)(mu_k - m)^T``.
    """
    n, d = x.shape
    mean = np.zeros(d, dtype=np.float64)
    for s in row_blocks(n, d):
        mean += x[s].sum(axis=0, dtype=np.float64)
    mean /= n
    mean32 = mean.astype(np.float32)
    scatter = np.zeros((d, d), dtype=np.float64)
    shift = np.zeros(d, dtype=np.float64)  # sum of (x - mean32), ~0, kept for exactness
    for s in row_blocks(n, d, max_rows=4096):
        xc = x[s] - mean32
        scatter += mm(xc.T.copy(), xc).astype(np.float64)
        shift += xc.sum(axis=0, dtype=np.float64)
    # correct for using the float32-rounded mean as the shift point
    delta = mean - mean32.astype(np.float64)
    scatter -= np.outer(shift, delta) + np.outer(delta, shift) - n * np.outer(delta, delta)
    scatter = 0.5 * (scatter + scatter.T)
    if labels is None:
        return mean, scatter
    class_means, counts = class_sums(x, labels, num_classes)
    class_means /= np.maximum(counts, 1)[:, None]
    return mean, scatter, class_means, counts


def class_sums(x: np.ndarray, labels: np.ndarray, num_classes: int):
    """Per-class sums (float64, num_classes x D) and counts, streaming over rows."""
    sums = torch.zeros((num_classes, x.shape[1]), dtype=torch.float64)
    for s in row_blocks(x.shape[0], 2 * x.shape[1]):
        sums.index_add_(0, t(labels[s].astype(np.int64)), t(x[s]).double())
    sums = sums.numpy()
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    return sums, counts


def top_eigvecs(sym: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` eigenvectors of a symmetric matrix with the largest eigenvalues (columns, float64).
    Only the wanted eigenvectors are computed (LAPACK's MRRR driver), not all D of them."""
    d = sym.shape[0]
    vals, vecs = scipy.linalg.eigh(sym, subset_by_index=[d - k, d - 1], driver="evr")
    return vecs[:, ::-1]


def bottom_eigvecs(sym: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` eigenvectors with the smallest eigenvalues (columns, float64): ViM's residual space."""
    vals, vecs = scipy.linalg.eigh(sym, subset_by_index=[0, k - 1], driver="evr")
    return vecs


# ------------------------------------------------------------------------------------------------ quantiles
def quantile(x: np.ndarray, q: float) -> float:
    """Exactly ``np.quantile(x, q)`` (linear interpolation) over *all* entries of ``x``, without a copy.

    np.quantile on 200k x 2048 features copies and partitions 1.6 GB. Here: a random sample brackets the
    wanted order statistics, one streaming pass counts the entries below the bracket and gathers those
    inside it (a few MB), and a partition of that small set gives the exact values. When the bracket
    misses (unlucky sample), the bracket is widened; in the worst case it falls back to np.quantile.
    """
    flat = x.reshape(-1)
    n = flat.size
    if n <= 4_000_000:
        return float(np.quantile(flat, q))
    pos = q * (n - 1)
    lo_rank, hi_rank = math.floor(pos), math.ceil(pos)
    rng = np.random.default_rng(0)
    sample = np.sort(flat[rng.integers(0, n, 200_000)])
    for margin in (0.002, 0.02, 0.2):
        a = sample[max(0, int((q - margin) * sample.size))] if q - margin > 0 else -np.inf
        b = sample[min(sample.size - 1, int(math.ceil((q + margin) * sample.size)))] if q + margin < 1 else np.inf
        below, inside = 0, []
        for s in row_blocks(n, 1, max_rows=2**24):
            block = flat[s]
            below += int(np.count_nonzero(block < a))
            inside.append(block[(block >= a) & (block <= b)])
        inside = np.concatenate(inside)
        i, j = lo_rank - below, hi_rank - below
        if 0 <= i and j < inside.size:
            vals = np.partition(inside, [i, j])
            lo, hi = float(vals[i]), float(vals[j])
            return lo + (hi - lo) * (pos - lo_rank)
    return float(np.quantile(flat, q))


def column_quantiles(x: np.ndarray, q: float, cols: int = 128) -> np.ndarray:
    """``np.quantile(x, q, axis=0)`` computed a block of columns at a time (bounded memory)."""
    out = np.empty(x.shape[1], dtype=np.float64)
    for start in range(0, x.shape[1], cols):
        block = np.ascontiguousarray(x[:, start:start + cols].T)  # partition along contiguous rows
        out[start:start + cols] = np.quantile(block, q, axis=1)
    return out


def top_k_sum(x: np.ndarray, k: int) -> np.ndarray:
    """Sum of the ``k`` largest entries of each row (float64)."""
    out = np.empty(x.shape[0], dtype=np.float64)
    for s in row_blocks(x.shape[0], x.shape[1]):
        out[s] = torch.topk(t(x[s]), k, dim=1, sorted=False).values.double().sum(dim=1).numpy()
    return out


# ------------------------------------------------------------------------------------------- neighbours
def kth_largest_similarity(queries: np.ndarray, bank: np.ndarray, k: int) -> np.ndarray:
    """For each query row, its ``k``-th largest inner product with the bank rows.

    Queries are processed in blocks so the (block x N_bank) similarity matrix stays within BLOCK_BYTES.
    """
    out = np.empty(queries.shape[0], dtype=np.float64)
    bank_t = t(np.ascontiguousarray(bank.T))
    for s in row_blocks(queries.shape[0], bank.shape[0], max_rows=4096):
        sims = t(queries[s]) @ bank_t
        out[s] = torch.topk(sims, k, dim=1, sorted=True).values[:, -1].double().numpy()
    return out


def mean_top_k_similarity(queries: np.ndarray, bank: np.ndarray, k: int) -> np.ndarray:
    """For each query row, the mean of its ``k`` largest inner products with the bank rows."""
    out = np.empty(queries.shape[0], dtype=np.float64)
    bank_t = t(np.ascontiguousarray(bank.T))
    for s in row_blocks(queries.shape[0], bank.shape[0], max_rows=4096):
        sims = t(queries[s]) @ bank_t
        out[s] = torch.topk(sims, k, dim=1, sorted=False).values.double().mean(dim=1).numpy()
    return out


# ----------------------------------------------------------------------------------------- signed logs
def signed_log1p_from_log(log_abs: np.ndarray, sign: np.ndarray) -> np.ndarray:
    """``sign * log(1 + |x|)`` given ``log|x|`` and ``sign(x)``, without ever forming ``|x|``.

    ``log(1 + e^L) = logaddexp(0, L)`` is finite for every L (``-inf`` gives 0), so the result is finite
    and strictly increasing in x over the whole real line: the ranks of x are preserved, also for x <= 0.
    For L > 37 it equals L to float64 precision, i.e. the score *is* log x for any sizeable positive x.
    """
    return np.where(sign > 0, 1.0, np.where(sign < 0, -1.0, 0.0)) * np.logaddexp(0.0, log_abs)
