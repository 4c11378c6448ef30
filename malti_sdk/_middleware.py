"""``MaltiMiddleware``: pure ASGI request telemetry.

Per HTTP request it does the minimum on the request path: two clock reads, one
wrapped ``send`` to see the status and the end of the body, and, after the response,
one tuple appended to a deque. Route patterns come from an index of the app's
route tree (:mod:`._routes`); JSON, timestamps and network I/O happen later, in
the sender.
"""

from __future__ import annotations

import logging
from time import perf_counter, time
from typing import Any, Awaitable, Callable, MutableMapping

from ._consumer import consumer_from_scope, context_from_scope
from ._records import KNOWN_METHODS, normalize_method
from ._routes import RouteResolver
from ._telemetry import TelemetrySystem, get_telemetry_system

__all__ = ["MaltiMiddleware"]

logger = logging.getLogger("malti_sdk")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class MaltiMiddleware:
    """Records every HTTP request of an ASGI app and ships it to Malti.

    ``app.add_middleware(MaltiMiddleware)`` on Starlette or FastAPI, or wrap any ASGI
    app: ``app = MaltiMiddleware(app)``. Settings come from the ``MALTI_*`` environment
    (or :func:`configure_malti`). The sender starts with the app's lifespan, or on
    the first request when no lifespan runs.

    Args:
        app: the ASGI application.
        auto_inject_lifespan: start and stop the sender with the app's lifespan
            (startup, and a bounded flush at shutdown).
        telemetry_system: the system to record into; default the process-wide one.
    """

    def __init__(
        self,
        app: ASGIApp,
        auto_inject_lifespan: bool = True,
        telemetry_system: TelemetrySystem | None = None,
    ) -> None:
        self.app = app
        self.auto_inject_lifespan = auto_inject_lifespan
        self._system = telemetry_system
        self._routes = RouteResolver(app)

    @property
    def telemetry_system(self) -> TelemetrySystem:
        system = self._system
        if system is None:
            system = self._system = get_telemetry_system()
        return system

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan" and self.auto_inject_lifespan:
                await self._lifespan(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return

        start = perf_counter()
        status = 0
        end = 0.0

        async def send_with_telemetry(message: Message) -> None:
            nonlocal status, end
            if message["type"] == "http.response.start":
                status = message["status"]
            elif not message.get("more_body"):
                end = perf_counter()  # last body chunk (or trailers / pathsend): response complete
            await send(message)

        try:
            await self.app(scope, receive, send_with_telemetry)
        except Exception:
            if not end:
                end = perf_counter()
                status = 500
            self._record(scope, status, start, end)
            raise
        self._record(scope, status or 500, start, end or perf_counter())

    def _record(self, scope: Scope, status: int, start: float, end: float) -> None:
        try:
            system = self._system or self.telemetry_system
            sender = system.batch_sender
            config = sender.config
            if (status == 404 or status == 401) and config.clean_mode:
                return
            if not config.api_key:
                return
            buffer = sender.buffer
            rows = buffer.rows
            if not 100 <= status <= 599:
                buffer.count_dropped("invalid", 1)
                return
            method = KNOWN_METHODS.get(scope["method"])
            if method is None:
                method = normalize_method(scope["method"])
            row = (
                method,
                self._routes.resolve(scope),
                status,
                (end - start) * 1000.0,
                consumer_from_scope(scope, config.use_ip_as_consumer, config.ip_anonymize),
                context_from_scope(scope),
                time(),
            )
            if len(rows) < buffer.capacity:
                rows.append(row)
            else:
                buffer.count_dropped("overflow", 1)
            if not sender._running:
                sender.start_soon()
        except Exception:  # telemetry must never break the app
            logger.debug("Malti: could not record a request", exc_info=True)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        system = self.telemetry_system

        async def receive_with_start() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await system.start()
                except Exception:
                    logger.exception("Malti: could not start the sender")
            return message

        async def send_with_stop(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                try:
                    await system.stop()
                except Exception:
                    logger.exception("Malti: flush at shutdown failed")
            await send(message)

        await self.app(scope, receive_with_start, send_with_stop)
