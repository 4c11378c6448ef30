"""``MaltiMiddleware``: pure ASGI request telemetry.

Per HTTP request it does the minimum on the request path: two clock reads, one
wrapped ``send`` to see the status and the end of the body, and, after the response,
one row appended to the buffer (a tuple into a deque here; a slot of the compiled
``RowStore``, no object made, in C). Route patterns come from an index of the app's
route tree (:mod:`._routes`); JSON, timestamps and network I/O happen later, in
the sender.

Under a real server the request path runs with cold CPU caches: each object it reads
costs more than its bytecode. The common case (sender running, a key set, no IP mode,
no consumer or context in the request state, an indexed route) therefore reads one
snapshot tuple kept on the middleware instead of walking system, sender, config and
buffer. The sender forgets the snapshot whenever configuration, capacity or its running
state changes, and :meth:`MaltiMiddleware._record` handles everything else and takes a
new one.

With ``malti_sdk._speedups`` built (a C compiler at install), the request's awaitable,
the send wrapper and the common case run in C, with the same checks in the same order;
everything else still comes here. ``__call__`` is then a compiled method (a
``_speedups.CallMethod``, over a base that keeps ``app`` and ``_cell`` in the object)
returning that awaitable (a ``_speedups.Call``): neither a frame of ours runs to make it,
nor does a coroutine frame of ours sit in the request's await chain, which the app's
coroutine would pass through at every resume. The pure-Python path
below (``_serve``) stays the reference (and the fallback), and the tests run on both.
"""

from __future__ import annotations

import asyncio
import collections.abc
import inspect
import logging
import sys
from time import perf_counter, time
from typing import Any, Awaitable, Callable, MutableMapping

from ._consumer import _CONSUMER_HEADERS, ANONYMOUS, consumer_from_scope, context_from_scope
from . import _records
from ._records import KNOWN_METHODS, normalize_method
from ._routes import UNMATCHED, RouteResolver
from ._sender import BatchSender
from . import _telemetry
from ._telemetry import TelemetrySystem, get_telemetry_system

# the compiled request path (malti_sdk/_speedups.c), or None: see _records._load_speedups
_speedups = _records.speedups

__all__ = ["MaltiMiddleware"]

logger = logging.getLogger("malti_sdk")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _PythonBase:
    """MaltiMiddleware's base without the compiled module (with it: ``_speedups.Middleware``,
    which keeps ``app`` and ``_cell`` in the object for its ``__call__``)."""

    _cell: list | None = None  # (a subclass that skipped __init__: made by the first snapshot)


_Base: Any = getattr(_speedups, "Middleware", None) or _PythonBase


