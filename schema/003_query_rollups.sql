-- Coarse rollup levels for fast dashboard queries (read side, malti_server/queries).
--
-- The 5-minute and 1-hour rollups of 001 keep every dimension and status, so a month of busy
-- traffic holds millions of rows there. Dashboards mostly group by service, endpoint or consumer,
-- so this migration adds projections of the same records onto fewer dimensions, at 5 minutes,
-- 1 hour and 1 day, with ONE row per bucket and kept dimensions (dropped dimensions hold a
-- placeholder: NULL for node/context, '' for service/method/endpoint/consumer):
--
--   n, err, n2          all records, errors (status >= 400 except 401), 2xx records
--   s2, lo2, hi2        sum / min / max response time of the 2xx records (NULL without any)
--   st_codes/st_counts  records per status code (sparse, ascending codes)
--   lat_cells           latency histogram of the 2xx records, one integer per cell:
--                       key << 20 | count (keys ascending; a count above 2^20 - 1 is split
--                       over several cells of the same key, merging adds them up)
--   hist                lat_cells as array_send bytes without the 20-byte array header: 8 bytes
--                       per cell (int4 4, int4 cell), so a query concatenates any number of them
--                       with string_agg and numpy reads the result as one array.
--
--   level  dimensions kept                              granularities
--   all    (every service together)                     5min, 1h
--   svc    service                                      5min, 1h, 1d
--   ep     service, method, endpoint                    5min, 1h, 6h, 1d
--   con    service, consumer                            5min, 1h, 6h, 1d
--   acon   consumer (every service together)            5min, 1h, 6h, 1d
--   epcon  service, method, endpoint, consumer          1h, 6h, 1d
--   nc     service, node, context                       1h, 6h, 1d
--
-- Table malti_rollup_levels lists them. The compactor (malti_compact_pending, replaced below)
-- folds pending rows into every level in the same transaction as into rollup_5min / rollup_1h.
-- Retention: *_5min tables follow the 5-minute rollup retention, *_1h, *_6h and *_1d the 1-hour one.

-- Histogram cells: key << 20 | count, count at most 2^20 - 1 (larger counts span several cells).
CREATE FUNCTION malti_cells_of(keys integer[], counts bigint[]) RETURNS integer[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg((k << 20) | least(c - g * 1048575, 1048575)::integer ORDER BY k, g), '{}')
    FROM unnest(keys, counts) AS u(k, c), generate_series(0, (c - 1) / 1048575) AS g
    WHERE c > 0
$$;

