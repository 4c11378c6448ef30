"""Decode packed latency histograms and merge them with numpy.

The rollup levels store the 2xx latency histogram as ``array_send(lat_keys) || array_send(lat_counts)``
(schema/003). A query concatenates the packed histograms of each result group with ``string_agg``
and sends, beside it, the concatenated 4-byte cell counts (bytes 13-16 of each packed histogram).
Here those blobs become one dense matrix ``groups x (MAX_KEY + 1)`` of counts, from which
:func:`quantiles` reads percentile_cont-compatible estimates for all groups at once.

Binary layout of ``array_send`` for a one-dimensional array without NULLs (big-endian):
``ndim int4, has_null int4, elem_oid int4, length int4, lower_bound int4`` (20 bytes) then per element
``byte_length int4, value``: 6 bytes per int2 key, 8 bytes per int4 count.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .. import histogram

N_KEYS = histogram.MAX_KEY + 1
_HEADER = 20
_BUCKET_VALUES = histogram.values(np.arange(N_KEYS))


def merge_blobs(blobs: Sequence[bytes | None], cells: Sequence[bytes | None]) -> np.ndarray:
    """Dense merged histograms (float64 counts), one row per group."""
    g = len(blobs)
    dense = np.zeros((g, N_KEYS), dtype=np.float64)
    if g == 0:
        return dense
    parts: list[bytes] = []
    group_of_hist: list[np.ndarray] = []
    ns_all: list[np.ndarray] = []
    for i, (blob, cell) in enumerate(zip(blobs, cells)):
        if not blob:
            continue
        ns = np.frombuffer(cell, dtype=">i4").astype(np.int64)
        if int((40 + 14 * ns).sum()) != len(blob):
            ns = _walk(blob)
        parts.append(blob)
        ns_all.append(ns)
        group_of_hist.append(np.full(ns.size, i, dtype=np.int64))
    if not parts:
        return dense
    buf = np.frombuffer(b"".join(parts), dtype=np.uint8)
    ns = np.concatenate(ns_all)
    hist_group = np.concatenate(group_of_hist)
    sizes = 40 + 14 * ns
    starts = np.zeros(ns.size, dtype=np.int64)
    np.cumsum(sizes[:-1], out=starts[1:])
    total = int(ns.sum())
    # per cell: its histogram, and its index j within that histogram
    hist_of_cell = np.repeat(np.arange(ns.size), ns)
    first_cell = np.zeros(ns.size, dtype=np.int64)
    np.cumsum(ns[:-1], out=first_cell[1:])
    j = np.arange(total, dtype=np.int64) - first_cell[hist_of_cell]
    base = starts[hist_of_cell]
    key_pos = base + _HEADER + 6 * j + 4
    keys = (buf[key_pos].astype(np.int64) << 8) | buf[key_pos + 1]
    keys = np.where(keys >= 32768, keys - 65536, keys)
    cnt_pos = base + _HEADER + 6 * ns[hist_of_cell] + _HEADER + 8 * j + 4
    counts = (
        (buf[cnt_pos].astype(np.int64) << 24)
        | (buf[cnt_pos + 1].astype(np.int64) << 16)
        | (buf[cnt_pos + 2].astype(np.int64) << 8)
        | buf[cnt_pos + 3]
    )
    keys = np.clip(keys, 0, N_KEYS - 1)
    flat = hist_group[hist_of_cell] * N_KEYS + keys
    dense += np.bincount(flat, weights=counts, minlength=g * N_KEYS).reshape(g, N_KEYS)
    return dense


def _walk(blob: bytes) -> np.ndarray:
    """Cell counts of each packed histogram in ``blob``, read one header at a time (fallback)."""
    ns = []
    pos = 0
    while pos < len(blob):
        n = int.from_bytes(blob[pos + 12 : pos + 16], "big") if blob[pos + 3] else 0
        ns.append(n)
        pos += 40 + 14 * n if n else 24
    return np.asarray(ns, dtype=np.int64)


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
    cum = np.cumsum(dense, axis=1)
    n = cum[:, -1]
    ok = n > 0
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    for col, q in enumerate(qs):
        rank = q * (n - 1)
        j0 = np.floor(rank)
        j1 = np.ceil(rank)
        v0 = _order_stat(cum, j0, n, lo, hi)
        v1 = _order_stat(cum, j1, n, lo, hi)
        out[:, col] = np.where(ok, v0 + (rank - j0) * (v1 - v0), np.nan)
    return out


def _order_stat(cum: np.ndarray, j: np.ndarray, n: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    # first bucket whose cumulative count exceeds j
    k = np.argmax(cum > j[:, None], axis=1)
    v = np.minimum(np.maximum(_BUCKET_VALUES[k], lo), hi)
    v = np.where(j >= n - 1, hi, v)
    return np.where(j <= 0, lo, v)
