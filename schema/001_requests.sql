-- Raw request records, one row per HTTP request an instrumented app served.
-- Column names are the original Malti schema's; response_time is milliseconds and may be fractional.
-- On TimescaleDB (preloaded) the table is a hypertable; on plain PostgreSQL it is partitioned by day,
-- and the server creates partitions ahead of the data and drops them at retention time.
CREATE SEQUENCE requests_id_seq AS bigint CACHE 1000;

DO $$
BEGIN
    IF current_setting('shared_preload_libraries', true) LIKE '%timescaledb%'
       AND EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
        CREATE EXTENSION IF NOT EXISTS timescaledb;
        CREATE TABLE requests (
            id            bigint           NOT NULL DEFAULT nextval('requests_id_seq'),
            created_at    timestamptz      NOT NULL,
            service       text             NOT NULL,
            node          text,
            method        text             NOT NULL,
            endpoint      text             NOT NULL,
            status        smallint         NOT NULL,
            response_time double precision NOT NULL,
            consumer      text             NOT NULL,
            context       text
        );
        PERFORM create_hypertable('requests', 'created_at', chunk_time_interval => interval '1 day');
    ELSE
        CREATE TABLE requests (
            id            bigint           NOT NULL DEFAULT nextval('requests_id_seq'),
            created_at    timestamptz      NOT NULL,
            service       text             NOT NULL,
            node          text,
            method        text             NOT NULL,
            endpoint      text             NOT NULL,
            status        smallint         NOT NULL,
            response_time double precision NOT NULL,
            consumer      text             NOT NULL,
            context       text
        ) PARTITION BY RANGE (created_at);
    END IF;
END
$$;

ALTER SEQUENCE requests_id_seq OWNED BY requests.id;

-- Only the indexes the raw table's own queries need (index upkeep is the write bottleneck):
-- time order with a tie-breaker for keyset pagination and realtime buckets, and per-service time ranges.
CREATE INDEX requests_created_at_id_idx ON requests (created_at, id);
CREATE INDEX requests_service_created_at_idx ON requests (service, created_at);

-- Rollups: one row per (bucket, every dimension), with exact count/sum/min/max and a sparse
-- log-bucketed latency histogram (malti_server/histogram.py: relative error <= 1 %).
-- Ingest appends partial rows to rollup_pending in the raw insert's transaction; the compactor
-- folds them into rollup_5min and rollup_1h. The *_all views merge both, so a record is in
-- every view the moment ingest answers 200.
CREATE TABLE rollup_pending (
    bucket     timestamptz      NOT NULL,   -- 5-minute bucket start
    service    text             NOT NULL,
    node       text,
    method     text             NOT NULL,
    endpoint   text             NOT NULL,
    consumer   text             NOT NULL,
    context    text,
    status     smallint         NOT NULL,
    n          bigint           NOT NULL,
    sum_ms     double precision NOT NULL,
    min_ms     double precision NOT NULL,
    max_ms     double precision NOT NULL,
    lat_keys   smallint[]       NOT NULL,
    lat_counts integer[]        NOT NULL
);

CREATE TABLE rollup_5min (LIKE rollup_pending INCLUDING ALL);
CREATE UNIQUE INDEX rollup_5min_key ON rollup_5min
    (bucket, service, node, method, endpoint, consumer, context, status) NULLS NOT DISTINCT;

CREATE TABLE rollup_1h (LIKE rollup_pending INCLUDING ALL);
CREATE UNIQUE INDEX rollup_1h_key ON rollup_1h
    (bucket, service, node, method, endpoint, consumer, context, status) NULLS NOT DISTINCT;

CREATE VIEW rollup_5min_all AS
    SELECT * FROM rollup_5min
    UNION ALL
    SELECT * FROM rollup_pending;

CREATE VIEW rollup_1h_all AS
    SELECT * FROM rollup_1h
    UNION ALL
    SELECT date_trunc('hour', bucket) AS bucket, service, node, method, endpoint, consumer, context,
           status, n, sum_ms, min_ms, max_ms, lat_keys, lat_counts
    FROM rollup_pending;

-- Idempotency keys: a retried batch (same service + Idempotency-Key) is stored once.
CREATE TABLE ingest_batches (
    service     text        NOT NULL,
    key         text        NOT NULL,
    record_count integer    NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service, key)
);
CREATE INDEX ingest_batches_created_at_idx ON ingest_batches (created_at);
