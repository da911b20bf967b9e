"""Numerical building blocks shared by the detectors.

Everything here works on numpy arrays and uses torch as the compute engine (``torch.from_numpy`` shares
memory, so nothing is copied): its matrix products (MKL) and element-wise kernels are multi-threaded and
share one thread pool. The rules that keep ImageNet-scale statistics (200k x 2048 training features, 1000
classes) inside a few GB, fast, and trustworthy:

- never build an N x N or N x N_train matrix: distances and similarities are computed for a block of rows
  at a time (``row_blocks``), with the block size chosen from a memory budget;
- work on blocks of a few thousand rows: element-wise passes over a block that fits in the CPU cache are
  several times faster than passes over a whole array;
- matrix products and per-row work (softmax, log-sum-exp of max-shifted values, norms) run in float32,
  whose ~1e-7 *relative* error is that of the float32 features and logits themselves;
- sums over many rows (means, scatter matrices, class sums) are accumulated in float64, and differences
  of large quantities (a squared norm minus a projected squared norm) are taken in float64;
  eigen-decompositions and solves run in float64.
"""
from __future__ import annotations

import math

import numpy as np
import scipy.linalg.blas
import torch

from ..threads import one_cpu_thread

#: bytes one block of temporary results may take (rows x columns x 4 bytes)
BLOCK_BYTES = 256 * 2**20
#: at most this many rows per block: keeps a block of logits (4096 x 1000 floats) near the cache size
ROW_BLOCK = 4096
#: log of the largest float32: exp() of anything larger overflows in float32
FLOAT32_LOG_MAX = float(np.log(np.finfo(np.float32).max))  # 88.7228...


