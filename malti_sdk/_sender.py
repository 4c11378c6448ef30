"""The sender: ships buffered records to ``POST {MALTI_URL}/api/v1/ingest`` in batches.

One background coroutine, on the app's event loop when it is started from one
(lifespan, first request), else on a daemon thread with its own loop. It wakes a few
times a second and sends every full batch, and whatever is buffered once
``batch_interval`` has passed.

Delivery rules:

* every batch gets one ``Idempotency-Key``, kept across all its retries, so a batch
  the server stored but whose answer was lost is not stored twice;
* connection errors, timeouts, 408, 429 and 5xx are retried with exponential backoff
  and jitter (``Retry-After`` honoured), as long as the sender runs: a server that is
  down for minutes loses nothing while the buffer has room;
* 413 splits the batch in halves; any other 4xx drops the batch, counted by reason
  (``dropped["http_422"]``...);
* stopping delivers what is left within ``shutdown_timeout`` seconds and counts the
  rest as ``dropped["shutdown"]``.

Encoding happens in chunks between which the loop serves requests (see
:mod:`._records`), so a 20,000-record backlog never stalls the app.

Transport: for a plain ``http://`` URL without a proxy, a lean HTTP/1.1 keep-alive
client on the sender's loop (one write per batch, no worker thread); it costs the app
a fraction of the CPU of a general-purpose client, measured under uvicorn at about
3 µs per request at 20,000 requests/s. ``https://``, proxies from the environment and
credentials in the URL go through httpx in a worker thread.
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import logging
import os
import random
import socket
import threading
import time
import urllib.request
import uuid
import weakref
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from ._buffer import TelemetryBuffer
from ._config import _ENV, INGEST_PATH, TelemetryConfig
from ._records import RecordEncoder, Row, TelemetryRecord

logger = logging.getLogger("malti_sdk")

_TICK = 0.2  # seconds between looks at the buffer
_MIN_RETRY_DELAY = 0.05
_MAX_RETRY_AFTER = 300.0
_RETRY_STATUSES = frozenset({408, 425, 429})


class _Batch:
    """Rows on their way to the server, with the key that makes their retries idempotent."""

    __slots__ = ("rows", "key", "attempts", "body", "gzipped", "retry_at")

    def __init__(self, rows: list[Row]) -> None:
        self.rows = rows
        self.key = uuid.uuid4().hex
        self.attempts = 0
        self.body: bytes | None = None
        self.gzipped = False
        self.retry_at = 0.0


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER)


def _make_client(config: TelemetryConfig) -> httpx.Client:
    return httpx.Client(
        timeout=config.http_timeout,
        limits=httpx.Limits(
            max_keepalive_connections=config.max_keepalive_connections,
            max_connections=config.max_connections,
        ),
    )


async def _in_thread(function: Any, *args: Any, **kwargs: Any) -> Any:
    """Run blocking I/O in the default executor; inline when there is none (interpreter exit)."""
    try:
        return await asyncio.to_thread(function, *args, **kwargs)
    except RuntimeError as exc:
        if "shutdown" not in str(exc):
            raise
        return function(*args, **kwargs)


class _ProtocolError(Exception):
    """The server's answer is not HTTP/1.x as this client reads it."""


#: what a failed exchange of the lean client may raise (all retried, like httpx's transport errors)
_LEAN_ERRORS = (OSError, EOFError, asyncio.TimeoutError, asyncio.LimitOverrunError, _ProtocolError, ValueError)
_MAX_ANSWER_BYTES = 1 << 20  # an ingest answer is a few dozen bytes; more is read and cut


def _uses_proxy(scheme: str, host: str) -> bool:
    """True when the environment names a proxy for this URL (httpx would use it)."""
    proxies = urllib.request.getproxies_environment()
    if not (proxies.get(scheme) or proxies.get("all")):
        return False
    try:
        return not urllib.request.proxy_bypass_environment(host, proxies)
    except Exception:
        return True


