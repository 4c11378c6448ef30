"""Helpers of the SDK tests: a scriptable ingest receiver under a real uvicorn, ASGI calls, polling."""

from __future__ import annotations

import asyncio
import gc
import gzip
import json
import socket
import threading
import time
from collections import deque
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import httpx
import uvicorn


@contextmanager
def collector_runs_at_next_allocation(make_garbage: Callable[[], Any], count: int = 1) -> Iterator[None]:
    """Cyclic garbage from ``make_garbage()`` (objects with finalizers, say) left for the
    collector, which then runs at the first allocation of a tracked object in the block."""
    threshold = gc.get_threshold()
    gc.collect()
    gc.disable()
    for _ in range(count):
        garbage = make_garbage()
        garbage.cycle = garbage
        del garbage
    gc.set_threshold(1)
    gc.enable()
    try:
        yield
    finally:
        gc.set_threshold(*threshold)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """A throwaway ``/api/v1/ingest`` endpoint: records what it gets, answers from a script.

    ``script`` holds ``(status, headers)`` answers used in order; once empty, 200.
    ``requests`` lists every request (headers, decoded records); ``stored`` lists the
    records of 2xx answers, once per Idempotency-Key (like the real server).
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.script: deque[tuple[int, dict[str, str]]] = deque()
        self.requests: list[dict[str, Any]] = []
        self.stored: list[dict[str, Any]] = []
        self._keys: set[str] = set()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def app(self, scope, receive, send) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        if headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        records = json.loads(body)["requests"]
        self.requests.append({"headers": headers, "records": records, "path": scope["path"]})
        status, extra = self.script.popleft() if self.script else (200, {})
        if 200 <= status < 300:
            key = headers.get("idempotency-key")
            if key not in self._keys:
                if key:
                    self._keys.add(key)
                self.stored.extend(records)
        payload = json.dumps({"detail": "scripted", "count": len(records)}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")]
                + [(k.encode(), v.encode()) for k, v in extra.items()],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    def start(self) -> "Receiver":
        async def dispatch(scope, receive, send):  # looks self.app up per request: tests may swap it
            await self.app(scope, receive, send)

        config = uvicorn.Config(
            dispatch,
            interface="asgi3",
            host="127.0.0.1",
            port=self.port,
            log_level="error",
            lifespan="off",
            access_log=False,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("receiver did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(10)
            self._server = None


async def wait_for(predicate, timeout: float = 15.0, interval: float = 0.02) -> None:
    """Poll ``predicate`` until true (fails the test after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(interval)


async def call(app, *paths: str, method: str = "GET", headers: dict | None = None) -> list[int]:
    """Send requests to an ASGI app in process; returns the status codes."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        return [(await client.request(method, path, headers=headers)).status_code for path in paths]
