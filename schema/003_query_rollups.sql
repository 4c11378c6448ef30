-- Coarse rollup levels for fast dashboard queries (read side, malti_server/queries).
--
-- The 5-minute and 1-hour rollups of 001 keep every dimension, so a month of busy traffic holds
-- millions of rows there. Dashboards mostly group by service, endpoint or consumer, so this
-- migration adds projections of the same rows onto fewer dimensions, at 5 minutes, 1 hour and
-- 1 day. Every table has the layout of rollup_pending (dropped dimensions hold a placeholder:
-- NULL for node/context, '' for method/endpoint/consumer), so the compactor folds pending rows
-- into all of them with the same malti_fold_into(). Each table also stores `hist`, the latency
-- histogram of 2xx rows packed with array_send (keys int2[] then counts int4[]), which the query
-- layer decodes with numpy: fetching bytea is ~15x faster than decoding arrays client-side.
--
--   level  dimensions kept                              granularities
--   svc    service, status                              5min, 1h
--   ep     service, method, endpoint, status            5min, 1h, 1d
--   con    service, consumer, status                    5min, 1h, 1d
--   epcon  service, method, endpoint, consumer, status  1h, 1d
--   nc     service, node, context, status               1h, 1d     (distinct nodes/contexts)
--
-- Retention: *_5min tables follow the 5-minute rollup retention, *_1h and *_1d the 1-hour one.

-- Packed histogram: array_send of both arrays (stable only because it looks up output functions;
-- for int2[]/int4[] it is a pure function of its input, so declaring the wrapper IMMUTABLE is safe).
CREATE FUNCTION malti_hist_pack(keys smallint[], counts integer[]) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT array_send(keys) || array_send(counts) $$;

DO $$
DECLARE
    level record;
BEGIN
    FOR level IN
        SELECT * FROM (VALUES
            ('rollup_svc_5min'), ('rollup_svc_1h'),
            ('rollup_ep_5min'), ('rollup_ep_1h'), ('rollup_ep_1d'),
            ('rollup_con_5min'), ('rollup_con_1h'), ('rollup_con_1d'),
            ('rollup_epcon_1h'), ('rollup_epcon_1d'),
            ('rollup_nc_1h'), ('rollup_nc_1d')
        ) AS v(name)
    LOOP
        EXECUTE format('CREATE TABLE %I (LIKE rollup_pending INCLUDING ALL)', level.name);
        EXECUTE format(
            'ALTER TABLE %I ADD COLUMN hist bytea GENERATED ALWAYS AS ('
            'CASE WHEN status BETWEEN 200 AND 299 THEN malti_hist_pack(lat_keys, lat_counts) END) STORED',
            level.name);
    END LOOP;
END
$$;

-- Unique keys (the ON CONFLICT target of malti_fold_into), leading with the columns queries
-- filter on.
CREATE UNIQUE INDEX rollup_svc_5min_key ON rollup_svc_5min
    (bucket, service, node, method, endpoint, consumer, context, status) NULLS NOT DISTINCT;
CREATE UNIQUE INDEX rollup_svc_1h_key ON rollup_svc_1h
    (bucket, service, node, method, endpoint, consumer, context, status) NULLS NOT DISTINCT;

CREATE UNIQUE INDEX rollup_ep_5min_key ON rollup_ep_5min
    (service, endpoint, bucket, method, node, consumer, context, status) NULLS NOT DISTINCT;
CREATE UNIQUE INDEX rollup_ep_1h_key ON rollup_ep_1h
    (service, endpoint, bucket, method, node, consumer, context, status) NULLS NOT DISTINCT;
CREATE UNIQUE INDEX rollup_ep_1d_key ON rollup_ep_1d
    (service, endpoint, bucket, method, node, consumer, context, status) NULLS NOT DISTINCT;
CREATE INDEX rollup_ep_5min_bucket ON rollup_ep_5min (bucket);
CREATE INDEX rollup_ep_1h_bucket ON rollup_ep_1h (bucket);
CREATE INDEX rollup_ep_1d_bucket ON rollup_ep_1d (bucket);