class _LeanHttp:
    """HTTP/1.1 POSTs over one keep-alive connection, on the sender's event loop.

    Used for plain ``http://`` ingest URLs without a proxy (the common self-hosted
    case): one ``write`` of head and body, one read of a small answer, no worker
    thread, no per-request objects beyond a few strings. Costs a fraction of a
    general-purpose client's CPU per batch, which under load is CPU the app keeps.
    Everything else (``https://``, proxies, credentials in the URL) goes through httpx.
    """

    def __init__(self, host: str, port: int, target: str, host_header: str) -> None:
        self.host = host
        self.port = port
        self.target = target
        self.host_header = host_header
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._head_key: tuple = ()
        self._head = b""

    @classmethod
    def for_url(cls, url: str) -> "_LeanHttp | None":
        try:
            parts = urlsplit(url)
            port = parts.port or 80
        except ValueError:
            return None
        host = parts.hostname
        if parts.scheme != "http" or not host or parts.username is not None or parts.password is not None:
            return None
        if _uses_proxy("http", host):
            return None
        host_header = f"[{host}]" if ":" in host else host
        if parts.port is not None:
            host_header += f":{parts.port}"
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if not all(text.isascii() and text.isprintable() and " " not in text for text in (target, host_header)):
            return None  # needs percent- or IDNA-encoding: httpx does it
        return cls(host, port, target, host_header)

    def _static_head(self, api_key: str, gzipped: bool) -> bytes:
        key = (api_key, gzipped)
        if key != self._head_key:
            head = (
                f"POST {self.target} HTTP/1.1\r\nHost: {self.host_header}\r\nAccept: */*\r\n"
                f"User-Agent: malti-sdk\r\nContent-Type: application/json\r\nX-API-Key: {api_key}\r\n"
            )
            if gzipped:
                head += "Content-Encoding: gzip\r\n"
            self._head = head.encode("ascii")
            self._head_key = key
        return self._head

    async def post(
        self, body: bytes, api_key: str, idempotency_key: str, gzipped: bool, timeout: float
    ) -> tuple[int, dict[str, str], bytes]:
        """``(status, headers with lower-case names, body)`` of one POST; raises on transport failures."""
        data = b"".join(
            (
                self._static_head(api_key, gzipped),
                b"Idempotency-Key: %s\r\nContent-Length: %d\r\n\r\n" % (idempotency_key.encode("ascii"), len(body)),
                body,
            )
        )
        return await asyncio.wait_for(self._exchange(data), timeout)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            return await asyncio.open_connection(self.host, self.port)
        except RuntimeError:
            # At interpreter exit the loop can no longer start the thread that resolves a host
            # name ("can't register atexit after shutdown"): resolve it here, blocking (nothing
            # else runs then), and connect to its addresses in order.
            error: OSError = OSError(f"cannot resolve {self.host!r}")
            for *_, address in socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM):
                try:
                    return await asyncio.open_connection(address[0], address[1])
                except OSError as exc:
                    error = exc
            raise error

    async def _exchange(self, data: bytes) -> tuple[int, dict[str, str], bytes]:
        for attempt in range(2):
            reused = self._writer is not None
            if reused and (self._reader.at_eof() or self._writer.is_closing()):
                self.close()
                reused = False
            if self._writer is None:
                self._reader, self._writer = await self._connect()
            answered = False
            try:
                self._writer.write(data)
                await self._writer.drain()
                status_line = await self._reader.readuntil(b"\r\n")
                answered = True
                return await self._read_answer(status_line)
            except (OSError, EOFError) as exc:
                self.close()
                # A kept-alive connection the server closed meanwhile: once more on a new
                # one (safe: the batch's Idempotency-Key makes a duplicate count once).
                if reused and not answered and attempt == 0:
                    continue
                raise exc
            except BaseException:
                self.close()
                raise
        raise ConnectionError("no connection")  # not reached

    async def _read_answer(self, status_line: bytes) -> tuple[int, dict[str, str], bytes]:
        reader = self._reader
        while True:
            version, _, rest = status_line.decode("latin-1").partition(" ")
            if not version.startswith("HTTP/1."):
                raise _ProtocolError(f"not an HTTP/1.x answer: {status_line[:60]!r}")
            status = int(rest[:3])
            headers: dict[str, str] = {}
            while True:
                line = await reader.readuntil(b"\r\n")
                if line == b"\r\n":
                    break
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            if 100 <= status < 200:  # an interim answer: the real one follows
                status_line = await reader.readuntil(b"\r\n")
                continue
            break
        keep_alive = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
        if status in (204, 304):
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            pieces = []
            size_read = 0
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                        pass
                    break
                piece = await reader.readexactly(size + 2)
                size_read += size
                if size_read <= _MAX_ANSWER_BYTES:
                    pieces.append(piece[:-2])
            body = b"".join(pieces)
        elif "content-length" in headers:
            length = int(headers["content-length"])
            if length > _MAX_ANSWER_BYTES:
                keep_alive = False
                length = _MAX_ANSWER_BYTES
            body = await reader.readexactly(length)
        else:  # delimited by the end of the connection
            pieces = []
            size_read = 0
            while size_read < _MAX_ANSWER_BYTES:
                piece = await reader.read(65536)
                if not piece:
                    break
                pieces.append(piece)
                size_read += len(piece)
            body = b"".join(pieces)
            keep_alive = False
        if not keep_alive:
            self.close()
        return status, headers, body

    def close(self) -> None:
        writer = self._writer
        self._reader = self._writer = None
        if writer is not None:
            try:
                writer.close()
            except Exception:
                pass


