"""Every field of the dashboard response against exact answers computed from the raw rows.

Randomised traffic (skewed latencies, many groups, five days, part compacted and part pending) goes
in through the real ingest SQL; each case parses real query parameters, runs the dashboard query
and compares it with percentile_cont & co. on the raw table: counts, error counts and rates exact,
min/avg/max exact, p50/p95/p99 within the histogram's 1 % bound (exact at 1-minute resolution).
"""

from __future__ import annotations

import asyncio
import math
from datetime import datetime, timedelta

import asyncpg
import pytest

from malti_server.queries.dashboard import build_sql, dashboard
from malti_server.queries.params import HOUR, MINUTE, ceil_time, floor_time, parse_aggregate
from malti_server.queries.sql import fetch_closed
from malti_testing import create_database, drop_database
from queries_traffic import CLOSE_UPTO, T0, T1, expected, generate, load

N_RECORDS = 60_000
REL = 0.01  # histogram relative-error bound
ABS = 0.0006  # values at or under 1 µs: within 0.5 µs
NOW = T1 + timedelta(days=1)

FILTERS = {
    "none": {},
    "service": {"service": "auth-service"},
    "service+endpoint": {"service": "payment-service", "endpoint": "/items/{id}"},
    "method": {"method": "POST"},
    "consumer": {"consumer": "consumer-1"},
    "node": {"node": "node-2"},
    "context": {"context": "ctx-x"},
    "service+node": {"service": "user-service", "node": "node-1"},
    "endpoint+consumer": {"endpoint": "/users/{user_id}", "consumer": "consumer-0"},
    "node+endpoint+context": {"node": "node-1", "endpoint": "/items/{id}", "context": "ctx-y"},
    "streaming": {"endpoint": "/users/{user_id}/profile"},  # responses far over an hour
    "all": {"service": "auth-service", "node": "node-1", "method": "GET", "endpoint": "/items/{id}",
            "consumer": "consumer-1", "context": "ctx-x"},
}

# the level each filter's time series reads at 5-minute and 1-hour resolution ({} = 5min or 1h)
TIME_SERIES_LEVELS = {"node": "rollup_anc_{}_all", "context": "rollup_anc_{}_all",
                      "service+node": "rollup_nc_{}_all"}


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


CASES = {
    # name: (params, realtime, expected resolution)
    "5min": ({"start_time": iso(T0 + timedelta(days=1, hours=2, minutes=7, seconds=13)),
              "end_time": iso(T0 + timedelta(days=3, hours=5, minutes=52))}, False, "5min"),
    "5min-short": ({"start_time": iso(T0 + timedelta(hours=5, minutes=31)),
                    "end_time": iso(T0 + timedelta(hours=6, minutes=2))}, False, "5min"),
    "1hour-auto": ({"start_time": iso(T0 - timedelta(hours=1)), "end_time": iso(T1 + timedelta(minutes=30))},
                   False, "1hour"),
    "1hour-interval": ({"start_time": iso(T0 + timedelta(days=2, minutes=40)),
                        "end_time": iso(T0 + timedelta(days=3, hours=1)), "interval": "1hour"}, False, "1hour"),
    "1min": ({"start_time": iso(T0 + timedelta(days=1, hours=1, seconds=30)),
              "end_time": iso(T0 + timedelta(days=1, hours=3, minutes=10)), "interval": "1min"}, False, "1min"),
    "week": ({"start_time": iso(T0 - timedelta(days=2)), "end_time": iso(CLOSE_UPTO)}, False, "1hour"),
    "realtime": ({"start_time": iso(T0 + timedelta(days=4, minutes=3)),
                  "end_time": iso(T0 + timedelta(days=4, minutes=63))}, True, "1min"),
}


@pytest.fixture(scope="module")
def traffic_db(pg_admin_url: str):
    url = create_database(pg_admin_url)
    cols = generate(N_RECORDS)

    async def go():
        conn = await asyncpg.connect(url, server_settings={"timezone": "UTC"})
        try:
            await load(conn, cols)
        finally:
            await conn.close()

    asyncio.run(go())
    yield url
    drop_database(pg_admin_url, url)


