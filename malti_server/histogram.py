"""Mergeable log-bucketed latency histograms (DDSketch mapping, fixed relative accuracy).

A response time x (milliseconds) falls in bucket ``key(x) = ceil(ln(x / X_MIN_MS) / ln(GAMMA))``;
bucket k >= 1 covers (X_MIN_MS * GAMMA**(k-1), X_MIN_MS * GAMMA**k] and is represented by the point
whose relative distance to both edges is ALPHA. Histograms are stored sparse (ascending keys and
their counts). Merging adds counts, so any set of rollup rows merges into exactly the histogram the
raw records would have produced, and a quantile read from it is within ALPHA (relative) of
PostgreSQL's ``percentile_cont`` on the raw rows (values at or under 1 µs: within 0.5 µs).

These constants are part of the stored data format: changing them needs a migration.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

ALPHA = 0.01
GAMMA = (1 + ALPHA) / (1 - ALPHA)
LN_GAMMA = math.log(GAMMA)
X_MIN_MS = 0.001
#: the largest response time ingest accepts (about 31 years: longer than any stream stays open)
MAX_RESPONSE_TIME_MS = 1e12
#: the bucket of MAX_RESPONSE_TIME_MS (1727), so every accepted value keeps the relative accuracy.
#: Histograms stored when this was 1101 (about one hour) hold longer values in bucket 1101.
MAX_KEY = math.ceil(math.log(MAX_RESPONSE_TIME_MS / X_MIN_MS) / LN_GAMMA)
assert MAX_KEY < 2048  # packed rollup cells hold the key in 11 bits (schema/003)
_VALUE_FACTOR = X_MIN_MS * 2 / (GAMMA + 1)


def key(x: float) -> int:
    """Bucket key of one response time in milliseconds."""
    if x <= X_MIN_MS:
        return 0
    return min(MAX_KEY, math.ceil(math.log(x / X_MIN_MS) / LN_GAMMA))


def keys(values: np.ndarray) -> np.ndarray:
    """Bucket keys of many response times at once (vectorised :func:`key`)."""
    values = np.asarray(values, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = np.ceil(np.log(np.maximum(values, X_MIN_MS) / X_MIN_MS) / LN_GAMMA)
    k = np.clip(k, 0, MAX_KEY)
    k[values <= X_MIN_MS] = 0
    return k.astype(np.int16)


def value(k: int) -> float:
    """Representative response time (ms) of bucket ``k``."""
    if k <= 0:
        return X_MIN_MS / 2
    return _VALUE_FACTOR * GAMMA**k


def values(ks: np.ndarray) -> np.ndarray:
    """Representative response times of many buckets (vectorised :func:`value`)."""
    ks = np.asarray(ks, dtype=np.float64)
    out = _VALUE_FACTOR * np.power(GAMMA, ks)
    out[ks <= 0] = X_MIN_MS / 2
    return out


def build(response_times: Iterable[float]) -> tuple[list[int], list[int]]:
    """Sparse histogram (ascending keys, counts) of some response times."""
    arr = np.fromiter(response_times, dtype=np.float64)
    if arr.size == 0:
        return [], []
    uniq, counts = np.unique(keys(arr), return_counts=True)
    return uniq.tolist(), counts.tolist()


def merge(hists: Iterable[tuple[Sequence[int], Sequence[int]]]) -> tuple[list[int], list[int]]:
    """Merge sparse histograms by adding counts per key."""
    total: dict[int, int] = {}
    for ks, cs in hists:
        for k, c in zip(ks, cs):
            total[k] = total.get(k, 0) + c
    ordered = sorted(total)
    return ordered, [total[k] for k in ordered]


def quantile(
    ks: Sequence[int] | np.ndarray,
    counts: Sequence[int] | np.ndarray,
    q: float,
    lo: float,
    hi: float,
) -> float | None:
    """``percentile_cont``-compatible quantile estimate from a merged histogram.

    ``lo`` and ``hi`` are the exact minimum and maximum of the merged records; the estimate is
    clamped to them, which makes q=0 and q=1 exact. Returns None for an empty histogram.
    """
    return quantiles(ks, counts, (q,), lo, hi)[0]


def quantiles(
    ks: Sequence[int] | np.ndarray,
    counts: Sequence[int] | np.ndarray,
    qs: Sequence[float],
    lo: float,
    hi: float,
) -> list[float | None]:
    """Several quantiles from one histogram (see :func:`quantile`)."""
    c = np.asarray(counts, dtype=np.int64)
    n = int(c.sum()) if c.size else 0
    if n == 0:
        return [None for _ in qs]
    k = np.asarray(ks, dtype=np.int64)
    cum = np.cumsum(c)
    out: list[float | None] = []
    for q in qs:
        rank = q * (n - 1)
        j0 = math.floor(rank)
        j1 = math.ceil(rank)
        v0 = _order_stat(k, cum, j0, n, lo, hi)
        v1 = v0 if j1 == j0 else _order_stat(k, cum, j1, n, lo, hi)
        out.append(v0 + (rank - j0) * (v1 - v0))
    return out


def _order_stat(k: np.ndarray, cum: np.ndarray, j: int, n: int, lo: float, hi: float) -> float:
    # The 0-based order statistic j lives in the first bucket whose cumulative count exceeds j.
    if j <= 0:
        return lo
    if j >= n - 1:
        return hi
    bucket = int(k[int(np.searchsorted(cum, j, side="right"))])
    return min(max(value(bucket), lo), hi)
