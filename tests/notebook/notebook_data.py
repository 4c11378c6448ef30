"""Known telemetry for the notebook tests (used by conftest.py and the tests): three hourly buckets of records, put in through the
server's ingest API with service keys, read back through ``malti_notebook`` with a user key."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

# Hour-aligned anchor: the data lives in the three whole hours before it.
ANCHOR = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
HOUR_A, HOUR_B, HOUR_C = (ANCHOR - timedelta(hours=h) for h in (3, 2, 1))
HOSTILE_ENDPOINT = "/<img src=x onerror=alert(1)>"
HOSTILE_CONSUMER = "<b>bold</b>"


def _rec(service, method, endpoint, status, rt, consumer, when, node="node-1", context=None):
    return {"service": service, "node": node, "method": method, "endpoint": endpoint, "status": status,
            "response_time": rt, "consumer": consumer, "context": context, "created_at": when.isoformat()}  # fmt: skip


def known_records() -> list[dict]:
    a = HOUR_A + timedelta(minutes=10)
    b = HOUR_B + timedelta(minutes=10)
    c = HOUR_C + timedelta(minutes=10)
    return [
        # hour A: 4 fast logins
        *(_rec("auth-service", "POST", "/login", 200, rt, "web-app", a + timedelta(seconds=i), context="password")
          for i, rt in enumerate([10.0, 20.0, 30.0, 40.0])),
        # hour B: 2 failed logins, 3 user lookups
        *(_rec("auth-service", "POST", "/login", 500, 5.0, "mobile", b + timedelta(seconds=i)) for i in range(2)),
        *(_rec("user-service", "GET", "/users/{user_id}", 200, 2.0, "web-app", b + timedelta(seconds=10 + i),
               node="node-2") for i in range(3)),
        # hour C: a slow payment, a 404, a hostile route and consumer
        _rec("payment-service", "POST", "/pay", 201, 300.0, "checkout", c, node=None),
        _rec("user-service", "GET", "/users/{user_id}", 404, 0.5, "web-app", c + timedelta(seconds=1), node="node-2"),
        _rec("user-service", "GET", HOSTILE_ENDPOINT, 200, 1.0, HOSTILE_CONSUMER, c + timedelta(seconds=2),
             node="node-2"),
    ]  # fmt: skip


TOTAL = 12
