"""A day's partition dropped by another process (retention) is created again on the next batch."""

from datetime import datetime, timedelta, timezone

from malti_testing import record


def test_batch_for_a_day_dropped_elsewhere_is_stored(malti_server):
    day = datetime.now(timezone.utc) - timedelta(days=3)
    ts = day.replace(hour=12, minute=0, second=0, microsecond=0)
    first = malti_server.ingest([record(endpoint="/dropped-day", created_at=ts.isoformat())])
    assert first.status_code == 200, first.text
    # What retention in another process does: drop the whole day behind this server's back.
    malti_server.sql(f'DROP TABLE "requests_p{ts:%Y%m%d}"')
    again = malti_server.ingest([record(endpoint="/dropped-day", created_at=ts.isoformat())])
    assert again.status_code == 200, again.text
    rows = malti_server.sql("SELECT count(*) AS n FROM requests WHERE endpoint = '/dropped-day'")
    assert rows[0]["n"] == 1
