"""Error answers stay bounded: an oversized batch is 413 even when its records are invalid, and a
422 lists at most 100 errors while saying how many records were bad."""

from malti_testing import record


def test_oversized_batch_of_invalid_records_is_413(start_server):
    server = start_server(limits={"max_batch_records": 5})
    bad = [{k: v for k, v in record().items() if k != "consumer"} for _ in range(6)]
    r = server.ingest(bad, service="auth-service")
    assert r.status_code == 413, r.text
    assert "limit is 5" in r.json()["detail"]


def test_422_lists_at_most_100_errors_and_counts_all(malti_server):
    bad = [record(status=42) for _ in range(150)]
    r = malti_server.ingest(bad)
    assert r.status_code == 422, r.text
    body = r.json()
    assert len(body["errors"]) == 100
    assert "150 invalid record(s)" in body["detail"]