class _Delivery:
    """Sends request bodies to the ingest URL: :class:`_LeanHttp` where it applies, else httpx.

    httpx runs synchronously in a worker thread (its bookkeeping and socket writes stay
    off the app's loop); its client is built there too, on first use: loading the CA
    bundle takes ~15 ms.
    """

    def __init__(self) -> None:
        self._lean_url: str | None = None
        self._lean: _LeanHttp | None = None
        self._client: httpx.Client | None = None

    async def post(
        self, config: TelemetryConfig, batch: "_Batch", timeout: float
    ) -> tuple[int, str | None, Any]:
        """``(status, Retry-After, answer body or response)`` of one attempt; raises on transport errors."""
        url = config.ingest_url
        if url != self._lean_url:
            if self._lean is not None:
                self._lean.close()
            self._lean_url = url
            self._lean = _LeanHttp.for_url(url)
        api_key = config.api_key or ""
        if self._lean is not None and api_key.isascii() and api_key.isprintable():
            status, headers, body = await self._lean.post(batch.body, api_key, batch.key, batch.gzipped, timeout)
            return status, headers.get("retry-after"), body
        headers = {"X-API-Key": api_key, "Content-Type": "application/json", "Idempotency-Key": batch.key}
        if batch.gzipped:
            headers["Content-Encoding"] = "gzip"
        if self._client is None:
            self._client = await _in_thread(_make_client, config)
        response = await _in_thread(self._client.post, url, content=batch.body, headers=headers, timeout=timeout)
        return response.status_code, response.headers.get("retry-after"), response

    async def close(self) -> None:
        if self._lean is not None:
            self._lean.close()
            self._lean = None
            self._lean_url = None
        client, self._client = self._client, None
        if client is not None:
            await _in_thread(client.close)


def _answer_text(answer: Any) -> str:
    if isinstance(answer, (bytes, bytearray)):
        return bytes(answer).decode("utf-8", "replace")
    return answer.text


_senders: "weakref.WeakSet[BatchSender]" = weakref.WeakSet()
_hooks_lock = threading.Lock()
_hooks_installed = False


def _register(sender: "BatchSender") -> None:
    """Flush at interpreter exit and reset in forked children: hooks installed once, senders held weakly."""
    global _hooks_installed
    with _hooks_lock:
        _senders.add(sender)
        if _hooks_installed:
            return
        _hooks_installed = True
    atexit.register(_flush_all_at_exit)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_reset_all_after_fork)


def _flush_all_at_exit() -> None:
    for sender in list(_senders):
        sender.flush_at_exit()


def _reset_all_after_fork() -> None:
    for sender in list(_senders):
        sender._after_fork()


def _setting(name: str) -> property:
    """A BatchSender attribute backed by its configuration, as the original's were."""

    def get(self: "BatchSender") -> Any:
        return getattr(self._config, name)

    def set(self: "BatchSender", value: Any) -> None:
        if value is not None or name != "api_key":
            # the environment's rules and types: "100" -> 100, "false" -> False, 0 batches raise
            value = _ENV[name][1](str(value))
        self.config = dataclasses.replace(self._config, **{name: value})

    return property(get, set, doc=f"``config.{name}``; assigning it replaces the configuration.")


