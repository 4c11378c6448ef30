"""Decode packed latency histograms and merge them with numpy.

The rollup levels store the 2xx latency histogram as 8-byte cells (schema/003: array_send of an
integer[] of ``key << 20 | count`` without its header, so each cell is ``int4 4`` then the
big-endian integer; a key may appear in several cells, their counts add up). A query concatenates the packed histograms of each result group with ``string_agg``;
since merging is adding counts per key, the cells of a group need no further structure. Here those
blobs become one dense matrix ``groups x (highest key present + 1)`` of counts, from which :func:`quantiles`
reads percentile_cont-compatible estimates for all groups at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .. import histogram

N_KEYS = histogram.MAX_KEY + 1
CELL = np.dtype([("len", ">i4"), ("v", ">i4")])
_BUCKET_VALUES = histogram.values(np.arange(N_KEYS))


def merge_blobs(blobs: Sequence[bytes | None]) -> np.ndarray:
    """Dense merged histograms (float64 counts), one row per group.

    Column k counts bucket k; there are as many columns as the highest bucket present needs
    (at most N_KEYS), so a long time series of ordinary latencies stays small.
    """
    g = len(blobs)
    sizes = np.fromiter((len(b) // 8 if b else 0 for b in blobs), dtype=np.int64, count=g)
    if not sizes.any():
        return np.zeros((g, 1))
    cells = np.frombuffer(b"".join(b for b in blobs if b), dtype=CELL)
    v = cells["v"].astype(np.int64)
    keys = np.minimum(v >> 20, N_KEYS - 1)
    counts = (v & 0xFFFFF).astype(np.float64)
    width = int(keys.max()) + 1
    flat = np.repeat(np.arange(g, dtype=np.int64) * width, sizes) + keys
    return np.bincount(flat, weights=counts, minlength=g * width).reshape(g, width)


def quantiles(
    dense: np.ndarray, lo: np.ndarray, hi: np.ndarray, qs: Sequence[float]
) -> np.ndarray:
    """``len(qs)`` columns of estimates per row of ``dense`` (NaN where a row is empty).

    Same rule as :func:`malti_server.histogram.quantiles`: order statistics floor/ceil of
    q*(n-1) from the bucket holding them, clamped to the exact [lo, hi], linearly interpolated.
    """
    g = dense.shape[0]
    out = np.full((g, len(qs)), np.nan)
    if g == 0:
        return out
    used = np.flatnonzero(dense.any(axis=0))
    if used.size == 0:
        return out
    first, last = int(used[0]), int(used[-1]) + 1
    cum = np.cumsum(dense[:, first:last], axis=1)
    width = last - first
    n = cum[:, -1]
    # one monotonic array for all rows: row i's cumulative counts shifted by i * (max n + 1)
    shift = np.arange(g, dtype=np.float64) * (float(n.max()) + 1.0)
    flat = (cum + shift[:, None]).ravel()
    values = _BUCKET_VALUES[first:last]
    ok = n > 0
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    rows = np.arange(g) * width

    def order_stat(j: np.ndarray) -> np.ndarray:
        # first bucket whose cumulative count exceeds j
        k = np.searchsorted(flat, j + shift, side="right") - rows
        v = np.minimum(np.maximum(values[np.clip(k, 0, width - 1)], lo), hi)
        v = np.where(j >= n - 1, hi, v)
        return np.where(j <= 0, lo, v)

    for col, q in enumerate(qs):
        rank = q * np.maximum(n - 1, 0)
        j0 = np.floor(rank)
        j1 = np.ceil(rank)
        v0 = order_stat(j0)
        v1 = order_stat(j1)
        out[:, col] = np.where(ok, v0 + (rank - j0) * (v1 - v0), np.nan)
    return out
