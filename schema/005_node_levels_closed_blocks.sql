-- Rollup levels for dashboards filtered by node or context, and 6-hour and 1-day levels
-- written once per block.
--
-- 1. Node and context. With a node or context filter, the endpoints and consumers sections of a
--    dashboard need those dimensions together with (method, endpoint) or consumer. Before this
--    migration only the full-dimension levels of 001 kept them, so a week filtered by one node
--    read millions of rows. Two more families of 003's coarse levels keep them, at 1 hour,
--    6 hours and 1 day:
--
--      ncep   service, node, context, method, endpoint     1h, 6h, 1d
--      nccon  service, node, context, consumer             1h, 6h, 1d
--
--    The dimensions each family keeps move from CASE expressions in 003's functions into a
--    table, malti_rollup_families, which the fold below reads. Tables, indexes and read views of
--    the new levels are built exactly as 003 builds its own (same columns, same packed histogram).
--
-- 2. Closed blocks. Until now every fold (every two seconds) upserted the new records into all of
--    a family's levels, so a busy group's 6-hour and daily rows were rewritten, and their
--    histograms merged, thousands of times a day: about a third of the whole fold. Now:
--
--    * malti_rollup_closed holds, per coarse width (6 hours, 1 day), the time up to which that
--      width's tables are complete ("closed_until", a block boundary).
--    * The fold writes 5-minute and 1-hour levels as before, and coarse levels only for records
--      older than closed_until (late arrivals into a block already closed).
--    * After folding, the compactor closes every block that ended before its argument `upto`
--      (default: two minutes ago): it sums the family's next finer level (1 hour for 6 hours;
--      6 hours, else 1 hour, for 1 day) over the new blocks into the coarse table, then moves
--      closed_until. Both happen in the fold's transaction, under its advisory lock.
--    * Queries read a coarse level only for blocks before its closed_until
--      (malti_server/queries/sql.py plan_sources); the rest of a range comes from finer levels.
--      A record is therefore counted once: in the finer level until its block closes, then in
--      the coarse one as well, which queries read instead for that block.
--
--    Existing coarse rows of still-open blocks were partial; they are deleted here and rebuilt
--    from the hourly rows when their block closes.

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

CREATE TABLE malti_rollup_closed (
    width        interval PRIMARY KEY,
    closed_until timestamptz NOT NULL
);
INSERT INTO malti_rollup_closed
SELECT DISTINCT width, date_bin(width, now(), timestamptz '2000-01-01 00:00:00+00')
FROM malti_rollup_levels WHERE width > interval '1 hour';

DO $$
DECLARE
    lv record;
BEGIN
    FOR lv IN SELECT l.name, c.closed_until FROM malti_rollup_levels AS l
              JOIN malti_rollup_closed AS c USING (width) ORDER BY l.name LOOP
        EXECUTE format('DELETE FROM %I WHERE bucket >= $1', lv.name) USING lv.closed_until;
    END LOOP;
END
$$;

