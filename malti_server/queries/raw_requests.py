"""Raw records, newest first, with keyset pagination over (created_at, id).

The cursor is an opaque token holding the (created_at, id) of the last record of a page; the next
page continues strictly after it in that order, so records arriving meanwhile never shift a page:
nothing is repeated or skipped.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any

import asyncpg

from .dashboard import iso
from .params import UTC, MetricsQuery, QueryError
from .sql import Binds, filter_conditions

_COLUMNS = "id, service, node, method, endpoint, status, response_time, consumer, context, created_at"


def encode_cursor(created_at: datetime, record_id: int) -> str:
    raw = f"{created_at.astimezone(UTC).isoformat()}|{record_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, _, rid = raw.partition("|")
        t = datetime.fromisoformat(when)
        if t.tzinfo is None:
            raise ValueError
        return t, int(rid)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise QueryError("cursor", "invalid cursor: pass next_cursor from a previous page unchanged") from None


def build_sql(q: MetricsQuery) -> tuple[str, list[Any]]:
    binds = Binds()
    conds = [f"created_at >= {binds(q.start)}", f"created_at <= {binds(q.end)}"]
    conds += filter_conditions(q.filters, binds)
    if q.status is not None:
        conds.append(f"status = {binds(q.status)}")
    if q.cursor:
        t, rid = decode_cursor(q.cursor)
        conds.append(f"(created_at, id) < ({binds(t)}, {binds(rid)})")
    sql = (
        f"SELECT {_COLUMNS} FROM requests WHERE {' AND '.join(conds)}"
        f" ORDER BY created_at DESC, id DESC LIMIT {binds(q.limit + 1)}"
    )
    return sql, binds.values


async def list_requests(conn: asyncpg.Connection, q: MetricsQuery) -> dict[str, Any]:
    sql, args = build_sql(q)
    rows = await conn.fetch(sql, *args)
    more = len(rows) > q.limit
    rows = rows[: q.limit]
    out = [
        {
            "id": r["id"], "service": r["service"], "node": r["node"], "method": r["method"],
            "endpoint": r["endpoint"], "status": r["status"], "response_time": r["response_time"],
            "consumer": r["consumer"], "context": r["context"], "created_at": iso(r["created_at"]),
        }
        for r in rows
    ]
    cursor = encode_cursor(rows[-1]["created_at"], rows[-1]["id"]) if more and rows else None
    return {"requests": out, "next_cursor": cursor}
