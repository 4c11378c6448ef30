"""The server starts, answers health and stores a record in every view."""

from malti_testing import record


def test_health_reports_healthy(malti_server):
    r = malti_server.get("/health")
    assert r.status_code == 200
    assert r.json()["status"] == "healthy"


def test_ingested_record_is_in_raw_table_and_rollups(malti_server):
    r = malti_server.ingest([record(endpoint="/smoke", response_time=0.25)])
    assert r.status_code == 200, r.text
    assert r.json() == {"message": "Successfully ingested 1 requests", "count": 1, "service": "auth-service"}
    rows = malti_server.sql("SELECT response_time FROM requests WHERE endpoint = '/smoke'")
    assert [row["response_time"] for row in rows] == [0.25]
    for view in ("rollup_5min_all", "rollup_1h_all"):
        n = malti_server.sql(f"SELECT sum(n) AS n FROM {view} WHERE endpoint = '/smoke'")[0]["n"]
        assert n == 1