def row_blocks(n: int, width: int = 1, max_rows: int | None = None):
    """Yield slices covering ``range(n)`` so that a (rows x width) float32 block fits in BLOCK_BYTES, with at
    most ``max_rows`` (default ROW_BLOCK) rows."""
    rows = max(1, min(BLOCK_BYTES // (4 * max(1, width)), max_rows or ROW_BLOCK))
    for start in range(0, n, rows):
        yield slice(start, min(n, start + rows))


def t(x: np.ndarray) -> torch.Tensor:
    """Zero-copy torch view of a numpy array."""
    return torch.from_numpy(np.ascontiguousarray(x))


def linear(feats: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Logits ``feats @ W.T + b`` in float32, computed block by block."""
    out = np.empty((feats.shape[0], W.shape[0]), dtype=np.float32)
    Wt = t(W.astype(np.float32, copy=False)).T  # a transposed view: BLAS reads it without a copy
    bt = t(b.astype(np.float32, copy=False))
    for s in row_blocks(feats.shape[0], feats.shape[1] + W.shape[0]):
        torch.addmm(bt, t(feats[s]), Wt, out=t(out[s]))
    return out


def all_finite(x: np.ndarray) -> bool:
    """True when ``x`` has no NaN or inf. One multi-threaded float32 sum (a NaN or inf anywhere makes the
    sum non-finite); only when the sum is not finite, e.g. because finite values overflowed it, is every
    entry checked."""
    if x.size == 0 or bool(torch.isfinite(t(x).sum())):
        return True
    return bool(np.isfinite(x).all())


# ----------------------------------------------------------------------------------------- row reductions
def logsumexp(logits: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Row-wise log-sum-exp of ``logits * scale`` (max-shifted, so it never overflows), as float64.

    Computed in the logits' dtype: for float32 logits the result has float32's relative precision, the
    precision of the logits themselves."""
    out = np.empty(logits.shape[0], dtype=np.float64)
    for s in row_blocks(logits.shape[0], logits.shape[1]):
        block = t(logits[s])
        out[s] = lse_rows(block * scale if scale != 1.0 else block).numpy()
    return out


def lse_rows(x: torch.Tensor) -> torch.Tensor:
    """log sum_j exp(x_ij) per row of a torch block: m + log sum exp(x - m), m the row max.

    Terms below exp(-80) are raised to exp(-80): they are < 1e-34 of the max term (exp(0) = 1), far below
    float32 precision, and exp() of very negative float32 numbers is ~10x slower than of normal ones (its
    slow path for results near and below the smallest normal float32), which made torch.logsumexp 10x
    slower on logits spread over hundreds of units."""
    m = x.amax(dim=1, keepdim=True)
    return m[:, 0] + torch.exp(torch.clamp(x - m, min=-80.0)).sum(dim=1).log()


def max_softmax(logits: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Row-wise max of softmax(logits * scale), as float64 (no cancellation: exp(0) / sum exp(l - max))."""
    out = np.empty(logits.shape[0], dtype=np.float64)
    for s in row_blocks(logits.shape[0], logits.shape[1]):
        block = t(logits[s])
        out[s] = torch.softmax(block * scale if scale != 1.0 else block, dim=1).amax(dim=1).numpy()
    return out


def row_max(x: np.ndarray) -> np.ndarray:
    """Row-wise maximum, as float64."""
    return t(x).amax(dim=1).double().numpy()


def row_norms(x: np.ndarray) -> np.ndarray:
    """Euclidean norm of each row, as float64. torch's float32 norm kernel (relative error ~2e-7) is 30x
    faster than its float64 one."""
    out = np.empty(x.shape[0], dtype=np.float64)
    for s in row_blocks(x.shape[0], x.shape[1]):
        out[s] = norms(t(x[s])).numpy()
    return out


def norms(x: torch.Tensor) -> torch.Tensor:
    """Row norms of a torch block (float32 kernel)."""
    return torch.linalg.vector_norm(x, dim=1)


def normalize_rows(x: np.ndarray, eps: float = 0.0) -> np.ndarray:
    """Rows divided by (their norm + eps), float32. A zero row stays zero instead of becoming NaN."""
    out = np.empty(x.shape, dtype=np.float32)
    for s in row_blocks(x.shape[0], x.shape[1]):
        block = t(x[s])
        n = norms(block) + eps
        n[n == 0] = 1.0
        torch.div(block, n[:, None], out=t(out[s]))
    return out


# ---------------------------------------------------------------------------------------------- statistics
def column_mean(x: np.ndarray) -> np.ndarray:
    """Mean of the rows, summed in float64."""
    total = np.zeros(x.shape[1], dtype=np.float64)
    for s in row_blocks(x.shape[0], x.shape[1]):
        total += x[s].sum(axis=0, dtype=np.float64)
    return total / x.shape[0]


def gram_upper(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The upper triangle of ``x.T @ x`` (float32; zeros below the diagonal), by the symmetric rank-k
    update (BLAS syrk): half the multiply-adds of a general product, since a symmetric matrix is
    determined by one triangle. ``out``: a Fortran-ordered float32 (D x D) buffer to reuse."""
    # x is C-ordered (rows x D), so x.T is a Fortran-ordered (D x rows) matrix: syrk reads it as-is
    if out is None:
        return scipy.linalg.blas.ssyrk(1.0, x.T, trans=0, lower=0)
    return scipy.linalg.blas.ssyrk(1.0, x.T, beta=0.0, c=out, trans=0, lower=0, overwrite_c=1)


def symmetrize_upper(upper: np.ndarray) -> np.ndarray:
    """The symmetric matrix whose upper triangle is given."""
    return np.triu(upper) + np.triu(upper, 1).T


def mean_and_scatter(x: np.ndarray, labels: np.ndarray | None = None, num_classes: int | None = None):
    """Mean (float64) and centred scatter ``sum_i (x_i - m)(x_i - m)^T`` (float64) in one streaming pass.

    Every block is shifted by a point c close to the mean (the mean of the first rows) before its float32
    Gram product, so the product does not have to cancel the large ``N m m^T`` term; the block Grams and
    the shifted sums are accumulated in float64. Then, exactly, ``m = c + sum(x - c) / N`` and
    ``S = S_c - N (m - c)(m - c)^T`` (the scatter about any point p is ``S + N (m - p)(m - p)^T``).
    With ``labels`` it also returns the class means and counts (float64), from which the within-class
    scatter is ``S - sum_k n_k (mu_k - m)(mu_k - m)^T``; the class sums are taken of the same shifted
    blocks, so their float32 rounding is relative to the small offsets x - c, not to x.
    """
    n, d = x.shape
    c = x[: min(n, 4096)].mean(axis=0, dtype=np.float64).astype(np.float32)
    upper = np.zeros((d, d), dtype=np.float64, order="F")  # the layout syrk writes
    shifted_sum = np.zeros(d, dtype=np.float64)
    sums = ClassSums(num_classes, d) if labels is not None else None
    # buffers reused by every block: fresh 100 MB allocations would cost page faults each time
    blocks = list(row_blocks(n, d, max_rows=16384))
    shifted = np.empty((blocks[0].stop, d), dtype=np.float32)
    gram = np.zeros((d, d), dtype=np.float32, order="F")
    for s in blocks:
        xc = np.subtract(x[s], c, out=shifted[: s.stop - s.start])
        upper += gram_upper(xc, out=gram)
        shifted_sum += xc.sum(axis=0, dtype=np.float64)
        if sums is not None:
            sums.add(xc, labels[s])
    offset = shifted_sum / n  # m - c
    mean = c.astype(np.float64) + offset
    scatter = symmetrize_upper(upper) - n * np.outer(offset, offset)
    if labels is None:
        return mean, scatter
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    class_means = sums.total / np.maximum(counts, 1)[:, None] + c.astype(np.float64)
    return mean, scatter, class_means, counts


class ClassSums:
    """Per-class sums of rows, added block by block: each block is summed per class in float32 (a handful
    of rows per class per block, so little rounding) and the block sums are accumulated in float64, so no
    float64 copy of the features is ever made."""

    def __init__(self, num_classes: int, dim: int):
        self.total = np.zeros((num_classes, dim), dtype=np.float64)
        self._block = torch.zeros((num_classes, dim), dtype=torch.float32)

    def add(self, rows: np.ndarray, labels: np.ndarray):
        self._block.zero_()
        self._block.index_add_(0, t(labels.astype(np.int64)), t(rows))
        self.total += self._block.numpy()


def class_sums(x: np.ndarray, labels: np.ndarray, num_classes: int):
    """Per-class sums (float64, num_classes x D) and counts, streaming over rows."""
    sums = ClassSums(num_classes, x.shape[1])
    for s in row_blocks(x.shape[0], x.shape[1]):
        sums.add(x[s], labels[s])
    return sums.total, np.bincount(labels, minlength=num_classes).astype(np.float64)


def lapack_input(a: np.ndarray) -> torch.Tensor:
    """A fresh float64 torch copy of a small matrix (D x D, C x D), for LAPACK."""
    return torch.tensor(np.asarray(a), dtype=torch.float64)




def eigh_descending(sym: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending) and eigenvectors (columns) of a symmetric matrix, in float64 (LAPACK's
    divide and conquer: all D = 2048 eigenvectors in about a second, faster than a subset by MRRR)."""
    with one_cpu_thread():
        vals, vecs = torch.linalg.eigh(lapack_input(sym))
    return vals.numpy()[::-1].copy(), vecs.numpy()[:, ::-1].copy()


def top_eigvecs(sym: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` eigenvectors of a symmetric matrix with the largest eigenvalues (columns, float64)."""
    return np.ascontiguousarray(eigh_descending(sym)[1][:, :k])


def bottom_eigvecs(sym: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` eigenvectors with the smallest eigenvalues (columns, float64): ViM's residual space."""
    return np.ascontiguousarray(eigh_descending(sym)[1][:, sym.shape[0] - k:])


def pinv_solve(A: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``pinv(A) @ y`` (float64): the minimum-norm least-squares solution, from a rank-revealing QR
    factorisation (LAPACK gelsy) instead of the full SVD that ``pinv`` computes."""
    rcond = np.finfo(np.float64).eps * max(A.shape)  # numpy.linalg.pinv's relative cut-off
    with one_cpu_thread():
        solution = torch.linalg.lstsq(lapack_input(A), lapack_input(y).reshape(-1, 1), rcond=rcond, driver="gelsy")
    return solution.solution[:, 0].numpy()


# ------------------------------------------------------------------------------------------------ quantiles
def quantile(x: np.ndarray, q: float) -> float:
    """Exactly ``np.quantile(x, q)`` (linear interpolation) over *all* entries of ``x``, without a copy."""
    return quantiles(x, [q])[0]


def quantiles(x: np.ndarray, qs) -> list[float]:
    """Exactly ``np.quantile(x, qs)`` over all entries of ``x``, without copying or sorting ``x``.

    np.quantile on 200k x 2048 features copies and partitions 1.6 GB. Here: a random sample brackets each
    wanted order statistic, one streaming pass counts the entries below each bracket and at its lower end,
    and gathers those strictly inside it (a few MB); sorting that small set gives the exact values.
    Ties at the lower end are counted, not gathered: ReLU features are ~half zeros. When a bracket misses
    (an unlucky sample), it is widened; in the worst case this falls back to np.quantile.
    """
    flat = x.reshape(-1)
    qs = list(qs)
    if flat.size <= 4_000_000:
        return [float(v) for v in np.quantile(flat, qs)]
    sample = np.sort(flat[np.random.default_rng(0).integers(0, flat.size, 200_000)])
    result: dict[int, float] = {}
    for margin in (0.002, 0.02, 0.2):
        todo = [i for i in range(len(qs)) if i not in result]
        brackets = [_bracket(sample, qs[i], margin) for i in todo]
        for i, (lo, _), counted in zip(todo, brackets, _bracket_pass(flat, brackets)):
            value = _interpolated(flat.size, qs[i], lo, *counted)
            if value is not None:
                result[i] = value
        if len(result) == len(qs):
            break
    return [result[i] if i in result else float(np.quantile(flat, qs[i])) for i in range(len(qs))]


def _bracket(sample: np.ndarray, q: float, margin: float) -> tuple[float, float]:
    """Sample values around the q-quantile: the true quantile lies between them with high probability."""
    lo = sample[max(0, int((q - margin) * sample.size))] if q - margin > 0 else -np.inf
    hi = sample[min(sample.size - 1, int(math.ceil((q + margin) * sample.size)))] if q + margin < 1 else np.inf
    return float(lo), float(hi)


def _bracket_pass(flat: np.ndarray, brackets):
    """For each bracket (lo, hi): the numbers of entries < lo and == lo, and the sorted entries in (lo, hi].

    numpy, single-threaded: for such light element-wise passes it is faster than torch's threads."""
    below = [0] * len(brackets)
    at_lo = [0] * len(brackets)
    inside = [[] for _ in brackets]
    for s in row_blocks(flat.size, 1, max_rows=2**22):
        block = flat[s]
        for j, (lo, hi) in enumerate(brackets):
            below[j] += int(np.count_nonzero(block < lo))
            at_lo[j] += int(np.count_nonzero(block == lo))
            if hi > lo:  # lo == hi: a value with many ties (0 in ReLU features), nothing to gather
                inside[j].append(block[(block > lo) & (block <= hi)])
    return [(below[j], at_lo[j], np.sort(np.concatenate(inside[j] or [np.empty(0, flat.dtype)])))
            for j in range(len(brackets))]


def _interpolated(n: int, q: float, lo: float, below: int, at_lo: int, inside: np.ndarray):
    """np.quantile's linear interpolation between the order statistics around q (n - 1), or None when the
    bracket does not contain them."""
    pos = q * (n - 1)
    ranks = (math.floor(pos), math.ceil(pos))
    values = [_value_at_rank(r, lo, below, at_lo, inside) for r in ranks]
    if None in values:
        return None
    return values[0] + (values[1] - values[0]) * (pos - ranks[0])


def _value_at_rank(rank: int, lo: float, below: int, at_lo: int, inside: np.ndarray):
    """The value of the given rank in sorted order, or None when the bracket does not contain it."""
    if rank < below:
        return None
    if rank < below + at_lo:
        return float(lo)
    i = rank - below - at_lo
    return float(inside[i]) if i < inside.size else None


def column_quantiles(x: np.ndarray, qs, cols: int = 64) -> np.ndarray:
    """``np.quantile(x, qs, axis=0)`` (len(qs) x D, float64) computed a block of columns at a time
    (bounded memory), all quantiles from one partition of each column."""
    qs = np.atleast_1d(np.asarray(qs, dtype=np.float64))
    out = np.empty((qs.size, x.shape[1]), dtype=np.float64)
    for start in range(0, x.shape[1], cols):
        block = np.ascontiguousarray(x[:, start:start + cols].T)  # partition along contiguous rows
        out[:, start:start + cols] = np.quantile(block, qs, axis=1)
    return out


# ------------------------------------------------------------------------------------------- neighbours
def kth_largest_similarity(queries: np.ndarray, bank: np.ndarray, k: int) -> np.ndarray:
    """For each query row, its ``k``-th largest inner product with the bank rows.

    Queries are processed in blocks so the (block x N_bank) similarity matrix stays within BLOCK_BYTES.
    """
    out = np.empty(queries.shape[0], dtype=np.float64)
    bank_t = t(bank).T
    for s in row_blocks(queries.shape[0], bank.shape[0]):
        sims = t(queries[s]) @ bank_t
        out[s] = torch.topk(sims, k, dim=1, sorted=False).values.amin(dim=1).numpy()
    return out


def mean_top_k_similarity(queries: np.ndarray, bank: np.ndarray, k: int) -> np.ndarray:
    """For each query row, the mean of its ``k`` largest inner products with the bank rows."""
    out = np.empty(queries.shape[0], dtype=np.float64)
    bank_t = t(bank).T
    for s in row_blocks(queries.shape[0], bank.shape[0]):
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
