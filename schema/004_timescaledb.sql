-- TimescaleDB only: compress the raw hypertable's older chunks and drop chunks past the raw retention.
-- On plain PostgreSQL (no timescaledb extension, or `requests` not a hypertable) this does nothing:
-- there the server drops whole daily partitions itself (malti_server/maintenance.py).
--
-- Compression: chunks older than 1 day, segmented by service (every query filters or groups by it),
-- ordered by time as the raw-record queries read them. TimescaleDB 2.11+ accepts inserts into
-- compressed chunks, so late or backfilled records still ingest.
-- Retention: chunks older than 7 days (the default `[retention] raw`; the server keeps the policy equal
-- to the configured value, malti_server/maintenance.py) are dropped by TimescaleDB's
-- job scheduler. Rollup tables stay ordinary tables, trimmed by the server.
--
-- Idempotent: compression is enabled only when it is not yet, and the policies use if_not_exists.
-- Everything goes through EXECUTE so that plain PostgreSQL never has to resolve TimescaleDB names.
DO $$
DECLARE
    is_hypertable boolean := false;
    compressed    boolean := false;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        RETURN;
    END IF;

    EXECUTE $q$
        SELECT count(*) > 0, coalesce(bool_or(compression_enabled), false)
        FROM timescaledb_information.hypertables
        WHERE hypertable_schema = current_schema() AND hypertable_name = 'requests'
    $q$ INTO is_hypertable, compressed;
    IF NOT is_hypertable THEN
        RETURN;
    END IF;

    IF NOT compressed THEN
        EXECUTE $q$
            ALTER TABLE requests SET (
                timescaledb.compress,
                timescaledb.compress_segmentby = 'service',
                timescaledb.compress_orderby = 'created_at DESC, id DESC'
            )
        $q$;
    END IF;

    EXECUTE $q$
        SELECT add_compression_policy('requests', compress_after => INTERVAL '1 day', if_not_exists => true)
    $q$;
    EXECUTE $q$
        SELECT add_retention_policy('requests', drop_after => INTERVAL '7 days', if_not_exists => true)
    $q$;
END
$$;
