"""Pure parts of the query layer: parameters, resolution rule, alignment, level planning, histograms."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from malti_server import histogram
from malti_server.queries import packed
from malti_server.queries.params import (
    DAY, FIVE_MINUTES, HOUR, MINUTE, SIX_HOURS, WEEK, QueryError, floor_time, parse_aggregate, parse_requests,
    parse_time,
)
from malti_server.queries.raw_requests import decode_cursor, encode_cursor
from malti_server.queries.sql import LEVELS, pick_level, plan_sources

UTC = timezone.utc
NOW = datetime(2026, 11, 23, 10, 17, 42, tzinfo=UTC)


def test_defaults_and_resolution_rule():
    q = parse_aggregate({}, None, NOW)
    assert (q.end, q.start, q.resolution) == (NOW, NOW - timedelta(days=7), "1hour")
    rt = parse_aggregate({}, None, NOW, realtime=True)
    assert (rt.start, rt.resolution, len(rt.buckets())) == (NOW - timedelta(minutes=60), "1min", 61)
    assert parse_aggregate({"start_time": "2026-11-19T10:17:42Z"}, None, NOW).resolution == "5min"  # exactly 4 days
    assert parse_aggregate({"start_time": "2026-11-19T10:17:41Z"}, None, NOW).resolution == "1hour"
    assert parse_aggregate({"interval": "1hour", "start_time": "2026-11-23T09:00:00Z"}, None, NOW).resolution == "1hour"
    assert parse_aggregate({"interval": "1min", "start_time": "2026-11-23T09:00:00Z"}, None, NOW).resolution == "1min"
    assert parse_aggregate({"interval": "5min"}, None, NOW).resolution == "1hour"  # > 4 days wins
    one_min = parse_aggregate({"interval": "1min"}, None, NOW)  # as the original: the last 60 minutes
    # "24h" / "60m" computed by a client a moment before our now (travel, clock skew) still pass
    late = lambda d: (NOW - d).isoformat()  # noqa: E731
    assert parse_aggregate({"interval": "1min", "start_time": late(timedelta(hours=24, seconds=30))}, None, NOW)
    assert parse_aggregate({"start_time": late(timedelta(minutes=61))}, None, NOW, realtime=True)
    for params, realtime in (({"interval": "1min", "start_time": late(timedelta(hours=24, minutes=6))}, False),
                             ({"start_time": late(timedelta(minutes=66))}, True)):
        with pytest.raises(QueryError):
            parse_aggregate(params, None, NOW, realtime=realtime)
    assert (one_min.start, one_min.end, one_min.resolution) == (NOW - timedelta(minutes=60), NOW, "1min")
    assert parse_aggregate({"interval": ""}, None, NOW).resolution == "1hour"


def test_buckets_are_aligned_and_cover_start_and_end():
    q = parse_aggregate({"start_time": "2026-11-23T08:03:10Z", "end_time": "2026-11-23T09:55:00Z"}, None, NOW)
    b = q.buckets()
    assert b[0] == datetime(2026, 11, 23, 8, 0, tzinfo=UTC) and b[-1] == datetime(2026, 11, 23, 9, 55, tzinfo=UTC)
    assert all(y - x == FIVE_MINUTES for x, y in zip(b, b[1:]))
    assert q.stop == datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    assert floor_time(datetime(2026, 11, 23, 23, 59, tzinfo=UTC), DAY) == datetime(2026, 11, 23, tzinfo=UTC)


def test_times_parse_in_every_usual_form():
    expect = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    for text in ("2026-11-23T08:00:00Z", "2026-11-23T08:00:00", "2026-11-23 08:00:00+00:00",
                 "2026-11-23T10:00:00+02:00", "2026-11-23T10:00:00 02:00", "2026-11-23T08:00:00.000000Z"):
        assert parse_time(text, "start_time") == expect, text
    for bad in ("", "now", "2026-11-23T25:00:00Z", "1700000000", "2026-11-23T08:00:00Z'; DROP TABLE requests; --"):
        with pytest.raises(QueryError):
            parse_time(bad, "start_time")


def test_service_restriction():
    allowed = frozenset({"auth-service"})
    with pytest.raises(QueryError) as exc:
        parse_aggregate({"service": "payment-service"}, allowed, NOW)
    assert exc.value.status == 403
    q = parse_aggregate({}, allowed, NOW)
    assert q.filters.services == allowed and q.filters.service is None


def test_limits_and_too_many_buckets():
    with pytest.raises(QueryError):
        parse_aggregate({"interval": "1hour", "start_time": "2000-01-01T00:00:00Z"}, None, NOW)
    assert parse_requests({"limit": "1000"}, None, NOW).limit == 1000
    with pytest.raises(QueryError):
        parse_requests({"limit": "-1"}, None, NOW)


def test_cursor_round_trip():
    t = datetime(2026, 11, 23, 8, 0, 1, 123456, tzinfo=UTC)
    assert decode_cursor(encode_cursor(t, 42)) == (t, 42)
    for bad in ("", "!!!", encode_cursor(t, 1)[:-3], "MjAyNg"):
        with pytest.raises(QueryError):
            decode_cursor(bad)


@pytest.mark.parametrize("start,stop,finest", [
    ("2026-11-01T03:15:00", "2026-11-06T07:40:00", FIVE_MINUTES),
    ("2026-11-01T03:00:00", "2026-11-06T07:00:00", HOUR),
    ("2026-11-01T00:00:00", "2026-11-03T00:00:00", HOUR),
    ("2026-11-01T03:15:00", "2026-11-01T03:40:00", FIVE_MINUTES),
    ("2026-11-01T03:15:00", "2026-11-01T05:10:00", FIVE_MINUTES),
    ("2026-11-01T23:55:00", "2026-11-02T00:05:00", FIVE_MINUTES),
    ("2026-11-01T05:55:00", "2026-11-03T19:05:00", FIVE_MINUTES),
    ("2026-11-01T05:00:00", "2026-11-01T13:00:00", HOUR),
    ("2026-10-02T07:00:00", "2026-11-23T10:00:00", HOUR),
    ("2026-10-27T03:15:00", "2026-11-12T08:40:00", FIVE_MINUTES),
])
@pytest.mark.parametrize("need", [frozenset(), frozenset({"consumer"}), frozenset({"node", "endpoint"}),
                                  frozenset({"method", "endpoint", "consumer"})])
@pytest.mark.parametrize("per_service", [True, False])
@pytest.mark.parametrize("closed_at", [None, "2026-11-02T06:00:00", "2026-11-19T18:00:00", "2030-01-01T00:00:00"])
def test_planned_sources_tile_the_range_exactly(start, stop, finest, need, per_service, closed_at):
    a = datetime.fromisoformat(start).replace(tzinfo=UTC)
    b = datetime.fromisoformat(stop).replace(tzinfo=UTC)
    closed = None
    if closed_at:
        c = datetime.fromisoformat(closed_at).replace(tzinfo=UTC)
        closed = {SIX_HOURS: c, DAY: floor_time(c, DAY), WEEK: floor_time(c, WEEK)}
    covered = []
    for level, intervals in plan_sources(a, b, finest, need, per_service, closed):
        assert need <= level.dims and (level.per_service or not per_service)
        if level.width > HOUR:  # coarse levels only for closed blocks (schema/005)
            assert closed is not None and all(hi <= closed[level.width] for _, hi in intervals)
        for lo, hi in intervals:
            assert lo < hi and floor_time(lo, level.width) == lo and floor_time(hi, level.width) == hi
            covered.append((lo, hi))
    covered.sort()
    assert covered[0][0] == a and covered[-1][1] == b
    assert all(x[1] == y[0] for x, y in zip(covered, covered[1:]))


def test_smallest_level_is_chosen():
    assert pick_level(HOUR, frozenset()).view == "rollup_svc_1h_all"
    assert pick_level(HOUR, frozenset(), per_service=False).view == "rollup_all_1h_all"
    assert pick_level(HOUR, frozenset({"endpoint"}), per_service=False).view == "rollup_ep_1h_all"
    assert pick_level(HOUR, frozenset({"endpoint"})).view == "rollup_ep_1h_all"
    assert pick_level(DAY, frozenset({"endpoint", "consumer"})).view == "rollup_epcon_1d_all"
    assert pick_level(DAY, frozenset({"consumer"}), per_service=False).view == "rollup_acon_1d_all"
    assert pick_level(DAY, frozenset({"consumer"})).view == "rollup_con_1d_all"
    assert pick_level(DAY, frozenset({"node", "endpoint"})).view == "rollup_ncep_1d_all"
    assert pick_level(HOUR, frozenset({"context", "consumer"})).view == "rollup_nccon_1h_all"
    assert pick_level(DAY, frozenset({"node", "endpoint", "consumer"})) is None
    assert pick_level(HOUR, frozenset({"node", "endpoint", "consumer"})).view == "rollup_full_1h_all"
    assert pick_level(FIVE_MINUTES, frozenset({"context", "endpoint"})).view == "rollup_full_5min_all"
    assert all(LEVELS[w][-1].dims >= {"node", "context"} for w in (FIVE_MINUTES, HOUR))
    assert MINUTE not in LEVELS


def _pack(keys, counts) -> bytes:
    """What schema/003's malti_cells_pack stores: array_send cells (int4 4, int4 key << 20 | count),
    a count over 2^20 - 1 spread over several cells."""
    out = b""
    for k, c in zip(keys, counts):
        c = int(c)
        while c > 0:
            part = min(c, 1048575)
            out += (4).to_bytes(4, "big") + ((int(k) << 20) | part).to_bytes(4, "big")
            c -= part
    return out


def test_packed_merge_and_quantiles_match_the_reference_histogram():
    rng = np.random.default_rng(1)
    groups = []
    for g in range(5):
        parts = [rng.lognormal(rng.uniform(-1, 6), rng.uniform(0.2, 1.5), rng.integers(1, 400)) for _ in range(g + 1)]
        groups.append(parts)
    blobs, expect = [], []
    for parts in groups:
        hists = [histogram.build(p) for p in parts]
        blobs.append(b"".join(_pack(k, c) for k, c in hists))
        allv = np.concatenate(parts)
        k, c = histogram.merge(hists)
        expect.append(histogram.quantiles(k, c, (0.5, 0.95, 0.99), allv.min(), allv.max()))
    blobs.append(None)
    dense = packed.merge_blobs(blobs)
    lo = np.array([np.concatenate(p).min() for p in groups] + [np.nan])
    hi = np.array([np.concatenate(p).max() for p in groups] + [np.nan])
    est = packed.quantiles(dense, lo, hi, (0.5, 0.95, 0.99))
    for i, e in enumerate(expect):
        assert est[i] == pytest.approx(e, rel=1e-12)
        assert dense[i].sum() == sum(len(p) for p in groups[i])
    assert np.isnan(est[-1]).all()
    empty = packed.merge_blobs([None, b""])
    assert empty.shape[0] == 2 and not empty.any()
    big = packed.merge_blobs([_pack([500, 7], [3_000_000, 1])])
    assert big[0, 500] == 3_000_000 and big[0, 7] == 1 and big.shape == (1, 501)
    # the highest bucket (the largest response time ingest accepts) has its own column
    top = packed.merge_blobs([_pack([histogram.MAX_KEY], [2]), None])
    assert top.shape == (2, histogram.MAX_KEY + 1) and top[0, histogram.MAX_KEY] == 2


def test_coarse_levels_serve_closed_blocks_only():
    a = datetime(2026, 11, 1, 3, tzinfo=UTC)
    b = datetime(2026, 11, 8, 5, tzinfo=UTC)
    closed = {SIX_HOURS: datetime(2026, 11, 6, 12, tzinfo=UTC), DAY: datetime(2026, 11, 6, tzinfo=UTC)}
    need = frozenset({"endpoint"})  # the ep family has 1-hour, 6-hour and 1-day levels
    plan = {level.width: intervals for level, intervals in plan_sources(a, b, HOUR, need, closed=closed)}
    t = lambda d, h=0: datetime(2026, 11, d, h, tzinfo=UTC)  # noqa: E731
    assert plan[DAY] == [(t(2), t(6))]
    assert plan[SIX_HOURS] == [(t(1, 6), t(2)), (t(6), t(6, 12))]
    assert plan[HOUR] == [(t(1, 3), t(1, 6)), (t(6, 12), b)]
    assert {lv.width for lv, _ in plan_sources(a, b, HOUR, need)} == {HOUR}  # nothing closed yet


def test_node_and_context_levels_serve_time_series_and_edges():
    """schema/007: a node or context filter reads the all-services node/context level (anc) when no
    service is asked for, the per-service one (nc) otherwise, at 5 minutes and 1 hour."""
    node, ctx = frozenset({"node"}), frozenset({"node", "context"})
    assert pick_level(FIVE_MINUTES, node, per_service=False).view == "rollup_anc_5min_all"
    assert pick_level(FIVE_MINUTES, ctx, per_service=False).view == "rollup_anc_5min_all"
    assert pick_level(FIVE_MINUTES, frozenset({"context"})).view == "rollup_nc_5min_all"
    assert pick_level(HOUR, node, per_service=False).view == "rollup_anc_1h_all"
    assert pick_level(HOUR, node).view == "rollup_nc_1h_all"
    assert pick_level(DAY, node, per_service=False).view == "rollup_nc_1d_all"  # no daily anc level
    assert pick_level(FIVE_MINUTES, frozenset(), per_service=False).view == "rollup_all_5min_all"
    # a 24-hour range filtered by node, as the status section plans it: the 5-minute edges come
    # from the 5-minute node/context level, no longer from the full-dimension rollups
    a = datetime(2026, 11, 22, 10, 20, tzinfo=UTC)
    b = datetime(2026, 11, 23, 10, 20, tzinfo=UTC)
    closed = {SIX_HOURS: datetime(2026, 11, 23, 6, tzinfo=UTC), DAY: datetime(2026, 11, 23, tzinfo=UTC)}
    plan = {level.view: intervals for level, intervals in plan_sources(a, b, FIVE_MINUTES, node, closed=closed)}
    assert plan["rollup_nc_5min_all"] == [(a, a.replace(hour=11, minute=0)), (b.replace(minute=0), b)]
    assert set(plan) == {"rollup_nc_5min_all", "rollup_nc_1h_all", "rollup_nc_6h_all"}
    plan = plan_sources(a, b, FIVE_MINUTES, node, per_service=False, closed=closed)
    assert {level.view for level, _ in plan} == {"rollup_anc_5min_all", "rollup_anc_1h_all", "rollup_nc_6h_all"}


def test_weekly_levels_serve_closed_weeks():
    """schema/007: whole weeks (Saturday 00:00 UTC to Saturday) before the 7-day watermark come
    from the 7-day levels, the rest of a month from days, 6-hour blocks and hours."""
    t = lambda d, h=0: datetime(2026, 11, d, h, tzinfo=UTC)  # noqa: E731
    assert floor_time(t(23, 10), WEEK) == t(21) and t(21).weekday() == 5  # a Saturday
    a, b = datetime(2026, 10, 24, 10, tzinfo=UTC), t(23, 11)
    closed = {SIX_HOURS: t(23, 6), DAY: t(23), WEEK: t(21)}
    need = frozenset({"node", "endpoint"})
    plan = {level.view: intervals for level, intervals in plan_sources(a, b, HOUR, need, closed=closed)}
    assert plan["rollup_ncep_7d_all"] == [(datetime(2026, 10, 31, tzinfo=UTC), t(21))]
    assert plan["rollup_ncep_1d_all"] == [(datetime(2026, 10, 25, tzinfo=UTC), datetime(2026, 10, 31, tzinfo=UTC)),
                                          (t(21), t(23))]
    assert pick_level(WEEK, frozenset({"context", "consumer"})).view == "rollup_nccon_7d_all"
    assert pick_level(WEEK, frozenset(), per_service=False).view == "rollup_svc_7d_all"
    assert pick_level(WEEK, frozenset({"node", "endpoint", "consumer"})) is None
    # without a 7-day watermark (nothing closed) no week is read
    assert all(level.width < WEEK for level, _ in plan_sources(a, b, HOUR, need, closed={DAY: t(23)}))
