-- Merge two sparse latency histograms (parallel arrays of ascending bucket keys and counts).
-- Merging is exact count addition, so merged rows equal the histogram of the union of their records.
CREATE FUNCTION malti_hist_merge(ak smallint[], an integer[], bk smallint[], bn integer[],
                                 OUT keys smallint[], OUT counts integer[])
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(k ORDER BY k), '{}'), coalesce(array_agg(c ORDER BY k), '{}')
    FROM (SELECT k, sum(c)::integer AS c
          FROM (SELECT * FROM unnest(ak, an) UNION ALL SELECT * FROM unnest(bk, bn)) AS u(k, c)
          GROUP BY k) AS s
$$;

-- Fold one set of partial rows (temp table malti_moved) into a rollup table, merging rows with the
-- same key in one grouped pass: histogram cells are summed per (key, bucket index), and each partial
-- row's count/sum/min/max ride along on its first cell (every row has at least one), so no join is
-- needed. Upserts go in key order so concurrent folds cannot deadlock.
CREATE FUNCTION malti_fold_into(target regclass) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format($q$
        WITH cells AS (
            SELECT m.bucket, m.service, m.node, m.method, m.endpoint, m.consumer, m.context, m.status, u.k,
                   sum(u.c)::integer AS c,
                   sum(m.n) FILTER (WHERE u.i = 1) AS n,
                   sum(m.sum_ms) FILTER (WHERE u.i = 1) AS s,
                   min(m.min_ms) AS lo,
                   max(m.max_ms) AS hi
            FROM malti_moved AS m, unnest(m.lat_keys, m.lat_counts) WITH ORDINALITY AS u(k, c, i)
            GROUP BY m.bucket, m.service, m.node, m.method, m.endpoint, m.consumer, m.context, m.status, u.k
        )
        INSERT INTO %s AS r
        SELECT bucket, service, node, method, endpoint, consumer, context, status,
               coalesce(sum(n), 0), coalesce(sum(s), 0), min(lo), max(hi),
               array_agg(k ORDER BY k), array_agg(c ORDER BY k)
        FROM cells
        GROUP BY bucket, service, node, method, endpoint, consumer, context, status
        ORDER BY bucket, service, node, method, endpoint, consumer, context, status
        ON CONFLICT (bucket, service, node, method, endpoint, consumer, context, status) DO UPDATE
        SET n = r.n + EXCLUDED.n,
            sum_ms = r.sum_ms + EXCLUDED.sum_ms,
            min_ms = least(r.min_ms, EXCLUDED.min_ms),
            max_ms = greatest(r.max_ms, EXCLUDED.max_ms),
            (lat_keys, lat_counts) = (SELECT m.keys, m.counts
                                      FROM malti_hist_merge(r.lat_keys, r.lat_counts,
                                                            EXCLUDED.lat_keys, EXCLUDED.lat_counts) AS m)
    $q$, target);
END
$$;

-- Fold every pending partial row into the 5-minute and 1-hour rollups, atomically: a reader sees
-- each partial either still pending or already folded, never both or neither.
CREATE FUNCTION malti_compact_pending() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    moved bigint;
BEGIN
    SET LOCAL work_mem = '64MB';
    DROP TABLE IF EXISTS malti_moved;
    CREATE TEMP TABLE malti_moved (LIKE rollup_pending) ON COMMIT DROP;
    WITH d AS (DELETE FROM rollup_pending RETURNING *)
    INSERT INTO malti_moved SELECT * FROM d;
    GET DIAGNOSTICS moved = ROW_COUNT;
    IF moved > 0 THEN
        -- A new temp table has no statistics; without them the planner may pick a poor plan.
        ANALYZE malti_moved;
        PERFORM malti_fold_into('rollup_5min');
        UPDATE malti_moved SET bucket = date_trunc('hour', bucket);
        PERFORM malti_fold_into('rollup_1h');
    END IF;
    DROP TABLE malti_moved;
    RETURN moved;
END
$$;