class BatchSender:
    """Batches buffered records and delivers them (the original package's name and interface)."""

    def __init__(self, config: TelemetryConfig | None = None) -> None:
        # Middlewares keep a snapshot of what recording needs (buffer, capacity, clean mode)
        # while the sender runs; any change here forgets those snapshots (see _changed).
        self._listeners: weakref.WeakSet = weakref.WeakSet()
        self._listeners_lock = threading.Lock()
        self._version = 0
        self._is_running = False
        self._config = config if config is not None else TelemetryConfig.from_env()
        self.buffer = TelemetryBuffer(max_size=self._config.buffer_size)
        self.buffer.on_change = self._changed
        self.buffer.labels = lambda: (self._config.service_name, self._config.node)
        self._encoder = RecordEncoder()
        self._pending: list[_Batch] = []  # taken from the buffer, not yet delivered (oldest first)
        self._stopping = False
        self._generation = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._thread: threading.Thread | None = None
        self._wake: asyncio.Event | None = None
        self._run_loop: asyncio.AbstractEventLoop | None = None  # the loop the sender coroutine runs on
        self._run_thread: threading.Thread | None = None
        self._done = threading.Event()
        self._start_lock = threading.Lock()
        self._last_flush = time.monotonic()
        self._hooks_installed = False
        self._warned: set[str] = set()
        if not self.config.api_key:
            logger.warning("Malti: MALTI_API_KEY not set - telemetry will not be sent")

    # ----------------------------------------------------------- configuration
    @property
    def config(self) -> TelemetryConfig:
        return self._config

    @config.setter
    def config(self, config: TelemetryConfig) -> None:
        self._config = config
        self._changed()

    @property
    def _running(self) -> bool:
        return self._is_running

    @_running.setter
    def _running(self, value: bool) -> None:
        if value != self._is_running:
            self._is_running = value
            self._changed()

    def _changed(self) -> None:
        """Configuration, capacity or running state changed: recording snapshots are stale."""
        self._version += 1  # before clearing: a snapshot taken meanwhile sees it (see subscribe)
        with self._listeners_lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener._forget_snapshot()

    def subscribe(self, listener: Any) -> int:
        """Register a middleware whose snapshot :meth:`_changed` forgets; the current version."""
        with self._listeners_lock:
            self._listeners.add(listener)
        return self._version

    # The original exposed its settings as plain attributes: readable and assignable
    # (an assignment replaces the configuration, which every snapshot then forgets).
    service_name = _setting("service_name")
    api_key = _setting("api_key")
    malti_url = _setting("malti_url")
    node = _setting("node")
    batch_size = _setting("batch_size")
    batch_interval = _setting("batch_interval")
    max_retries = _setting("max_retries")
    retry_delay = _setting("retry_delay")
    http_timeout = _setting("http_timeout")
    max_keepalive_connections = _setting("max_keepalive_connections")
    max_connections = _setting("max_connections")
    overflow_threshold_percent = _setting("overflow_threshold_percent")
    overflow_threshold = property(lambda self: self.config.overflow_threshold)
    clean_mode = _setting("clean_mode")
    use_ip_as_consumer = _setting("use_ip_as_consumer")
    ip_anonymize = _setting("ip_anonymize")

    @property
    def ingest_endpoint(self) -> str:
        return self.config.ingest_url

    @ingest_endpoint.setter
    def ingest_endpoint(self, value: str) -> None:
        if not isinstance(value, str) or not value.rstrip("/").endswith(INGEST_PATH):
            raise AttributeError(f"ingest_endpoint follows malti_url (MALTI_URL); it must end with {INGEST_PATH}")
        self.malti_url = value.rstrip("/")[: -len(INGEST_PATH)]

    @property
    def running(self) -> bool:
        """True while a sender coroutine is alive."""
        return self._running

    def has_api_key(self) -> bool:
        return bool(self.config.api_key)

    def should_ignore_status(self, status: int) -> bool:
        """Clean mode ignores 401 and 404 (scanners, bots, expired sessions)."""
        return self.config.clean_mode and status in (401, 404)

    def add_record(self, record: TelemetryRecord | Row) -> None:
        """Buffer a record and make sure a sender runs."""
        self.buffer.add(record)
        if not self._running:
            self.start_soon()

    # --------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Start sending from the current event loop (idempotent)."""
        if self._running and self._alive():
            return
        self.start_soon()

    def start_soon(self) -> None:
        """Start the sender without awaiting: on the running loop, else on a daemon thread."""
        if not self.config.api_key or (self._running and self._alive()):
            return
        with self._start_lock:
            if self._running and self._alive():
                return
            self._install_hooks()
            self._stopping = False
            self._done.clear()
            self._generation += 1
            generation = self._generation
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            self._running = True
            if loop is not None:
                self._loop = loop
                self._thread = None
                self._task = loop.create_task(self._run(generation), name="malti-sender")
            else:
                self._loop = None
                self._task = None
                self._thread = threading.Thread(
                    target=self._thread_main, args=(generation,), name="malti-sender", daemon=True
                )
                self._thread.start()

    def _thread_main(self, generation: int) -> None:
        try:
            asyncio.run(self._run(generation))
        except BaseException:  # never let a sender thread print a traceback into the app
            logger.debug("Malti sender thread ended with an error", exc_info=True)

    def _alive(self) -> bool:
        if self._thread is not None:
            return self._thread.is_alive()
        loop = self._loop
        return loop is not None and not loop.is_closed() and self._task is not None and not self._task.done()

    async def stop(self) -> None:
        """Deliver what is buffered (at most ``shutdown_timeout`` seconds) and stop."""
        budget = self.config.shutdown_timeout + self.config.http_timeout + 1.0
        if self._running and self._alive():
            self._stopping = True
            self._signal()
            try:
                current = asyncio.get_running_loop()
            except RuntimeError:
                current = None
            if self._thread is not None:
                await asyncio.to_thread(self._thread.join, budget)
            elif self._loop is current and self._task is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(self._task), budget)
                except (asyncio.TimeoutError, asyncio.CancelledError):
                    pass
            else:
                await asyncio.to_thread(self._done.wait, budget)
        elif self._pending or self.buffer.rows:
            # The loop the sender ran on is gone: deliver from here.
            self._stopping = True
            self._generation += 1
            await self._run(self._generation)
        self._running = False

    def _signal(self) -> None:
        loop, wake = self._run_loop, self._wake
        if wake is None or loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(wake.set)
        except RuntimeError:  # the loop closed meanwhile
            pass

    def flush_at_exit(self) -> None:
        """Interpreter exit: let a live sender finish, or deliver what is left on a fresh loop."""
        try:
            budget = self.config.shutdown_timeout + self.config.http_timeout + 1.0
            if self._running and self._alive() and (self._thread is not None or self._loop_in_other_thread()):
                self._stopping = True
                self._signal()
                self._done.wait(budget)
            elif self._pending or self.buffer.rows:
                self._stopping = True
                self._generation += 1
                asyncio.run(self._run(self._generation))
        except BaseException:
            logger.debug("Malti flush at exit failed", exc_info=True)

    def _loop_in_other_thread(self) -> bool:
        loop = self._run_loop
        return loop is not None and loop.is_running() and self._run_thread is not threading.current_thread()

    def _install_hooks(self) -> None:
        if not self._hooks_installed:
            self._hooks_installed = True
            _register(self)

    def _after_fork(self) -> None:
        # The parent keeps sending what it buffered; the child starts empty.
        self._listeners_lock = threading.Lock()
        self.buffer.rows.clear()
        self.buffer.taken = 0
        self._pending = []
        self._running = False
        self._thread = None
        self._task = None
        self._loop = None
        self._start_lock = threading.Lock()
        self._done = threading.Event()

    # ------------------------------------------------------------ the sender
    async def _run(self, generation: int) -> None:
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._run_loop = loop
        self._run_thread = threading.current_thread()
        client = _Delivery()
        graceful = False
        try:
            while not self._stopping:
                try:
                    await asyncio.wait_for(self._wake.wait(), _TICK)
                except asyncio.TimeoutError:
                    pass
                self._wake.clear()
                if self._stopping:
                    break
                try:
                    await self._pump(client)
                except asyncio.CancelledError:
                    raise
                except Exception:  # a bug here must not end delivery
                    logger.exception("Malti sender error")
                    await asyncio.sleep(1.0)
            graceful = True
        finally:
            if graceful:
                try:
                    await self._drain(client)
                except Exception:
                    logger.exception("Malti final flush failed")
            try:
                await client.close()
            except BaseException:
                pass
            if generation == self._generation:
                self._running = False
                self._done.set()

    async def _pump(self, client: _Delivery) -> None:
        config = self.config
        rows = self.buffer.rows
        now = time.monotonic()
        due = now - self._last_flush >= config.batch_interval
        if due:
            self._last_flush = now
        if len(rows) >= config.overflow_threshold:
            self._warn_once(
                "overflow",
                "Malti: buffer above %g%% of its %d records"
                % (config.overflow_threshold_percent, self.buffer.capacity),
            )
        while not self._stopping:
            if not self._pending:
                if rows and (due or len(rows) >= config.batch_size):
                    self._pending.append(_Batch(self.buffer.take(config.batch_size)))
                else:
                    return
            batch = self._pending[0]
            if now < batch.retry_at:
                return
            if not await self._attempt(client, batch):
                return
            now = time.monotonic()

    async def _attempt(self, client: _Delivery, batch: _Batch, timeout: float | None = None) -> bool:
        """One delivery attempt of the oldest pending batch.

        True when the batch is settled (stored, or dropped and counted); False when it
        stays pending with ``retry_at`` set.
        """
        config = self.config
        if not config.api_key:
            self._settle(batch, "no_api_key")
            return True
        if batch.body is None:
            try:
                batch.body, batch.gzipped = await self._encoder.encode_body_async(
                    batch.rows, config.service_name, config.node, config.gzip
                )
            except Exception:  # a malformed row (hand-made through the compatibility API)
                logger.exception("Malti: could not encode a batch; dropping it")
                self._settle(batch, "encoding_error")
                return True
        batch.attempts += 1
        retry_after = None
        try:
            status, retry_after_text, answer = await client.post(
                config, batch, timeout if timeout is not None else config.http_timeout
            )
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            self._warn_once("url", f"Malti: cannot send to {config.ingest_url!r}: {exc}")
            self._settle(batch, "invalid_url")
            return True
        except (httpx.TimeoutException, httpx.TransportError, *_LEAN_ERRORS) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        else:
            if 200 <= status < 300:
                self._settle(batch, None)
                return True
            if status in _RETRY_STATUSES or status >= 500:
                reason = f"HTTP {status}"
                retry_after = _retry_after_seconds(retry_after_text)
            elif status == 413 and len(batch.rows) > 1:
                # Too large for the server's limits: send it in halves (new keys: nothing was stored).
                half = len(batch.rows) // 2
                index = self._pending.index(batch)
                self._pending[index : index + 1] = [_Batch(batch.rows[:half]), _Batch(batch.rows[half:])]
                return True
            else:
                detail = _answer_text(answer)[:300]
                self._warn_once(f"http_{status}", f"Malti: server refused a batch: HTTP {status} {detail}")
                self._settle(batch, f"http_{status}")
                return True
        delay = self._backoff(batch.attempts, retry_after)
        batch.retry_at = time.monotonic() + delay
        if batch.attempts == config.max_retries + 1:
            logger.warning(
                "Malti: %d attempts failed (%s); records are kept and retried every <= %g s",
                batch.attempts,
                reason,
                config.max_retry_delay,
            )
        else:
            logger.debug("Malti: attempt %d failed (%s); retry in %.2f s", batch.attempts, reason, delay)
        return False

    def _backoff(self, attempts: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return max(_MIN_RETRY_DELAY, retry_after * random.uniform(1.0, 1.1))
        config = self.config
        base = config.retry_delay * (2 ** min(attempts - 1, 30))
        base = min(base, config.max_retry_delay)
        return max(_MIN_RETRY_DELAY, base * random.uniform(0.5, 1.0))

    def _settle(self, batch: _Batch, dropped_reason: str | None) -> None:
        try:
            self._pending.remove(batch)
        except ValueError:
            pass
        if dropped_reason is None:
            self.buffer.count_sent(len(batch.rows))
        else:
            self.buffer.count_dropped(dropped_reason, len(batch.rows))

    async def _drain(self, client: _Delivery) -> None:
        """Deliver everything within ``shutdown_timeout``; count the rest as dropped."""
        deadline = time.monotonic() + self.config.shutdown_timeout
        size = self.config.batch_size
        while True:
            if not self._pending:
                if not self.buffer.rows:
                    break
                self._pending.append(_Batch(self.buffer.take(size)))
            batch = self._pending[0]
            now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0:
                break
            if batch.retry_at > now:
                wait = min(batch.retry_at - now, remaining, 1.0)
                await asyncio.sleep(wait)
                batch.retry_at = min(batch.retry_at, time.monotonic())
                continue
            ok = await self._attempt(client, batch, timeout=max(0.05, min(self.config.http_timeout, remaining)))
            if not ok:
                # shorter backoff while shutting down: the budget is what bounds us
                batch.retry_at = min(batch.retry_at, time.monotonic() + 0.5)
        left = sum(len(batch.rows) for batch in self._pending)
        self._pending = []
        left += len(self.buffer.take(len(self.buffer.rows)))
        if left:
            logger.warning("Malti: %d records not delivered before shutdown", left)
            self.buffer.count_dropped("shutdown", left)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message)

    # ------------------------------------------------------------------ stats
    def get_stats(self) -> dict[str, Any]:
        stats = self.buffer.get_stats()
        stats.update(
            in_flight=sum(len(batch.rows) for batch in list(self._pending)),
            service_name=self.config.service_name,
            node=self.config.node,
            running=self._running,
            malti_url=self.config.malti_url,
            clean_mode=self.config.clean_mode,
        )
        return stats