def close(actual, exact, rel: float, abs_: float = 1e-9) -> bool:
    if exact is None or actual is None:
        return actual is None and exact is None
    return math.isclose(actual, exact, rel_tol=rel, abs_tol=abs_)


def check_latency(where: str, got: dict, exp: dict, q_rel: float, errors: list[str], min_max: bool = True) -> None:
    names = [("avg_latency", "avg")] + ([("min_latency", "lo"), ("max_latency", "hi")] if min_max else [])
    for field, key in names:
        if not close(got[field], exp[key], 1e-9):
            errors.append(f"{where}.{field}: {got[field]} != {exp[key]}")
    for field, key in (("p50_latency", "p50"), ("p95_latency", "p95"), ("p99_latency", "p99")):
        if not close(got[field], exp[key], q_rel, ABS if q_rel else 1e-9):
            errors.append(f"{where}.{field}: {got[field]} vs exact {exp[key]}")


def rate(err: int, n: int) -> float:
    return err / n * 100 if n else 0.0


def compare(resp: dict, exp: dict, q_rel: float) -> list[str]:
    errors: list[str] = []
    buckets = [datetime.fromisoformat(p["bucket"].replace("Z", "+00:00")) for p in resp["time_series"]]
    if buckets != sorted(buckets) or len(set(buckets)) != len(buckets):
        errors.append("buckets not strictly ascending")
    steps = {b - a for a, b in zip(buckets, buckets[1:])}
    if len(steps) > 1:
        errors.append(f"buckets not evenly spaced: {steps}")
    missing = set(exp["ts"]) - set(buckets)
    if missing:
        errors.append(f"buckets with data missing from time_series: {sorted(missing)[:3]}")
    for point, b in zip(resp["time_series"], buckets):
        e = exp["ts"].get(b)
        if e is None:
            if point["total_requests"] or point["error_count"] or point["p95_latency"] is not None:
                errors.append(f"bucket {b}: expected empty, got {point}")
            continue
        if (point["total_requests"], point["error_count"]) != (e["n"], e["err"]):
            errors.append(f"bucket {b}: counts {point['total_requests']}/{point['error_count']} != {e['n']}/{e['err']}")
        check_latency(f"bucket {b}", point, e, q_rel, errors)

    s, es = resp["metrics_summary"], exp["summary"]
    if (s["total_requests"], s["error_count"]) != (es["n"], es["err"]):
        errors.append(f"summary counts {s['total_requests']}/{s['error_count']} != {es['n']}/{es['err']}")
    if not close(s["error_rate"], rate(es["err"], es["n"]), 1e-12):
        errors.append("summary error_rate")
    check_latency("summary", s, es, q_rel, errors)
    o = resp["system_overview"]
    if (o["total_requests"], o["total_errors"]) != (es["n"], es["err"]) or not close(
            o["error_rate"], rate(es["err"], es["n"]), 1e-12) or not close(o["avg_latency"], es["avg"], 1e-9):
        errors.append(f"system_overview {o} vs {es}")

    got_eps = {(e["service"], e["method"], e["endpoint"]): e for e in resp["endpoints"]}
    if set(got_eps) != set(exp["endpoints"]):
        errors.append(f"endpoint set {sorted(got_eps)} != {sorted(exp['endpoints'])}")
    for key, e in exp["endpoints"].items():
        g = got_eps.get(key)
        if g is None:
            continue
        if (g["total_requests"], g["error_count"]) != (e["n"], e["err"]) or not close(g["error_rate"], rate(e["err"], e["n"]), 1e-12):
            errors.append(f"endpoint {key}: counts")
        check_latency(f"endpoint {key}", g, e, q_rel, errors, min_max=False)
    totals = [e["total_requests"] for e in resp["endpoints"]]
    if totals != sorted(totals, reverse=True):
        errors.append("endpoints not ordered by total_requests")

    got_cons = {c["consumer"]: c for c in resp["consumers"]}
    if set(got_cons) != set(exp["consumers"]):
        errors.append(f"consumer set {sorted(got_cons)} != {sorted(exp['consumers'])}")
    for key, e in exp["consumers"].items():
        g = got_cons.get(key)
        if g is None:
            continue
        if (g["total_requests"], g["error_count"]) != (e["n"], e["err"]) or not close(g["error_rate"], rate(e["err"], e["n"]), 1e-12):
            errors.append(f"consumer {key}: counts")
        check_latency(f"consumer {key}", g, e, q_rel, errors, min_max=False)

    status: dict[str, dict[str, int]] = {}
    for (svc, st), n in exp["status"].items():
        status.setdefault(svc, {})[str(st)] = n
    got_status = {d["service"]: d for d in resp["status_distribution"]}
    if set(got_status) != set(status):
        errors.append("status_distribution services")
    for svc, breakdown in status.items():
        d = got_status.get(svc)
        if d is None:
            continue
        if d["status_breakdown"] != breakdown or d["total_requests"] != sum(breakdown.values()):
            errors.append(f"status {svc}: {d} vs {breakdown}")
        by_class = {c: sum(n for st, n in breakdown.items() if lo <= int(st) < hi)
                    for c, lo, hi in (("success_2xx", 200, 300), ("warning_3xx", 300, 400), ("error_4xx_5xx", 400, 600))}
        if any(d[c] != v for c, v in by_class.items()):
            errors.append(f"status classes {svc}")
    if resp["distinct_nodes"] != exp["nodes"] or resp["distinct_contexts"] != exp["contexts"]:
        errors.append(f"nodes/contexts {resp['distinct_nodes']} {resp['distinct_contexts']} vs {exp['nodes']} {exp['contexts']}")
    return errors