CREATE UNIQUE INDEX rollup_con_5min_key ON rollup_con_5min
    (bucket, service, consumer, node, method, endpoint, context, status) NULLS NOT DISTINCT;
CREATE UNIQUE INDEX rollup_con_1h_key ON rollup_con_1h
    (bucket, service, consumer, node, method, endpoint, context, status) NULLS NOT DISTINCT;
CREATE UNIQUE INDEX rollup_con_1d_key ON rollup_con_1d
    (bucket, service, consumer, node, method, endpoint, context, status) NULLS NOT DISTINCT;

CREATE UNIQUE INDEX rollup_epcon_1h_key ON rollup_epcon_1h
    (service, endpoint, bucket, method, consumer, node, context, status) NULLS NOT DISTINCT;
CREATE UNIQUE INDEX rollup_epcon_1d_key ON rollup_epcon_1d
    (service, endpoint, bucket, method, consumer, node, context, status) NULLS NOT DISTINCT;
CREATE INDEX rollup_epcon_1h_bucket ON rollup_epcon_1h (bucket);
CREATE INDEX rollup_epcon_1d_bucket ON rollup_epcon_1d (bucket);

CREATE UNIQUE INDEX rollup_nc_1h_key ON rollup_nc_1h
    (bucket, service, node, context, method, endpoint, consumer, status) NULLS NOT DISTINCT;
CREATE UNIQUE INDEX rollup_nc_1d_key ON rollup_nc_1d
    (bucket, service, node, context, method, endpoint, consumer, status) NULLS NOT DISTINCT;

-- Read views: folded rows plus the still-pending partial rows projected to the same level, so a
-- record is visible at every level as soon as ingest answers. Uniform columns for the query layer.
DO $$
DECLARE
    v record;
    node_x text;
    method_x text;
    endpoint_x text;
    consumer_x text;
    context_x text;
