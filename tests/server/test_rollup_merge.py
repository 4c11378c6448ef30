"""The histogram merge functions of schema/006 give exactly what the set-based SQL of 002/003 gave.

Random sorted histograms (empty ones, single cells, counts that overflow a 20-bit cell and so
span several cells) are merged by the installed functions and by reference copies of the original
SQL definitions, in the same database.
"""

from __future__ import annotations

import asyncio
import random

import asyncpg
import pytest

from malti_server.db import migrate
from malti_testing import create_database, drop_database

REFERENCE = r"""
CREATE FUNCTION ref_cells_of(keys integer[], counts bigint[]) RETURNS integer[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(array_agg((k << 20) | least(c - g * 1048575, 1048575)::integer ORDER BY k, g), '{}')
    FROM unnest(keys, counts) AS u(k, c), generate_series(0, (c - 1) / 1048575) AS g
    WHERE c > 0
$$;
CREATE FUNCTION ref_cells_merge(a integer[], b integer[]) RETURNS integer[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT ref_cells_of(array_agg(k ORDER BY k), array_agg(c ORDER BY k))
    FROM (SELECT x >> 20 AS k, sum(x & 1048575)::bigint AS c
          FROM (SELECT unnest(a) UNION ALL SELECT unnest(b)) AS u(x)
          GROUP BY 1) AS s
$$;
CREATE FUNCTION ref_hist_merge(ak smallint[], an integer[], bk smallint[], bn integer[],
                               OUT keys smallint[], OUT counts integer[])
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(array_agg(k ORDER BY k), '{}'), coalesce(array_agg(c ORDER BY k), '{}')
    FROM (SELECT k, sum(c)::integer AS c
          FROM (SELECT * FROM unnest(ak, an) UNION ALL SELECT * FROM unnest(bk, bn)) AS u(k, c)
          GROUP BY k) AS s
$$;
"""


def cells(rng: random.Random) -> list[int]:
    """A histogram as the rollups store it: sorted keys, a count over 2^20 - 1 split over cells."""
    out = []
    for k in sorted(rng.sample(range(0, 1400), rng.choice([0, 1, 2, 5, 40, 300]))):
        c = rng.choice([1, 2, 17, 1048575, 1048576, 3_000_000, rng.randrange(1, 5000)])
        while c > 0:
            part = min(c, 1048575)
            out.append((k << 20) | part)
            c -= part
    return out


def statuses(rng: random.Random) -> tuple[list[int], list[int]]:
    codes = sorted(rng.sample([200, 201, 204, 301, 304, 400, 401, 404, 422, 429, 500, 503], rng.randrange(0, 6)))
    return codes, [rng.randrange(1, 100_000) for _ in codes]


@pytest.fixture(scope="module")
def merge_db(pg_admin_url):
    url = create_database(pg_admin_url)

    async def setup():
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
            await conn.execute(REFERENCE)
        finally:
            await conn.close()

    asyncio.run(setup())
    yield url
    drop_database(pg_admin_url, url)


async def test_cells_merge_matches_reference(merge_db):
    rng = random.Random(6)
    pairs = [(cells(rng), cells(rng)) for _ in range(400)]
    conn = await asyncpg.connect(merge_db)
    try:
        rows = await conn.fetch(
            "SELECT malti_cells_merge(a, b) AS got, ref_cells_merge(a, b) AS want"
            " FROM unnest($1::text[], $2::text[]) AS p(x, y), LATERAL (SELECT x::integer[] AS a, y::integer[] AS b) AS q",
            ["{" + ",".join(map(str, a)) + "}" for a, _ in pairs], ["{" + ",".join(map(str, b)) + "}" for _, b in pairs])
    finally:
        await conn.close()
    assert len(rows) == len(pairs)
    for row in rows:
        assert list(row["got"]) == list(row["want"])


async def test_hist_merge_matches_reference(merge_db):
    rng = random.Random(7)
    conn = await asyncpg.connect(merge_db)
    try:
        for _ in range(200):
            (ak, an), (bk, bn) = statuses(rng), statuses(rng)
            got = await conn.fetchrow("SELECT * FROM malti_hist_merge($1::smallint[], $2::integer[], $3::smallint[], $4::integer[])",
                                      ak, an, bk, bn)
            want = await conn.fetchrow("SELECT * FROM ref_hist_merge($1::smallint[], $2::integer[], $3::smallint[], $4::integer[])",
                                       ak, an, bk, bn)
            assert (list(got["keys"]), list(got["counts"])) == (list(want["keys"]), list(want["counts"]))
        got = await conn.fetchrow("SELECT * FROM malti_hist_merge(NULL, NULL, '{5}', '{2}')")
        assert (list(got["keys"]), list(got["counts"])) == ([5], [2])
    finally:
        await conn.close()