-- Merge two cell arrays by adding counts per key.
CREATE FUNCTION malti_cells_merge(a integer[], b integer[]) RETURNS integer[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT malti_cells_of(array_agg(k ORDER BY k), array_agg(c ORDER BY k))
    FROM (SELECT x >> 20 AS k, sum(x & 1048575)::bigint AS c
          FROM (SELECT unnest(a) UNION ALL SELECT unnest(b)) AS u(x)
          GROUP BY 1) AS s
$$;

-- Cells of a 001-style histogram (parallel key and count arrays).
CREATE FUNCTION malti_cells(keys smallint[], counts integer[]) RETURNS integer[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT malti_cells_of(keys::integer[], counts::bigint[])
$$;

-- The packed form read by queries (array_send is STABLE only because it may call output
-- functions of element types; for integer[] it is a pure function of its input).
CREATE FUNCTION malti_cells_pack(cells integer[]) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN cardinality(cells) > 0 THEN substring(array_send(cells) FROM 21) END
$$;

-- Packed cells straight from a 001-style histogram; the one- and two-cell histograms of the
-- full-dimension and pending rows take an inlined fast path (no set-returning calls).
CREATE FUNCTION malti_pack_small(keys smallint[], counts integer[]) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN cardinality(keys) = 1 AND counts[1] < 1048576
            THEN '\x00000004'::bytea || int4send((keys[1]::integer << 20) | counts[1])
        WHEN cardinality(keys) = 2 AND counts[1] < 1048576 AND counts[2] < 1048576
            THEN '\x00000004'::bytea || int4send((keys[1]::integer << 20) | counts[1])
                 || '\x00000004'::bytea || int4send((keys[2]::integer << 20) | counts[2])
        ELSE malti_cells_pack(malti_cells(keys, counts))
    END
$$;

CREATE TABLE malti_rollup_levels (
    name  text PRIMARY KEY,
    width interval NOT NULL,
    dims  text NOT NULL
);
INSERT INTO malti_rollup_levels VALUES
    ('rollup_all_5min', '5 minutes', 'all'), ('rollup_all_1h', '1 hour', 'all'),
    ('rollup_svc_5min', '5 minutes', 'svc'), ('rollup_svc_1h', '1 hour', 'svc'), ('rollup_svc_1d', '1 day', 'svc'),
    ('rollup_ep_5min', '5 minutes', 'ep'), ('rollup_ep_1h', '1 hour', 'ep'), ('rollup_ep_6h', '6 hours', 'ep'),
    ('rollup_ep_1d', '1 day', 'ep'),
    ('rollup_con_5min', '5 minutes', 'con'), ('rollup_con_1h', '1 hour', 'con'), ('rollup_con_6h', '6 hours', 'con'),
    ('rollup_con_1d', '1 day', 'con'),
    ('rollup_acon_5min', '5 minutes', 'acon'), ('rollup_acon_1h', '1 hour', 'acon'),
    ('rollup_acon_6h', '6 hours', 'acon'), ('rollup_acon_1d', '1 day', 'acon'),
    ('rollup_epcon_1h', '1 hour', 'epcon'), ('rollup_epcon_6h', '6 hours', 'epcon'), ('rollup_epcon_1d', '1 day', 'epcon'),
    ('rollup_nc_1h', '1 hour', 'nc'), ('rollup_nc_6h', '6 hours', 'nc'), ('rollup_nc_1d', '1 day', 'nc');

CREATE TABLE malti_coarse_template (
    bucket    timestamptz      NOT NULL,
    service   text             NOT NULL,
    node      text,
    method    text             NOT NULL,
    endpoint  text             NOT NULL,
    consumer  text             NOT NULL,
    context   text,
    n         bigint           NOT NULL,
    err       bigint           NOT NULL,
    n2        bigint           NOT NULL,
    s2        double precision,
    lo2       double precision,
    hi2       double precision,
    st_codes  smallint[]       NOT NULL,
    st_counts integer[]        NOT NULL,
    lat_cells integer[]        NOT NULL
);

DO $$
DECLARE
    v record;
    service_x text;
    node_x text;
    method_x text;
    endpoint_x text;
    consumer_x text;
    context_x text;
BEGIN
    FOR v IN SELECT name, width::text AS width, dims FROM malti_rollup_levels ORDER BY name
    LOOP
        EXECUTE format('CREATE TABLE %I (LIKE malti_coarse_template)', v.name);
        EXECUTE format('ALTER TABLE %I ADD COLUMN hist bytea GENERATED ALWAYS AS (malti_cells_pack(lat_cells)) STORED',
                       v.name);
        -- keep rows inline and uncompressed up to a page: no TOAST lookups when reading histograms
        EXECUTE format('ALTER TABLE %I SET (toast_tuple_target = 8160)', v.name);
        EXECUTE format('ALTER TABLE %I ALTER COLUMN hist SET STORAGE EXTERNAL', v.name);
        -- the unique key leads with what queries filter on: the bucket, or service and endpoint
        IF v.dims IN ('ep', 'epcon') THEN
            EXECUTE format('CREATE UNIQUE INDEX %I ON %I (service, endpoint, bucket, method, consumer, node, context)'
                           ' NULLS NOT DISTINCT', v.name || '_key', v.name);
            EXECUTE format('CREATE INDEX %I ON %I (bucket)', v.name || '_bucket', v.name);
        ELSE
            EXECUTE format('CREATE UNIQUE INDEX %I ON %I (bucket, service, consumer, node, context, method, endpoint)'
                           ' NULLS NOT DISTINCT', v.name || '_key', v.name);
        END IF;
        IF v.dims IN ('con', 'acon', 'epcon') THEN
            EXECUTE format('CREATE INDEX %I ON %I (consumer, bucket)', v.name || '_consumer', v.name);
        END IF;

        -- read view: folded rows plus still-pending partial rows projected to the level, so a
        -- record is visible at every level as soon as ingest answers
        service_x := CASE WHEN v.dims IN ('all', 'acon') THEN '''''::text' ELSE 'service' END;
        node_x := CASE WHEN v.dims = 'nc' THEN 'node' ELSE 'NULL::text' END;
        context_x := CASE WHEN v.dims = 'nc' THEN 'context' ELSE 'NULL::text' END;
        method_x := CASE WHEN v.dims IN ('ep', 'epcon') THEN 'method' ELSE '''''::text' END;
        endpoint_x := CASE WHEN v.dims IN ('ep', 'epcon') THEN 'endpoint' ELSE '''''::text' END;
        consumer_x := CASE WHEN v.dims IN ('con', 'acon', 'epcon') THEN 'consumer' ELSE '''''::text' END;
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
        $q$, v.name || '_all', v.name, v.width, service_x, node_x, method_x, endpoint_x, consumer_x, context_x);
    END LOOP;
END
$$;

DROP TABLE malti_coarse_template;

-- The full-dimension levels of 001 with the same columns (histograms packed on the fly: these
-- serve only queries filtering by node or context together with other dimensions).
CREATE VIEW rollup_full_5min_all AS
    SELECT bucket, service, node, method, endpoint, consumer, context, n,
           CASE WHEN status >= 400 AND status <> 401 THEN n ELSE 0 END AS err,
           CASE WHEN status BETWEEN 200 AND 299 THEN n ELSE 0 END AS n2,
           CASE WHEN status BETWEEN 200 AND 299 THEN sum_ms END AS s2,
           CASE WHEN status BETWEEN 200 AND 299 THEN min_ms END AS lo2,
           CASE WHEN status BETWEEN 200 AND 299 THEN max_ms END AS hi2,
           ARRAY[status] AS st_codes, ARRAY[n::integer] AS st_counts,
           CASE WHEN status BETWEEN 200 AND 299 THEN malti_pack_small(lat_keys, lat_counts) END AS hist
    FROM rollup_5min_all;
CREATE VIEW rollup_full_1h_all AS
    SELECT bucket, service, node, method, endpoint, consumer, context, n,
           CASE WHEN status >= 400 AND status <> 401 THEN n ELSE 0 END AS err,
           CASE WHEN status BETWEEN 200 AND 299 THEN n ELSE 0 END AS n2,
           CASE WHEN status BETWEEN 200 AND 299 THEN sum_ms END AS s2,
           CASE WHEN status BETWEEN 200 AND 299 THEN min_ms END AS lo2,
           CASE WHEN status BETWEEN 200 AND 299 THEN max_ms END AS hi2,
           ARRAY[status] AS st_codes, ARRAY[n::integer] AS st_counts,
           CASE WHEN status BETWEEN 200 AND 299 THEN malti_pack_small(lat_keys, lat_counts) END AS hist
    FROM rollup_1h_all;

-- Fold malti_src (the partial rows being compacted) into every level of one family (levels
-- keeping the same dimensions) in ONE statement: project the rows to the family's dimensions and
-- sum counts per status and histogram cells per key once, then re-bin that (small) result for
-- each bucket width and upsert it, in key order (concurrent folds cannot deadlock). E'\x01'
-- stands in for NULL in join keys (ingest strips control characters, so it never occurs in text).
CREATE FUNCTION malti_fold_family(family text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    lv record;
    i integer := 0;
    body text := '';
BEGIN
    FOR lv IN SELECT name, width FROM malti_rollup_levels WHERE dims = family ORDER BY name LOOP
        i := i + 1;
        body := body || format($q$
        , t%1$s AS (
            SELECT date_bin(%2$L::interval, bucket, timestamptz '2000-01-01 00:00:00+00') AS bucket,
                   service, node_k, method, endpoint, consumer, context_k, status,
                   sum(n) AS n, sum(s) AS s, min(lo) AS lo, max(hi) AS hi
            FROM stats GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
        ), tot%1$s AS (
            SELECT bucket, service, node_k, method, endpoint, consumer, context_k,
                   sum(n)::bigint AS n,
                   coalesce(sum(n) FILTER (WHERE status >= 400 AND status <> 401), 0)::bigint AS err,
                   coalesce(sum(n) FILTER (WHERE status BETWEEN 200 AND 299), 0)::bigint AS n2,
                   sum(s) FILTER (WHERE status BETWEEN 200 AND 299) AS s2,
                   min(lo) FILTER (WHERE status BETWEEN 200 AND 299) AS lo2,
                   max(hi) FILTER (WHERE status BETWEEN 200 AND 299) AS hi2,
                   array_agg(status ORDER BY status) AS codes,
                   array_agg(n::integer ORDER BY status) AS counts
            FROM t%1$s GROUP BY 1, 2, 3, 4, 5, 6, 7
        ), h%1$s AS (
            SELECT bucket, service, node_k, method, endpoint, consumer, context_k,
                   array_agg((k::integer << 20) | least(c - g * 1048575, 1048575)::integer ORDER BY k, g) AS cells
            FROM (SELECT date_bin(%2$L::interval, bucket, timestamptz '2000-01-01 00:00:00+00') AS bucket,
                         service, node_k, method, endpoint, consumer, context_k, k, sum(c)::bigint AS c
                  FROM cells GROUP BY 1, 2, 3, 4, 5, 6, 7, 8) AS x,
                 generate_series(0, (c - 1) / 1048575) AS g
            GROUP BY 1, 2, 3, 4, 5, 6, 7
        ), ins%1$s AS (
            INSERT INTO %3$I AS r (bucket, service, node, method, endpoint, consumer, context,
                                   n, err, n2, s2, lo2, hi2, st_codes, st_counts, lat_cells)
            SELECT t.bucket, t.service, nullif(t.node_k, E'\x01'), t.method, t.endpoint, t.consumer,
                   nullif(t.context_k, E'\x01'), t.n, t.err, t.n2, t.s2, t.lo2, t.hi2, t.codes, t.counts,
                   coalesce(h.cells, '{}')
            FROM tot%1$s AS t
            LEFT JOIN h%1$s AS h USING (bucket, service, node_k, method, endpoint, consumer, context_k)
            ORDER BY t.bucket, t.service, t.node_k, t.method, t.endpoint, t.consumer, t.context_k
            ON CONFLICT (bucket, service, node, method, endpoint, consumer, context) DO UPDATE
            SET n = r.n + EXCLUDED.n,
                err = r.err + EXCLUDED.err,
                n2 = r.n2 + EXCLUDED.n2,
                s2 = CASE WHEN r.s2 IS NULL THEN EXCLUDED.s2 WHEN EXCLUDED.s2 IS NULL THEN r.s2
                          ELSE r.s2 + EXCLUDED.s2 END,
                lo2 = least(r.lo2, EXCLUDED.lo2),
                hi2 = greatest(r.hi2, EXCLUDED.hi2),
                (st_codes, st_counts) = (SELECT m.keys, m.counts
                                         FROM malti_hist_merge(r.st_codes, r.st_counts,
                                                               EXCLUDED.st_codes, EXCLUDED.st_counts) AS m),
                lat_cells = CASE WHEN cardinality(EXCLUDED.lat_cells) = 0 THEN r.lat_cells
                                 WHEN cardinality(r.lat_cells) = 0 THEN EXCLUDED.lat_cells
                                 ELSE malti_cells_merge(r.lat_cells, EXCLUDED.lat_cells) END
        )$q$, i, lv.width, lv.name);
    END LOOP;
    IF i = 0 THEN
        RETURN;
    END IF;
    EXECUTE $q$
        WITH src AS (
            SELECT bucket,
                   CASE WHEN $1 IN ('all', 'acon') THEN '' ELSE service END AS service,
                   CASE WHEN $1 = 'nc' THEN coalesce(node, E'\x01') ELSE E'\x01' END AS node_k,
                   CASE WHEN $1 IN ('ep', 'epcon') THEN method ELSE '' END AS method,
                   CASE WHEN $1 IN ('ep', 'epcon') THEN endpoint ELSE '' END AS endpoint,
                   CASE WHEN $1 IN ('con', 'acon', 'epcon') THEN consumer ELSE '' END AS consumer,
                   CASE WHEN $1 = 'nc' THEN coalesce(context, E'\x01') ELSE E'\x01' END AS context_k,
                   status, n, sum_ms, min_ms, max_ms, lat_keys, lat_counts
            FROM malti_src
        ), stats AS (
            SELECT bucket, service, node_k, method, endpoint, consumer, context_k, status,
                   sum(n) AS n, sum(sum_ms) AS s, min(min_ms) AS lo, max(max_ms) AS hi
            FROM src GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
        ), cells AS (
            SELECT bucket, service, node_k, method, endpoint, consumer, context_k, u.k, sum(u.c)::bigint AS c
            FROM src, unnest(lat_keys, lat_counts) AS u(k, c)
            WHERE status BETWEEN 200 AND 299
            GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
        )$q$ || body || ' SELECT 1' USING family;
END
$$;

-- Replaces 001's compactor: the same atomic move of every pending row, folded into every level.
CREATE OR REPLACE FUNCTION malti_compact_pending() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    moved bigint;
    level record;
BEGIN
    DROP TABLE IF EXISTS malti_src;
    DROP TABLE IF EXISTS malti_moved;
    CREATE TEMP TABLE malti_src (LIKE rollup_pending) ON COMMIT DROP;
    WITH d AS (DELETE FROM rollup_pending RETURNING *)
    INSERT INTO malti_src SELECT * FROM d;
    GET DIAGNOSTICS moved = ROW_COUNT;
    IF moved > 0 THEN
        -- 001's full-dimension levels, exactly as its own compactor did
        CREATE TEMP TABLE malti_moved (LIKE rollup_pending) ON COMMIT DROP;
        INSERT INTO malti_moved SELECT * FROM malti_src;
        PERFORM malti_fold_into('rollup_5min');
        UPDATE malti_moved SET bucket = date_trunc('hour', bucket);
        PERFORM malti_fold_into('rollup_1h');
        DROP TABLE malti_moved;
        FOR level IN SELECT DISTINCT dims FROM malti_rollup_levels ORDER BY dims LOOP
            PERFORM malti_fold_family(level.dims);
        END LOOP;
    END IF;
    DROP TABLE malti_src;
    RETURN moved;
END
$$;
