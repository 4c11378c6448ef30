"""When the database refuses connections, ingest answers 503 with Retry-After, /health says
"unhealthy" with 503, and both recover once the database is back."""

from __future__ import annotations

import pytest

from malti_testing import record
from server_test_helpers import admin_sql, counts, database_name, own_server, unique, wait_until


@pytest.fixture(scope="module")
def shared_server(pg_admin_url, tmp_path_factory):
    with own_server(pg_admin_url, tmp_path_factory.mktemp("unavailable")) as server:
        yield server


@pytest.fixture
def unavailable_server(shared_server, pg_admin_url):
    """The module's server, its database made to refuse connections; restored (and healthy) afterwards."""
    server = shared_server
    name = database_name(server.database_url)
    assert server.ingest([record()]).status_code == 200  # the pool holds live connections now

    def refuse():
        admin_sql(
            pg_admin_url,
            f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false',
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
            " AND pid <> pg_backend_pid()",
        )

    def restore():
        admin_sql(pg_admin_url, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')

    refuse()
    try:
        yield server, restore
    finally:
        restore()
        assert wait_until(lambda: server.get("/health").status_code == 200, timeout=30), server.log()


def test_ingest_answers_503_with_retry_after_when_database_refuses_connections(unavailable_server):
    server, _ = unavailable_server
    for _ in range(3):  # dead pooled connections first, then refused new ones
        r = server.ingest([record(endpoint=unique())])
        assert r.status_code == 503, r.text
        assert int(r.headers["Retry-After"]) >= 1
        assert r.json()["detail"]


def test_health_answers_503_unhealthy_when_database_refuses_connections(unavailable_server):
    server, _ = unavailable_server
    for _ in range(3):
        r = server.get("/health")
        assert r.status_code == 503, r.text
        assert r.json()["status"] == "unhealthy"


def test_ingest_and_health_recover_when_database_is_back(unavailable_server):
    server, restore = unavailable_server
    assert server.ingest([record()]).status_code == 503
    restore()
    assert wait_until(lambda: server.get("/health").status_code == 200, timeout=15)
    ep = unique()
    r = server.ingest([record(endpoint=ep)])
    assert r.status_code == 200, r.text
    assert counts(server, ep)["requests"] == 1
