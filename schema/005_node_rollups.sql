-- Rollup levels for dashboards filtered by node or context.
--
-- With a node or context filter, the endpoints and consumers sections of a dashboard need those
-- dimensions together with (method, endpoint) or consumer. Before this migration only the
-- full-dimension levels of 001 kept them, so a week filtered by one node read millions of rows.
-- Two more families of 003's coarse levels keep them, at 1 hour, 6 hours and 1 day:
--
--   ncep   service, node, context, method, endpoint     1h, 6h, 1d
--   nccon  service, node, context, consumer             1h, 6h, 1d
--
-- The dimensions each family keeps move from CASE expressions in 003's functions into a table,
-- malti_rollup_families, and malti_fold_family reads them from there. Tables, indexes and read
-- views of the new levels are built exactly as 003 builds its own (same columns, same packed
-- histogram); the compactor folds every family listed, so nothing else changes.

CREATE TABLE malti_rollup_families (
    family text PRIMARY KEY,
    dims   text[] NOT NULL  -- subset of {service, node, method, endpoint, consumer, context}
);
INSERT INTO malti_rollup_families VALUES
    ('all', '{}'),
    ('svc', '{service}'),
    ('ep', '{service,method,endpoint}'),
    ('con', '{service,consumer}'),
    ('acon', '{consumer}'),
    ('epcon', '{service,method,endpoint,consumer}'),
    ('nc', '{service,node,context}'),
    ('ncep', '{service,node,context,method,endpoint}'),
    ('nccon', '{service,node,context,consumer}');

INSERT INTO malti_rollup_levels VALUES
    ('rollup_ncep_1h', '1 hour', 'ncep'), ('rollup_ncep_6h', '6 hours', 'ncep'), ('rollup_ncep_1d', '1 day', 'ncep'),
    ('rollup_nccon_1h', '1 hour', 'nccon'), ('rollup_nccon_6h', '6 hours', 'nccon'),
    ('rollup_nccon_1d', '1 day', 'nccon');

ALTER TABLE malti_rollup_levels
    ADD CONSTRAINT malti_rollup_levels_family FOREIGN KEY (dims) REFERENCES malti_rollup_families (family);

-- Table, indexes and read view of one new level (the layout of 003's levels).
DO $$
DECLARE
    v record;
    col text;
    proj text[];
BEGIN
    FOR v IN SELECT l.name, l.width::text AS width, f.dims
             FROM malti_rollup_levels AS l JOIN malti_rollup_families AS f ON f.family = l.dims
             WHERE l.dims IN ('ncep', 'nccon') ORDER BY l.name
    LOOP
        EXECUTE format('CREATE TABLE %I (LIKE rollup_nc_1h INCLUDING GENERATED INCLUDING STORAGE)', v.name);
        EXECUTE format('ALTER TABLE %I SET (toast_tuple_target = 8160)', v.name);
        EXECUTE format('CREATE UNIQUE INDEX %I ON %I (bucket, service, node, context, consumer, method, endpoint)'
                       ' NULLS NOT DISTINCT', v.name || '_key', v.name);
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

-- 003's fold with the family's dimensions read from malti_rollup_families (007 replaces it again,
-- to leave coarse blocks that are still open to the close).
CREATE OR REPLACE FUNCTION malti_fold_family(family text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    lv record;
    i integer := 0;
    body text := '';
    keeps text[];
BEGIN
    SELECT f.dims INTO keeps FROM malti_rollup_families AS f WHERE f.family = malti_fold_family.family;
    IF keeps IS NULL THEN
        RAISE EXCEPTION 'unknown rollup family %', family;
    END IF;
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
    -- $1..$6: whether the family keeps service, node, method, endpoint, consumer, context
    EXECUTE $q$
        WITH src AS (
            SELECT bucket,
                   CASE WHEN $1 THEN service ELSE '' END AS service,
                   CASE WHEN $2 THEN coalesce(node, E'\x01') ELSE E'\x01' END AS node_k,
                   CASE WHEN $3 THEN method ELSE '' END AS method,
                   CASE WHEN $4 THEN endpoint ELSE '' END AS endpoint,
                   CASE WHEN $5 THEN consumer ELSE '' END AS consumer,
                   CASE WHEN $6 THEN coalesce(context, E'\x01') ELSE E'\x01' END AS context_k,
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
        )$q$ || body || ' SELECT 1'
    USING 'service' = ANY(keeps), 'node' = ANY(keeps), 'method' = ANY(keeps), 'endpoint' = ANY(keeps),
          'consumer' = ANY(keeps), 'context' = ANY(keeps);
END
$$;