BEGIN
    FOR v IN
        SELECT * FROM (VALUES
            ('rollup_svc_5min', '5 minutes', 'svc'), ('rollup_svc_1h', '1 hour', 'svc'),
            ('rollup_ep_5min', '5 minutes', 'ep'), ('rollup_ep_1h', '1 hour', 'ep'),
            ('rollup_ep_1d', '1 day', 'ep'),
            ('rollup_con_5min', '5 minutes', 'con'), ('rollup_con_1h', '1 hour', 'con'),
            ('rollup_con_1d', '1 day', 'con'),
            ('rollup_epcon_1h', '1 hour', 'epcon'), ('rollup_epcon_1d', '1 day', 'epcon'),
            ('rollup_nc_1h', '1 hour', 'nc'), ('rollup_nc_1d', '1 day', 'nc')
        ) AS t(name, width, dims)
    LOOP
        node_x := CASE WHEN v.dims = 'nc' THEN 'node' ELSE 'NULL::text' END;
        context_x := CASE WHEN v.dims = 'nc' THEN 'context' ELSE 'NULL::text' END;
        method_x := CASE WHEN v.dims IN ('ep', 'epcon') THEN 'method' ELSE '''''::text' END;
        endpoint_x := CASE WHEN v.dims IN ('ep', 'epcon') THEN 'endpoint' ELSE '''''::text' END;
        consumer_x := CASE WHEN v.dims IN ('con', 'epcon') THEN 'consumer' ELSE '''''::text' END;
        EXECUTE format($q$
            CREATE VIEW %1$I AS
                SELECT bucket, service, node, method, endpoint, consumer, context, status,
                       n, sum_ms, min_ms, max_ms, hist
                FROM %2$I
                UNION ALL
                SELECT date_bin(%3$L::interval, bucket, timestamptz '2000-01-01 00:00:00+00'),
                       service, %4$s, %5$s, %6$s, %7$s, %8$s, status, n, sum_ms, min_ms, max_ms,
                       CASE WHEN status BETWEEN 200 AND 299 THEN malti_hist_pack(lat_keys, lat_counts) END
                FROM rollup_pending
        $q$, v.name || '_all', v.name, v.width, node_x, method_x, endpoint_x, consumer_x, context_x);
    END LOOP;
END
$$;

-- The full-dimension levels of 001 with the same uniform columns (histogram packed on the fly).
CREATE VIEW rollup_full_5min_all AS
    SELECT bucket, service, node, method, endpoint, consumer, context, status, n, sum_ms, min_ms, max_ms,
           CASE WHEN status BETWEEN 200 AND 299 THEN malti_hist_pack(lat_keys, lat_counts) END AS hist
    FROM rollup_5min_all;
CREATE VIEW rollup_full_1h_all AS
    SELECT bucket, service, node, method, endpoint, consumer, context, status, n, sum_ms, min_ms, max_ms,
           CASE WHEN status BETWEEN 200 AND 299 THEN malti_hist_pack(lat_keys, lat_counts) END AS hist
    FROM rollup_1h_all;

-- Fold malti_src (the partial rows being compacted) into one rollup table after projecting it to
-- that table's granularity and dimensions.
CREATE FUNCTION malti_fold_level(target regclass, width interval, dims text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM malti_moved;
    INSERT INTO malti_moved
    SELECT date_bin(width, bucket, timestamptz '2000-01-01 00:00:00+00'), service,
           CASE WHEN dims IN ('full', 'nc') THEN node END,
           CASE WHEN dims IN ('full', 'ep', 'epcon') THEN method ELSE '' END,
           CASE WHEN dims IN ('full', 'ep', 'epcon') THEN endpoint ELSE '' END,
           CASE WHEN dims IN ('full', 'con', 'epcon') THEN consumer ELSE '' END,
           CASE WHEN dims IN ('full', 'nc') THEN context END,
           status, n, sum_ms, min_ms, max_ms, lat_keys, lat_counts
    FROM malti_src;
    PERFORM malti_fold_into(target);
END
$$;

-- Replaces 001's compactor: the same atomic move of every pending row, folded into every level.
CREATE OR REPLACE FUNCTION malti_compact_pending() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    moved bigint;
BEGIN
    DROP TABLE IF EXISTS malti_src;
    DROP TABLE IF EXISTS malti_moved;
    CREATE TEMP TABLE malti_src (LIKE rollup_pending) ON COMMIT DROP;
    WITH d AS (DELETE FROM rollup_pending RETURNING *)
    INSERT INTO malti_src SELECT * FROM d;
    GET DIAGNOSTICS moved = ROW_COUNT;
    IF moved > 0 THEN
        CREATE TEMP TABLE malti_moved (LIKE rollup_pending) ON COMMIT DROP;
        PERFORM malti_fold_level('rollup_5min', '5 minutes', 'full');
        PERFORM malti_fold_level('rollup_1h', '1 hour', 'full');
        PERFORM malti_fold_level('rollup_svc_5min', '5 minutes', 'svc');
        PERFORM malti_fold_level('rollup_svc_1h', '1 hour', 'svc');
        PERFORM malti_fold_level('rollup_ep_5min', '5 minutes', 'ep');
        PERFORM malti_fold_level('rollup_ep_1h', '1 hour', 'ep');
        PERFORM malti_fold_level('rollup_ep_1d', '1 day', 'ep');
        PERFORM malti_fold_level('rollup_con_5min', '5 minutes', 'con');
        PERFORM malti_fold_level('rollup_con_1h', '1 hour', 'con');
        PERFORM malti_fold_level('rollup_con_1d', '1 day', 'con');
        PERFORM malti_fold_level('rollup_epcon_1h', '1 hour', 'epcon');
        PERFORM malti_fold_level('rollup_epcon_1d', '1 day', 'epcon');
        PERFORM malti_fold_level('rollup_nc_1h', '1 hour', 'nc');
        PERFORM malti_fold_level('rollup_nc_1d', '1 day', 'nc');
        DROP TABLE malti_moved;
    END IF;
    DROP TABLE malti_src;
    RETURN moved;
END
$$;