class MaltiMiddleware(_Base):
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
        self._cached: tuple | None = None  # (config, sender, buffer, settings...) of _settings()
        # [(rows, backlog limit, clean_mode, route index)] while the common case applies, else
        # [None]: a one-item list, which the compiled Call reads at the end of each request
        # without an attribute look-up (see the _snapshot property)
        self._cell: list = [None]

    # Class-level defaults: a subclass written for the original may skip our __init__.
    auto_inject_lifespan = True
    _system: TelemetrySystem | None = None
    _followed: Any = None  # the process-wide system last found (see _current_system)
    _cached: tuple | None = None
    _hooks: tuple[str, ...] = ()  # the original's extension points a subclass overrides
    _route_resolver: RouteResolver | None = None  # see _routes

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._hooks = tuple(name for name in _HOOKS if getattr(cls, name) is not getattr(MaltiMiddleware, name))

    @property
    def _routes(self) -> RouteResolver:
        # Built on first use, so a subclass that skipped our __init__ has one too. (Not through
        # self.__dict__: on 3.11, an instance whose __dict__ was asked for keeps its attributes
        # in a dict that no attribute read of __call__ can be specialised for.)
        routes = self._route_resolver
        if routes is None:
            routes = self._route_resolver = RouteResolver(self.app, on_rebuild=self._forget_snapshot)
        return routes

    @property
    def _snapshot(self) -> tuple | None:
        """What the common case needs, while it applies: (rows, backlog limit, clean_mode,
        route index); else None. The sender forgets it on any change (_forget_snapshot)."""
        cell = self._cell
        return None if cell is None else cell[0]

    @_snapshot.setter
    def _snapshot(self, snapshot: tuple | None) -> None:
        cell = self._cell
        if cell is None:
            self._cell = [snapshot]
        else:
            cell[0] = snapshot

    def __getstate__(self) -> dict[str, Any]:
        # copy and pickle: with the compiled base, app and _cell live in the object itself
        state = dict(vars(self))
        for name in ("app", "_cell"):
            if name not in state and hasattr(self, name):
                state[name] = getattr(self, name)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)

    @property
    def telemetry_system(self) -> TelemetrySystem:
        """The system given to the constructor, else the process-wide one (as it is now)."""
        return self._system or _process_system()

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """The request's awaitable (asyncio, inspect and uvicorn take this for a coroutine
        function: see _mark_coroutine_function).

        With the compiled module this is a ``_speedups.CallMethod`` in its place: for an
        HTTP request it returns a ``_speedups.Call`` (no coroutine frame of ours in the
        request's await chain), which records the request when the app's coroutine ends,
        as ``_serve`` does; see _use_speedups."""
        return self._serve(scope, receive, send)

    def _completed(self, scope: Scope, watch: Any) -> None:
        """A request of the compiled path that its common case did not record (or that raised)."""
        status = watch.status
        if watch.end <= 0 or not status:  # the response was not complete
            watch.mark_end()
            status = 500
        self._record(scope, status, watch.start, watch.end, watch.root, watch.params)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan" and self.auto_inject_lifespan:
                await self._lifespan(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return

        # The pure-Python request path (no compiled module): the reference for the C one.
        start = perf_counter()
        status = 0
        end = 0.0
        # Where this app is mounted: the middleware may sit on a sub-application below a
        # Mount, whose prefix its own route index does not know (see _mount_prefix).
        root = scope.get("root_path")
        params = scope.get("path_params") if root else None  # a parameterised Mount above

        # A plain function returning the inner send's awaitable: one coroutine frame
        # less per message than an ``async def`` wrapper. ``end`` is 0 until the body
        # starts, -1 while it streams, and the time the response was complete after.
        def send_with_telemetry(message: Message) -> Awaitable[None]:
            nonlocal status, end
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message.get("more_body"):
                end = -1.0
            elif end:
                # The last chunk (or trailers) of a stream: complete once the server took
                # it, which waits while a slow client drains what earlier chunks filled.
                async def send_last() -> None:
                    nonlocal end
                    try:
                        await send(message)
                    finally:
                        end = perf_counter()

                return send_last()
            else:
                end = perf_counter()  # a single body: the server takes it without waiting
            return send(message)

        try:
            await self.app(scope, receive, send_with_telemetry)
        except Exception:
            if end <= 0 or not status:  # the response was not complete
                end = perf_counter()
                status = 500
            self._record(scope, status, start, end, root, params)
            raise
        # The common case, inline (see the module docstring); anything else: _record.
        cell = self._cell
        snapshot = None if cell is None else cell[0]
        if snapshot is not None and end > 0 and type(status) is int and 100 <= status <= 599:
            try:
                rows, limit, clean_mode, index = snapshot
                route = scope.get("route")
                entry = index.get(id(route))
                method = KNOWN_METHODS.get(scope["method"])
                state = scope.get("state")  # lifespan state is copied into every request
                if (
                    entry is not None
                    and entry[0] is route
                    and type(entry[1]) is str
                    and method is not None
                    and not (state and ("malti_consumer" in state or "context" in state or "malti_context" in state))
                    and len(rows) < limit
                    and (not root or root == scope.get("app_root_path", root))
                ):
                    if (status == 404 or status == 401) and clean_mode:
                        return
                    consumer = ANONYMOUS
                    rank = 4
                    for name, value in scope["headers"]:
                        if name in _CONSUMER_HEADERS:  # no method call for the other headers
                            found = _CONSUMER_HEADERS[name]
                            if found < rank:
                                consumer = value or ANONYMOUS
                                rank = found
                    rows.append((method, entry[1], status, (end - start) * 1000.0, consumer, None, time()))
                    return
            except Exception:  # telemetry must never break the app
                self._failed()
                return
        if end <= 0 or not status:  # the app returned without completing a response
            status, end = 500, perf_counter()
        self._record(scope, status, start, end, root, params)

    def _forget_snapshot(self) -> None:
        self._snapshot = None

    def _failed(self, error: BaseException | None = None) -> None:
        """A request could not be recorded (a bug, or input nothing anticipated): count it.
        ``error``: what the compiled path caught (the Python path calls this in its handler)."""
        logger.debug("Malti: could not record a request", exc_info=error if error is not None else True)
        try:
            self._settings()[2].count_dropped("error", 1)  # (None for a stand-in: nothing to count in)
        except Exception:
            pass

    def _current_system(self) -> Any:
        """The system to record into: the one given, else the process-wide one, looked up again
        only when it has been replaced (a patched getter or an overridden property: every time)."""
        system = self._system
        if system is None:
            system = self._followed
            if system is None or system is not _telemetry._system:
                system = self._followed = self.telemetry_system  # a subclass may override the property
        return system

    def _settings(self, system: Any = None) -> tuple | None:
        """What recording needs of the system, looked up once per configuration; None for a
        stand-in system that is not ours (see _record)."""
        if system is None:
            system = self._current_system()
        sender = system.batch_sender
        cached = self._cached
        if cached is None or cached[1] is not sender or cached[0] is not sender.config:
            if not isinstance(sender, BatchSender):
                return None
            config = sender.config
            cached = self._cached = (
                config,
                sender,
                sender.buffer,
                config.clean_mode,
                bool(config.api_key),
                config.use_ip_as_consumer,
                config.ip_anonymize,
            )
        return cached

    def _record(
        self, scope: Scope, status: int, start: float, end: float, root: Any = None, params: Any = None
    ) -> None:
        try:
            system = self._system
            if system is None:  # the process-wide one: look again only if it was replaced
                # (_current_system's test, inline: in IP mode every request comes this way,
                # and the call costs 725 instructions a request, callgrind)
                system = self._followed
                if system is not _telemetry._system or system is None:
                    system = self._current_system()
            settings = self._settings(system)
            if settings is not None:
                _, sender, buffer, clean_mode, has_key, use_ip, anonymize = settings
                if (status == 404 or status == 401) and clean_mode:
                    return
                if not has_key:
                    return
                if not 100 <= status <= 599:
                    buffer.count_dropped("invalid", 1)
                    return
            else:  # a stand-in system (a test's mock of the original's): asked as the original asked
                sender = system.batch_sender
                if sender.should_ignore_status(status) or not sender.has_api_key():
                    return
                buffer, use_ip, anonymize = None, sender.use_ip_as_consumer, sender.ip_anonymize
            method = KNOWN_METHODS.get(scope["method"])
            if method is None:
                method = normalize_method(scope["method"])
            endpoint = self._routes.resolve(scope, root)  # one lookup in the route index, mostly
            if root and endpoint != UNMATCHED:
                endpoint = _mount_prefix(scope, root, params) + endpoint
            consumer = consumer_from_scope(scope, use_ip, anonymize)
            context = context_from_scope(scope)
            if self._hooks:
                endpoint, consumer, context = self._call_hooks(scope, endpoint, consumer, context, use_ip, anonymize)
            if buffer is None:
                system.record_request(
                    method=method, endpoint=endpoint, status=status, response_time=(end - start) * 1000.0,
                    consumer=_text(consumer), context=context,
                )
                return
            row = (method, endpoint, status, (end - start) * 1000.0, consumer, context, time())
            rows = buffer.rows
            if len(rows) < buffer.capacity:
                rows.append(row)
            else:
                buffer.count_dropped("overflow", 1)
        except Exception:  # telemetry must never break the app
            self._failed()
            return
        try:
            # A buffer past the sender's usual backlog (or no sender) is the moment to check
            # the sender is alive: its event loop may have closed under it.
            if not sender._running or (len(rows) >= _backlog_limit(sender) and not sender._alive()):
                sender.start_soon()
            if self._snapshot is None and sender._running and not use_ip and not self._hooks:
                self._take_snapshot(sender)
        except Exception:  # the record is buffered: only the housekeeping failed
            logger.debug("Malti: could not start the sender", exc_info=True)

    def _take_snapshot(self, sender: Any) -> None:
        # Version first, settings after: a change from here on forgets what is stored below.
        version = sender.subscribe(self)
        config, buffer, index = sender.config, sender.buffer, self._routes._index
        if not config.api_key or config.use_ip_as_consumer or not sender._running:
            return
        self._snapshot = (buffer.rows, _backlog_limit(sender), config.clean_mode, index)
        # A change between subscribe and here already ran _forget_snapshot: undo the store. So
        # did a swap of the process-wide system (assigned before it tells the old sender) that
        # came before subscribe: the snapshot must not keep recording into the replaced one.
        if (
            sender._version != version
            or self._routes._index is not index
            or (self._system is None and _telemetry._system is not self._followed)
        ):
            self._snapshot = None

    # ------------------------------------------------- the original's extension points
    # Subclasses of the original customised recording by overriding these. An override
    # is called with a Starlette ``Request`` for every request (which then always takes
    # the full path); its exceptions are counted as ``dropped["error"]``.
    def _extract_route_pattern(self, request: Any) -> str:
        """The endpoint to record: the full route pattern, or ``<unmatched>``."""
        endpoint = getattr(request, "_malti_endpoint", None)  # what the full path found
        return endpoint if endpoint is not None else self._routes.resolve(request.scope)

    def _extract_consumer(self, request: Any, use_ip_as_consumer: bool = False, ip_anonymize: bool = False) -> str:
        """The consumer to record (see the README's consumer rules)."""
        return _text(consumer_from_scope(request.scope, use_ip_as_consumer, ip_anonymize))

    def _extract_context(self, request: Any) -> str | None:
        """The context to record, or None."""
        return context_from_scope(request.scope)

    def _call_hooks(
        self, scope: Scope, endpoint: str, consumer: Any, context: Any, use_ip: bool, anonymize: bool
    ) -> tuple[str, Any, Any]:
        from starlette.requests import Request

        request = Request(scope)
        request._malti_endpoint = endpoint  # for an override that calls super()
        if "_extract_route_pattern" in self._hooks:
            endpoint = self._extract_route_pattern(request)
        if "_extract_consumer" in self._hooks:
            consumer = self._extract_consumer(request, use_ip, anonymize)
        if "_extract_context" in self._hooks:
            context = self._extract_context(request)
        # whatever an override returns, the record stays one the server accepts
        endpoint = _text(endpoint) or UNMATCHED
        consumer = consumer if isinstance(consumer, bytes) else _text(consumer) or ANONYMOUS
        return endpoint, consumer, _text(context)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        system = self.telemetry_system
        took_part = False  # the app read or sent a lifespan message

        async def receive_with_start() -> Message:
            nonlocal took_part
            took_part = True
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await system.start()
                except Exception:
                    logger.exception("Malti: could not start the sender")
            return message

        async def send_with_stop(message: Message) -> None:
            nonlocal took_part
            took_part = True
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                try:
                    await system.stop()
                except Exception:
                    logger.exception("Malti: flush at shutdown failed")
            await send(message)

        try:
            await self.app(scope, receive_with_start, send_with_stop)
        except Exception:
            if took_part:
                raise
            # raised before taking part: what the ASGI spec reads as "lifespan not
            # supported" (uvicorn's own example app asserts scope["type"] == "http")
            logger.debug("Malti: the app does not take lifespan events; answering them", exc_info=True)
        if took_part:
            return
        # The app takes no part in lifespan events: they are answered here, so that the
        # sender starts with the server and delivers what it holds when the server stops.
        # Without them, a server that ends the process by a signal leaves no exit hook
        # time to run (uvicorn raises the SIGTERM it caught again once it has shut down,
        # and its default action kills). The same wrappers start and stop the sender.
        while True:
            message = await receive_with_start()
            if message["type"] == "lifespan.startup":
                await send_with_stop({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send_with_stop({"type": "lifespan.shutdown.complete"})
                return


_HOOKS = ("_extract_route_pattern", "_extract_consumer", "_extract_context")


def _text(value: Any) -> str | None:
    """A hook's answer as text: bytes decoded, None kept."""
    if value is None or isinstance(value, str):
        return value
    return value.decode("latin-1") if isinstance(value, (bytes, bytearray)) else str(value)


_public: Any = None  # the module malti_sdk.middleware, once loaded


def _process_system() -> TelemetrySystem:
    """The process-wide system, found through ``malti_sdk.middleware``: a test may have
    patched its ``get_telemetry_system``, as it patched the original's."""
    global _public
    public = _public
    if public is None:
        public = _public = sys.modules.get("malti_sdk.middleware")
        if public is None:  # not loaded (only while the package is being imported)
            return get_telemetry_system()
    return public.get_telemetry_system()


def _backlog_limit(sender: Any) -> int:
    """Buffered rows past which the inline path hands over to :meth:`MaltiMiddleware._record`.

    A running sender keeps the buffer below a batch or two; a longer one means the
    server is unreachable (retries are going on) or the sender died with its loop, which
    the slow path checks. Never more than the capacity, whose overflow it counts.
    """
    config = sender.config
    return min(sender.buffer.capacity, max(4 * config.batch_size, 10_000))


def _mount_prefix(scope: Scope, root: str, params: Any) -> str:
    """The path prefix of the Mount this middleware's app sits below, else "".

    ``root`` and ``params`` are the ``root_path`` and ``path_params`` the middleware
    was called with; Starlette's Mount extends ``root_path`` by the matched prefix and
    keeps the application's own in ``app_root_path``. The matched prefix holds
    concrete values when a Mount above has path parameters: then no prefix, rather
    than one endpoint per value.
    """
    app_root = scope.get("app_root_path", root)
    if params or root == app_root or not root.startswith(app_root):
        return ""
    return root[len(app_root) :]


async def _send_last(watch: Any, send: Send, message: Message) -> None:
    """The last chunk of a streamed body, for the compiled send wrapper: the response is
    complete once the server took it (which waits while a slow client drains the stream)."""
    try:
        await send(message)
    finally:
        watch.mark_end()


def _use_speedups(module: Any) -> None:
    """Switch the request path: the compiled module, or None for pure Python (tests use both)."""
    if module is None:
        MaltiMiddleware.__call__ = _python_call
        return
    from collections import deque

    # created_at comes from time.time() in C, unless this module's ``time`` was replaced
    # (a test's frozen clock): then the replacement is called, as the Python path does.
    try:
        module.setup(
            KNOWN_METHODS, _CONSUMER_HEADERS, ANONYMOUS, _send_last, deque.append, globals(), _wall_clock,
            _raise_later,
        )
        collections.abc.Coroutine.register(module.Call)
        compiled = _compiled_call(module)
    except Exception:  # never let the accelerator stop the app from importing
        logger.warning("Malti: malti_sdk._speedups could not be set up; using the pure-Python path", exc_info=True)
        MaltiMiddleware.__call__ = _python_call
        return
    MaltiMiddleware.__call__ = compiled


def _compiled_call(module: Any) -> Any:
    """``__call__`` as a ``CallMethod``: make_call() in C on the middleware's own ``app`` and
    ``_cell`` (with a Python function there, its frame and attribute reads cost about 900
    instructions a request). It is bound like a function and named like the Python one,
    whose signature it shows (``__wrapped__``)."""
    method = module.CallMethod()
    for name in ("__module__", "__name__", "__qualname__", "__doc__"):
        setattr(method, name, getattr(_python_call, name))
    method.__wrapped__ = _python_call
    _mark_coroutine_function(method)
    return method


async def _raise_later(exception: BaseException) -> None:
    """For a Call: an exception the app raised when called, raised when the request is awaited."""
    raise exception


def _mark_coroutine_function(function: Any) -> None:
    """Let asyncio, inspect (3.12+), uvicorn and Starlette take ``function`` for an ``async def``:
    uvicorn serves an app object as ASGI 3 only when its ``__call__`` is one."""
    marker = getattr(asyncio.coroutines, "_is_coroutine", None)
    if marker is not None:
        function._is_coroutine = marker
    mark = getattr(inspect, "markcoroutinefunction", None)
    if mark is not None:
        mark(function)


_python_call = MaltiMiddleware.__call__
_mark_coroutine_function(_python_call)
_wall_clock = time
_use_speedups(_speedups)
