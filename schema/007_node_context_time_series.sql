-- Rollup levels for dashboards filtered by node or context, and weekly levels.
--
-- 1. Time series by node or context. A dashboard's time series reads one level at its own
--    resolution. Before this migration a node or context filter found no 5-minute level keeping
--    those dimensions but the full-dimension one of 001 (a day filtered by one node read every
--    5-minute row of that node), and at 1 hour the nc level, which keeps each service and context
--    apart (20 rows of large histograms per hour for one node in the benchmark). New levels:
--
--      level  dimensions kept                          granularities
--      nc     service, node, context                   5min (new), 1h, 6h, 1d
--      anc    node, context (every service together)   5min, 1h
--
-- 2. Weeks. Over a month, the endpoints and consumers sections of a node- or context-filtered
--    dashboard summed 29 daily rows per (service, node, context, endpoint) or consumer, and the
--    merge of their histograms (in SQL and numpy) was most of the time. Every family with a 1-day
--    level gets a 7-day level (weeks start on Saturday 00:00 UTC, the bucket origin's weekday),
--    written once per week when it closes (schema/005's close: malti_rollup_closed gets a 7-day
--    watermark, the close sums the family's daily rows), late records folded in directly.
--
-- Tables, indexes and read views are built as 003/005 build theirs (same columns, packed
-- histogram, read view over pending rows). The fold (malti_fold_family), the close
-- (malti_close_coarse) and the retention (malti_server/maintenance.py) are table-driven and take
-- the new levels as they are registered here. Rollup tables are ordinary tables on TimescaleDB as
-- well (004 touches only the raw hypertable), so nothing here depends on it.
--
-- Backfill: an upgraded server answers from the new levels at once, so they are filled here from
-- the data the queries read before: rollup_nc_5min from the full-dimension rollup_5min,
-- rollup_anc_5min from it, rollup_anc_1h from rollup_nc_1h, and each weekly level from its
-- family's daily level, for the weeks before the new 7-day watermark (the last week boundary
-- before the daily watermark). Only folded rows are copied: pending rows are in every read view
-- already. The compaction lock is held to the end of the transaction, so no fold or close moves
-- rows between the snapshots the backfill reads (malti_server/db.py COMPACTION_LOCK =
-- 0x6D616C746903).

SELECT pg_advisory_xact_lock(120265198823683);

INSERT INTO malti_rollup_families VALUES ('anc', '{node,context}');
INSERT INTO malti_rollup_levels VALUES
    ('rollup_nc_5min', '5 minutes', 'nc'),
    ('rollup_anc_5min', '5 minutes', 'anc'), ('rollup_anc_1h', '1 hour', 'anc');
INSERT INTO malti_rollup_levels
SELECT replace(name, '_1d', '_7d'), interval '7 days', dims FROM malti_rollup_levels WHERE width = interval '1 day';

-- Table, indexes and read view of each new level (the layout of 005's levels).
DO $$
DECLARE
    v record;
    col text;
    proj text[];
BEGIN
    FOR v IN SELECT l.name, l.width::text AS width, f.dims
             FROM malti_rollup_levels AS l JOIN malti_rollup_families AS f ON f.family = l.dims
             WHERE l.name IN ('rollup_nc_5min', 'rollup_anc_5min', 'rollup_anc_1h') OR l.width = interval '7 days'
             ORDER BY l.name
    LOOP
        IF v.width = '7 days' THEN  -- the indexes of the family's daily level
            EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING ALL)', v.name, replace(v.name, '_7d', '_1d'));
        ELSE
            EXECUTE format('CREATE TABLE %I (LIKE rollup_nc_1h INCLUDING GENERATED INCLUDING STORAGE)', v.name);
            EXECUTE format('CREATE UNIQUE INDEX %I ON %I (bucket, service, node, context, consumer, method, endpoint)'
                           ' NULLS NOT DISTINCT', v.name || '_key', v.name);
        END IF;
        EXECUTE format('ALTER TABLE %I SET (toast_tuple_target = 8160)', v.name);
        proj := '{}';
        FOREACH col IN ARRAY ARRAY['service', 'node', 'method', 'endpoint', 'consumer', 'context'] LOOP
            proj := proj || CASE
                WHEN col = ANY(v.dims) THEN col
                WHEN col IN ('node', 'context') THEN 'NULL::text'
                ELSE '''''::text' END;
        END LOOP;
        EXECUTE format($q$
            CREATE VIEW %1$I AS
                SELECT bucket, service, node, method, endpoint, consumer, context,
                       n, err, n2, s2, lo2, hi2, st_codes, st_counts, hist
                FROM %2$I
                UNION ALL
                SELECT date_bin(%3$L::interval, bucket, timestamptz '2000-01-01 00:00:00+00'),
                       %4$s, %5$s, %6$s, %7$s, %8$s, %9$s,
                       n,
                       CASE WHEN status >= 400 AND status <> 401 THEN n ELSE 0 END,
                       CASE WHEN status BETWEEN 200 AND 299 THEN n ELSE 0 END,
                       CASE WHEN status BETWEEN 200 AND 299 THEN sum_ms END,
                       CASE WHEN status BETWEEN 200 AND 299 THEN min_ms END,
                       CASE WHEN status BETWEEN 200 AND 299 THEN max_ms END,
                       ARRAY[status], ARRAY[n::integer],
                       CASE WHEN status BETWEEN 200 AND 299 THEN malti_pack_small(lat_keys, lat_counts) END
                FROM rollup_pending
        $q$, v.name || '_all', v.name, v.width, proj[1], proj[2], proj[3], proj[4], proj[5], proj[6]);
    END LOOP;
END
$$;

-- Fill rollup level `target` from the folded rows of `source` before `upto`: a finer or equal-width table that
-- keeps at least the target family's dimensions, either a coarse level (003's layout) or one of
-- 001's full-dimension tables (rollup_5min, rollup_1h: a row per status, 001-style histogram).
-- Rows are projected to the target's dimensions, re-binned to its width and summed per key: counts
-- and status counts add up, min/max combine, histogram cells add up per key (the fold's rule), so
-- the target holds what folding the same records into it would have written. Existing target rows
-- are merged with (malti_coarse_merge_sql), as the fold does.
CREATE FUNCTION malti_backfill_level(target text, source text, upto timestamptz DEFAULT 'infinity')
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    lv record;
    keeps text[];
    keys text;
    base text;
    codes text;
    cells text;
    moved bigint;
BEGIN
    SELECT l.width, f.dims INTO lv FROM malti_rollup_levels AS l
    JOIN malti_rollup_families AS f ON f.family = l.dims WHERE l.name = target;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown rollup level %', target;
    END IF;
    keeps := lv.dims;
    keys := format('date_bin(%L::interval, bucket, timestamptz ''2000-01-01 00:00:00+00'') AS bucket, '
                   '%s AS service, %s AS node_k, %s AS method, %s AS endpoint, %s AS consumer, %s AS context_k',
                   lv.width,
                   CASE WHEN 'service' = ANY(keeps) THEN 'service' ELSE '''''::text' END,
                   CASE WHEN 'node' = ANY(keeps) THEN 'coalesce(node, E''\x01'')' ELSE 'E''\x01''::text' END,
                   CASE WHEN 'method' = ANY(keeps) THEN 'method' ELSE '''''::text' END,
                   CASE WHEN 'endpoint' = ANY(keeps) THEN 'endpoint' ELSE '''''::text' END,
                   CASE WHEN 'consumer' = ANY(keeps) THEN 'consumer' ELSE '''''::text' END,
                   CASE WHEN 'context' = ANY(keeps) THEN 'coalesce(context, E''\x01'')' ELSE 'E''\x01''::text' END);
    IF source IN ('rollup_5min', 'rollup_1h') THEN
        base := format($q$
            SELECT %1$s, n,
                   CASE WHEN status >= 400 AND status <> 401 THEN n ELSE 0 END AS err,
                   CASE WHEN status BETWEEN 200 AND 299 THEN n ELSE 0 END AS n2,
                   CASE WHEN status BETWEEN 200 AND 299 THEN sum_ms END AS s2,
                   CASE WHEN status BETWEEN 200 AND 299 THEN min_ms END AS lo2,
                   CASE WHEN status BETWEEN 200 AND 299 THEN max_ms END AS hi2,
                   status, lat_keys, lat_counts
            FROM %2$I WHERE bucket < %3$L::timestamptz$q$, keys, source, upto);
        codes := 'SELECT bucket, service, node_k, method, endpoint, consumer, context_k, status AS code, n AS c FROM base';
        cells := 'SELECT bucket, service, node_k, method, endpoint, consumer, context_k, u.k::integer AS k, u.c'
                 ' FROM base, unnest(lat_keys, lat_counts) AS u(k, c) WHERE status BETWEEN 200 AND 299';
    ELSE
        base := format('SELECT %s, n, err, n2, s2, lo2, hi2, st_codes, st_counts, lat_cells FROM %I'
                       ' WHERE bucket < %L::timestamptz', keys, source, upto);
        codes := 'SELECT bucket, service, node_k, method, endpoint, consumer, context_k, u.code, u.c'
                 ' FROM base, unnest(st_codes, st_counts) AS u(code, c)';
        cells := 'SELECT bucket, service, node_k, method, endpoint, consumer, context_k, x >> 20 AS k, x & 1048575 AS c'
                 ' FROM base, unnest(lat_cells) AS u(x)';
    END IF;
    EXECUTE format($q$
        WITH base AS MATERIALIZED (%2$s
        ), tot AS (
            SELECT bucket, service, node_k, method, endpoint, consumer, context_k,
                   sum(n)::bigint AS n, sum(err)::bigint AS err, sum(n2)::bigint AS n2,
                   sum(s2) AS s2, min(lo2) AS lo2, max(hi2) AS hi2
            FROM base GROUP BY 1, 2, 3, 4, 5, 6, 7
        ), st AS (
            SELECT bucket, service, node_k, method, endpoint, consumer, context_k,
                   array_agg(code ORDER BY code) AS codes, array_agg(c::integer ORDER BY code) AS counts
            FROM (SELECT bucket, service, node_k, method, endpoint, consumer, context_k, code, sum(c) AS c
                  FROM (%3$s) AS x GROUP BY 1, 2, 3, 4, 5, 6, 7, 8) AS y
            GROUP BY 1, 2, 3, 4, 5, 6, 7
        ), h AS (
            SELECT bucket, service, node_k, method, endpoint, consumer, context_k,
                   array_agg((k << 20) | least(c - g * 1048575, 1048575)::integer ORDER BY k, g) AS cells
            FROM (SELECT bucket, service, node_k, method, endpoint, consumer, context_k, k, sum(c)::bigint AS c
                  FROM (%4$s) AS x GROUP BY 1, 2, 3, 4, 5, 6, 7, 8) AS y,
                 generate_series(0, (c - 1) / 1048575) AS g
            GROUP BY 1, 2, 3, 4, 5, 6, 7
        )
        INSERT INTO %1$I AS r (bucket, service, node, method, endpoint, consumer, context,
                               n, err, n2, s2, lo2, hi2, st_codes, st_counts, lat_cells)
        SELECT t.bucket, t.service, nullif(t.node_k, E'\x01'), t.method, t.endpoint, t.consumer,
               nullif(t.context_k, E'\x01'), t.n, t.err, t.n2, t.s2, t.lo2, t.hi2, s.codes, s.counts,
               coalesce(h.cells, '{}')
        FROM tot AS t
        JOIN st AS s USING (bucket, service, node_k, method, endpoint, consumer, context_k)
        LEFT JOIN h USING (bucket, service, node_k, method, endpoint, consumer, context_k)
        ORDER BY t.bucket, t.service, t.node_k, t.method, t.endpoint, t.consumer, t.context_k
        %5$s
    $q$, target, base, codes, cells, malti_coarse_merge_sql());
    GET DIAGNOSTICS moved = ROW_COUNT;
    RETURN moved;
END
$$;

SELECT malti_backfill_level('rollup_nc_5min', 'rollup_5min');
SELECT malti_backfill_level('rollup_anc_5min', 'rollup_nc_5min');
SELECT malti_backfill_level('rollup_anc_1h', 'rollup_nc_1h');

-- weeks are complete up to the last week boundary the daily levels are complete to
INSERT INTO malti_rollup_closed
SELECT interval '7 days', date_bin(interval '7 days', closed_until, timestamptz '2000-01-01 00:00:00+00')
FROM malti_rollup_closed WHERE width = interval '1 day';

DO $$
DECLARE
    lv record;
BEGIN
    FOR lv IN SELECT l.name, c.closed_until FROM malti_rollup_levels AS l
              JOIN malti_rollup_closed AS c USING (width) WHERE l.width = interval '7 days' ORDER BY l.name LOOP
        PERFORM malti_backfill_level(lv.name, replace(lv.name, '_7d', '_1d'), lv.closed_until);
    END LOOP;
    FOR lv IN SELECT name FROM malti_rollup_levels
              WHERE name IN ('rollup_nc_5min', 'rollup_anc_5min', 'rollup_anc_1h') OR width = interval '7 days'
              ORDER BY name LOOP
        EXECUTE format('ANALYZE %I', lv.name);
    END LOOP;
END
$$;