@pytest.mark.parametrize("filter_name", list(FILTERS))
@pytest.mark.parametrize("case", list(CASES))
async def test_dashboard_matches_exact_answers(traffic_db: str, case: str, filter_name: str) -> None:
    params, realtime, resolution = CASES[case]
    filters = FILTERS[filter_name]
    q = parse_aggregate({**params, **filters}, None, NOW, realtime=realtime)
    assert q.resolution == resolution
    conn = await asyncpg.connect(traffic_db, server_settings={"timezone": "UTC"})
    try:
        statement, _ = build_sql(q, await fetch_closed(conn))
        resp = await dashboard(conn, q, NOW)
        nodes_range = None if q.step == MINUTE else (floor_time(q.first_bucket, HOUR), ceil_time(q.stop, HOUR))
        exp = await expected(conn, q.first_bucket, q.stop, q.step, filters, nodes_range=nodes_range)
    finally:
        await conn.close()
    assert resp["resolution"] == resolution
    if case == "week":  # whole weeks from the 7-day levels (schema/007)
        assert "_7d_all " in statement
    if filter_name in TIME_SERIES_LEVELS and resolution != "1min":  # the node/context levels of schema/007
        view = TIME_SERIES_LEVELS[filter_name].format(resolution.replace("hour", "h"))
        assert f" FROM {view} " in statement.split("\nUNION ALL\n")[0]
    assert len(resp["time_series"]) == (q.stop - q.first_bucket) // q.step
    assert resp["time_series"][0]["bucket"] == iso(floor_time(q.start, q.step))
    assert exp["summary"]["n"] > 0 or filter_name in ("all", "node+endpoint+context")
    errors = compare(resp, exp, 0.0 if resolution == "1min" else REL)
    assert not errors, "\n".join(errors[:20])


async def test_service_restriction_limits_every_section(traffic_db: str) -> None:
    allowed = frozenset({"auth-service", "user-service"})
    params, _, _ = CASES["1hour-auto"]
    q = parse_aggregate(params, allowed, NOW)
    conn = await asyncpg.connect(traffic_db, server_settings={"timezone": "UTC"})
    try:
        resp = await dashboard(conn, q, NOW)
        exp = await expected(conn, q.first_bucket, q.stop, q.step, {}, services=sorted(allowed),
                             nodes_range=(floor_time(q.first_bucket, HOUR), ceil_time(q.stop, HOUR)))
    finally:
        await conn.close()
    assert {e["service"] for e in resp["endpoints"]} == set(allowed)
    assert {d["service"] for d in resp["status_distribution"]} == set(allowed)
    errors = compare(resp, exp, REL)
    assert not errors, "\n".join(errors[:20])