-- The merge of a new row into an existing one of a coarse level (003's rule), shared by the fold
-- and the close. `r` is the stored row, EXCLUDED the new one.
CREATE FUNCTION malti_coarse_merge_sql() RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT $m$
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
    $m$
$$;

-- Fold malti_src (the partial rows being compacted) into the levels of one family: every 5-minute
-- and 1-hour level, and of the coarse levels only the rows before their closed_until. One
-- statement: the rows are projected to the family's dimensions (malti_rollup_families) and summed
-- per status and per histogram key once, then re-binned per width and upserted in key order
-- (concurrent folds cannot deadlock). E'\x01' stands in for NULL in join keys (ingest strips
-- control characters, so it never occurs in text).
CREATE OR REPLACE FUNCTION malti_fold_family(family text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    lv record;
    i integer := 0;
    body text := '';
    keeps text[];
    first_bucket timestamptz;
BEGIN
    SELECT f.dims INTO keeps FROM malti_rollup_families AS f WHERE f.family = malti_fold_family.family;
    IF keeps IS NULL THEN
        RAISE EXCEPTION 'unknown rollup family %', family;
    END IF;
    SELECT min(bucket) INTO first_bucket FROM malti_src;
    FOR lv IN SELECT l.name, l.width, coalesce(c.closed_until, 'infinity') AS upto
              FROM malti_rollup_levels AS l LEFT JOIN malti_rollup_closed AS c USING (width)
              WHERE l.dims = family ORDER BY l.name LOOP
        IF first_bucket IS NULL OR first_bucket >= lv.upto THEN
            CONTINUE;  -- a coarse level with nothing before its closed_until in this fold
        END IF;
        i := i + 1;
        body := body || format($q$
        , t%1$s AS (
            SELECT date_bin(%2$L::interval, bucket, timestamptz '2000-01-01 00:00:00+00') AS bucket,
                   service, node_k, method, endpoint, consumer, context_k, status,
                   sum(n) AS n, sum(s) AS s, min(lo) AS lo, max(hi) AS hi
            FROM stats WHERE bucket < %4$L::timestamptz GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
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
                  FROM cells WHERE bucket < %4$L::timestamptz GROUP BY 1, 2, 3, 4, 5, 6, 7, 8) AS x,
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
            %5$s
        )$q$, i, lv.width, lv.name, lv.upto, malti_coarse_merge_sql());
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

-- Close the coarse blocks that ended by `upto`: sum each coarse level's next finer level over the
-- blocks between its closed_until and the last boundary before `upto`, then move closed_until.
-- 6 hours closes before 1 day, so a day can be summed from closed 6-hour rows.
CREATE FUNCTION malti_close_coarse(upto timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    w record;
    lv record;
    target timestamptz;
    source text;
BEGIN
    FOR w IN SELECT width, closed_until FROM malti_rollup_closed ORDER BY width FOR UPDATE LOOP
        -- at most one day of blocks per call (a server back after days catches up call by call),
        -- and never past a finer coarse width's closed_until (a day sums closed 6-hour rows)
        target := least(date_bin(w.width, upto, timestamptz '2000-01-01 00:00:00+00'),
                        w.closed_until + greatest(w.width, interval '1 day'));
        SELECT least(target, min(date_bin(w.width, c.closed_until, timestamptz '2000-01-01 00:00:00+00')))
        INTO target FROM malti_rollup_closed AS c WHERE c.width < w.width;
        IF target <= w.closed_until THEN
            CONTINUE;
        END IF;
        FOR lv IN SELECT name, dims FROM malti_rollup_levels WHERE width = w.width ORDER BY name LOOP
            SELECT f.name INTO source FROM malti_rollup_levels AS f
            WHERE f.dims = lv.dims AND f.width < w.width AND f.width >= interval '1 hour'
            ORDER BY f.width DESC LIMIT 1;
            IF source IS NULL THEN
                RAISE EXCEPTION 'rollup level % has no finer level of at least 1 hour to close from', lv.name;
            END IF;
            EXECUTE format($q$
                WITH src AS (
                    SELECT date_bin(%3$L::interval, bucket, timestamptz '2000-01-01 00:00:00+00') AS bucket,
                           service, coalesce(node, E'\x01') AS node_k, method, endpoint, consumer,
                           coalesce(context, E'\x01') AS context_k,
                           n, err, n2, s2, lo2, hi2, st_codes, st_counts, lat_cells
                    FROM %2$I WHERE bucket >= $1 AND bucket < $2
                ), tot AS (
                    SELECT bucket, service, node_k, method, endpoint, consumer, context_k,
                           sum(n)::bigint AS n, sum(err)::bigint AS err, sum(n2)::bigint AS n2,
                           sum(s2) AS s2, min(lo2) AS lo2, max(hi2) AS hi2
                    FROM src GROUP BY 1, 2, 3, 4, 5, 6, 7
                ), st AS (
                    SELECT bucket, service, node_k, method, endpoint, consumer, context_k,
                           array_agg(code ORDER BY code) AS codes, array_agg(c::integer ORDER BY code) AS counts
                    FROM (SELECT bucket, service, node_k, method, endpoint, consumer, context_k, u.code,
                                 sum(u.c) AS c
                          FROM src, unnest(st_codes, st_counts) AS u(code, c)
                          GROUP BY 1, 2, 3, 4, 5, 6, 7, 8) AS x
                    GROUP BY 1, 2, 3, 4, 5, 6, 7
                ), h AS (
                    SELECT bucket, service, node_k, method, endpoint, consumer, context_k,
                           array_agg((k << 20) | least(c - g * 1048575, 1048575)::integer ORDER BY k, g) AS cells
                    FROM (SELECT bucket, service, node_k, method, endpoint, consumer, context_k,
                                 x >> 20 AS k, sum(x & 1048575)::bigint AS c
                          FROM src, unnest(lat_cells) AS u(x)
                          GROUP BY 1, 2, 3, 4, 5, 6, 7, 8) AS y,
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
                %4$s
            $q$, lv.name, source, w.width, malti_coarse_merge_sql()) USING w.closed_until, target;
        END LOOP;
        UPDATE malti_rollup_closed SET closed_until = target WHERE width = w.width;
    END LOOP;
END
$$;

-- The compactor: fold every pending row (atomically moved out of rollup_pending) into every
-- level, then close the coarse blocks that ended by `upto`.
CREATE FUNCTION malti_compact_pending(upto timestamptz) RETURNS bigint
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
        FOR level IN SELECT family FROM malti_rollup_families ORDER BY family LOOP
            PERFORM malti_fold_family(level.family);
        END LOOP;
    END IF;
    DROP TABLE malti_src;
    PERFORM malti_close_coarse(upto);
    RETURN moved;
END
$$;

-- What the server's background job calls: blocks close two minutes after they end, so records a
-- few seconds late still arrive before their block is summed (later ones are folded in anyway).
CREATE OR REPLACE FUNCTION malti_compact_pending() RETURNS bigint
LANGUAGE sql AS $$
    SELECT malti_compact_pending(now() - interval '2 minutes')
$$;
