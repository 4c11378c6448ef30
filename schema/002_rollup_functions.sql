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
-- same key. Set-based: histogram cells are summed per (key, bucket index) in one GROUP BY, then
-- re-packed into arrays. E'\x01' stands in for NULL in join keys (ingest strips control characters,
-- so it never occurs in stored text). Upserts go in key order so concurrent folds cannot deadlock.
CREATE FUNCTION malti_fold_into(target regclass) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format($q$
        WITH totals AS (
            SELECT bucket, service, node, method, endpoint, consumer, context, status,
                   sum(n) AS n, sum(sum_ms) AS sum_ms, min(min_ms) AS min_ms, max(max_ms) AS max_ms
            FROM malti_moved
            GROUP BY bucket, service, node, method, endpoint, consumer, context, status
        ), cells AS (
            SELECT m.bucket, m.service, coalesce(m.node, E'\x01') AS node_k, m.method, m.endpoint,
                   m.consumer, coalesce(m.context, E'\x01') AS context_k, m.status,
                   u.k, sum(u.c)::integer AS c
            FROM malti_moved AS m, unnest(m.lat_keys, m.lat_counts) AS u(k, c)
            GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9
        ), hists AS (
            SELECT bucket, service, node_k, method, endpoint, consumer, context_k, status,
                   array_agg(k ORDER BY k) AS keys, array_agg(c ORDER BY k) AS counts
            FROM cells
            GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
        )
        INSERT INTO %s AS r
        SELECT t.bucket, t.service, t.node, t.method, t.endpoint, t.consumer, t.context, t.status,
               t.n, t.sum_ms, t.min_ms, t.max_ms, h.keys, h.counts
        FROM totals AS t
        JOIN hists AS h
          ON h.bucket = t.bucket AND h.service = t.service AND h.node_k = coalesce(t.node, E'\x01')
         AND h.method = t.method AND h.endpoint = t.endpoint AND h.consumer = t.consumer
         AND h.context_k = coalesce(t.context, E'\x01') AND h.status = t.status
        ORDER BY 1, 2, 3, 4, 5, 6, 7, 8
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
    DROP TABLE IF EXISTS malti_moved;
    CREATE TEMP TABLE malti_moved (LIKE rollup_pending) ON COMMIT DROP;
    WITH d AS (DELETE FROM rollup_pending RETURNING *)
    INSERT INTO malti_moved SELECT * FROM d;
    GET DIAGNOSTICS moved = ROW_COUNT;
    IF moved > 0 THEN
        PERFORM malti_fold_into('rollup_5min');
        UPDATE malti_moved SET bucket = date_trunc('hour', bucket);
        PERFORM malti_fold_into('rollup_1h');
    END IF;
    DROP TABLE malti_moved;
    RETURN moved;
END
$$;