async def test_merged_histograms_beat_the_original_max_of_group_p95s(traffic_db: str) -> None:
    """The original Malti answered a bucket's p95 with MAX(p95) over the rollup groups in it; the
    merged histograms stay within 1 % where that is off by a wide margin."""
    params, _, _ = CASES["1hour-auto"]
    q = parse_aggregate(params, None, NOW)
    conn = await asyncpg.connect(traffic_db, server_settings={"timezone": "UTC"})
    try:
        resp = await dashboard(conn, q, NOW)
        rows = await conn.fetch(
            """
            WITH ok AS (SELECT * FROM requests WHERE created_at >= $1 AND created_at < $2
                        AND status BETWEEN 200 AND 299),
            exact AS (SELECT date_trunc('hour', created_at) AS b,
                             percentile_cont(0.95) WITHIN GROUP (ORDER BY response_time) AS p95
                      FROM ok GROUP BY 1),
            groups AS (SELECT date_trunc('hour', created_at) AS b,
                              percentile_cont(0.95) WITHIN GROUP (ORDER BY response_time) AS p95
                       FROM ok GROUP BY 1, service, node, method, endpoint, consumer, context, status)
            SELECT e.b, e.p95 AS exact, max(g.p95) AS original
            FROM exact e JOIN groups g USING (b) GROUP BY e.b, e.p95 ORDER BY 1
            """, q.first_bucket, q.stop)
    finally:
        await conn.close()
    ours = {datetime.fromisoformat(p["bucket"].replace("Z", "+00:00")): p["p95_latency"] for p in resp["time_series"]}
    ours_err = max(abs(ours[r["b"]] - r["exact"]) / r["exact"] for r in rows)
    orig_err = max(abs(r["original"] - r["exact"]) / r["exact"] for r in rows)
    orig_ratio = max(r["original"] / r["exact"] for r in rows)
    print(f"\nhourly p95 over {len(rows)} buckets: merged histograms max error {ours_err:.3%}; "
          f"original max-of-group-p95 max error {orig_err:.1%} (up to {orig_ratio:.1f}x the exact value)")
    assert ours_err <= REL + 1e-9
    assert orig_err > 10 * ours_err


async def test_every_level_counts_every_record_once(traffic_db: str) -> None:
    """Each rollup level (through its read view) holds every record exactly once, coarse levels up
    to their closed_until (schema/005); the load closed blocks while records kept arriving late."""
    conn = await asyncpg.connect(traffic_db, server_settings={"timezone": "UTC"})
    try:
        closed = {r["width"]: r["closed_until"] for r in await conn.fetch("SELECT * FROM malti_rollup_closed")}
        assert closed and all(T0 + timedelta(days=1) < c <= CLOSE_UPTO for c in closed.values()), closed
        assert closed[timedelta(days=7)] > T0  # the week of the data closed (schema/007)
        levels = await conn.fetch("SELECT name, width FROM malti_rollup_levels ORDER BY name")
        assert any(lv["width"] > HOUR for lv in levels)
        for lv in levels:
            upto = closed.get(lv["width"], T1 + timedelta(days=1))
            got = await conn.fetchval(f"SELECT sum(n) FROM {lv['name']}_all WHERE bucket < $1", upto)
            want = await conn.fetchval("SELECT count(*) FROM requests WHERE created_at < $1", upto)
            assert got == want, (lv["name"], got, want)
        # closed blocks were summed by the close, not only by the fold of late records
        assert await conn.fetchval("SELECT count(*) FROM rollup_ep_1d WHERE bucket < $1", closed[timedelta(days=1)]) > 0
        assert await conn.fetchval("SELECT count(*) FROM rollup_ncep_7d WHERE bucket < $1", closed[timedelta(days=7)]) > 0
    finally:
        await conn.close()
