"""The telemetry system: configuration, the process-wide instance, manual recording, stats.

Drop-in for the original ``malti-telemetry`` package's public names
(``configure_malti``, ``get_telemetry_system``, ``get_malti_stats``, ``TelemetrySystem``,
``TelemetryCollector``, ``BatchSender``, ``TelemetryBuffer``, ``TelemetryRecord``).
Importing this module has no side effect: no logging setup, no thread, no I/O.
"""

from __future__ import annotations

import dataclasses
import decimal
import logging
import math
import numbers
import operator
import os
import re
import threading
import time
from typing import Any

from ._buffer import TelemetryBuffer
from ._config import _ENV, TelemetryConfig
from ._records import TelemetryRecord, normalize_method
from ._sender import BatchSender

__all__ = [
    "TelemetryRecord",
    "TelemetryBuffer",
    "BatchSender",
    "TelemetryCollector",
    "TelemetrySystem",
    "TelemetryConfig",
    "get_telemetry_system",
    "get_malti_stats",
    "configure_malti",
]

logger = logging.getLogger("malti_sdk")


#: the largest response time the Malti server accepts (milliseconds)
MAX_RESPONSE_TIME_MS = 1e12
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?", re.ASCII)


def _lenient_number(value: Any, integral: bool) -> Any:
    """``"200"`` -> 200, ``200.0`` -> 200, ``"12.5"`` -> 12.5, numpy and Decimal numbers
    -> int / float: what the server's lenient decoding (and so the original package,
    which sent such values) stores. Anything else is returned as it is (and refused)."""
    if value.__class__ is int or isinstance(value, bool):
        return value
    try:
        if isinstance(value, str):
            if not _JSON_NUMBER.fullmatch(value):
                return value
            number = float(value)
        elif isinstance(value, numbers.Integral):
            return operator.index(value)
        elif isinstance(value, (numbers.Real, decimal.Decimal)):
            number = float(value)
        else:
            return value
    except (ValueError, TypeError, OverflowError):
        return value
    if integral:
        return int(number) if number.is_integer() else value
    return number


def _invalid_reason(
    method: Any, endpoint: Any, status: Any, response_time: Any, consumer: Any, context: Any
) -> str | None:
    if not isinstance(method, str) or not method:
        return "method must be a non-empty string"
    if not isinstance(endpoint, str) or not endpoint:
        return "endpoint must be a non-empty string"
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        return "status must be an int from 100 to 599"
    if isinstance(response_time, bool) or not isinstance(response_time, (int, float)):
        return "response_time must be a number of milliseconds"
    try:
        if not math.isfinite(response_time) or response_time < 0:
            return "response_time must be finite and >= 0"
    except OverflowError:  # an int too large for a float
        return "response_time must be finite and >= 0"
    if response_time > MAX_RESPONSE_TIME_MS:  # the server refuses it, and with it the whole batch
        return "response_time must be at most 1e12 ms"
    if not isinstance(consumer, str):
        return "consumer must be a string"
    if context is not None and not isinstance(context, str):
        return "context must be a string or None"
    return None


class TelemetryCollector:
    """Validates manually recorded requests and hands them to the sender's buffer."""

    def __init__(self, batch_sender: BatchSender) -> None:
        self.batch_sender = batch_sender

    @property
    def service_name(self) -> str:
        return self.batch_sender.config.service_name

    @property
    def node(self) -> str:
        return self.batch_sender.config.node

    def record_request(
        self,
        method: str,
        endpoint: str,
        status: int,
        response_time: float,
        consumer: str,
        context: str | None = None,
    ) -> None:
        """Record one request; safe from any thread or event loop, never raises.

        ``response_time`` is in milliseconds and may be fractional. Numbers given as text
        (``"200"``, ``"12.5"``) or a whole float status are taken as the server would take
        them. An invalid record is not sent: it is logged and counted under
        ``dropped["invalid"]``.
        """
        sender = self.batch_sender
        if consumer is None:
            consumer = "anonymous"
        status = _lenient_number(status, True)
        response_time = _lenient_number(response_time, False)
        reason = _invalid_reason(method, endpoint, status, response_time, consumer, context)
        if reason is not None:
            sender.buffer.count_dropped("invalid", 1)
            sender._warn_once("invalid:" + reason, f"Malti: record_request ignored a record: {reason}")
            return
        if not sender.config.api_key:
            return  # never sent without a key (the original buffered it until its buffer was full)
        row = (
            normalize_method(method),
            endpoint,
            status,
            float(response_time),
            consumer or "anonymous",
            context,
            time.time(),
        )
        sender.buffer.offer(row)
        if not sender._running or not sender._alive():
            sender.start_soon()

    def get_stats(self) -> dict[str, Any]:
        return self.batch_sender.get_stats()


class TelemetrySystem:
    """A buffer, a collector and a sender, started and stopped together.

    The middleware uses the process-wide instance from :func:`get_telemetry_system`;
    build your own (``TelemetrySystem(TelemetryConfig(...))``) to pass to
    ``MaltiMiddleware(app, telemetry_system=...)``.
    """

    def __init__(self, config: TelemetryConfig | None = None) -> None:
        self.batch_sender = BatchSender(config)
        self.collector = TelemetryCollector(self.batch_sender)

    @property
    def config(self) -> TelemetryConfig:
        return self.batch_sender.config

    async def start(self) -> None:
        """Start the sender on the current event loop (idempotent)."""
        await self.batch_sender.start()

    async def stop(self) -> None:
        """Deliver what is buffered, within ``shutdown_timeout`` seconds, and stop."""
        await self.batch_sender.stop()

    def record_request(
        self,
        method: str,
        endpoint: str,
        status: int,
        response_time: float,
        consumer: str,
        context: str | None = None,
    ) -> None:
        """Record one request (see :meth:`TelemetryCollector.record_request`)."""
        self.collector.record_request(method, endpoint, status, response_time, consumer, context)

    def get_stats(self) -> dict[str, Any]:
        """Counters and settings: the original's keys plus ``dropped`` by reason and ``in_flight``."""
        return self.batch_sender.get_stats()


_system: TelemetrySystem | None = None
_system_lock = threading.Lock()


def get_telemetry_system() -> TelemetrySystem:
    """The process-wide telemetry system, created from the environment on first use."""
    global _system
    system = _system
    if system is None:
        with _system_lock:
            if _system is None:
                _system = TelemetrySystem()
            system = _system
    return system


def set_process_system(system: TelemetrySystem | None) -> None:
    """Replace the process-wide system (None: a new one from the environment on next use).

    What ``malti_sdk.core._telemetry_system = ...`` does, as the original's global did.
    """
    global _system
    with _system_lock:
        old, _system = _system, system
    if old is not None and old is not system:
        try:
            old.batch_sender._changed()  # middlewares that recorded into it look the system up again
        except Exception:  # a test's stand-in: no snapshot can point into it
            pass


def get_malti_stats() -> dict[str, Any]:
    """Statistics of the process-wide telemetry system.

    Keys of the original package (``total_added``, ``total_sent``, ``total_failed``,
    ``current_size``, ``max_size``, ``service_name``, ``node``, ``running``,
    ``malti_url``, ``clean_mode``) plus ``in_flight``, ``total_dropped`` and ``dropped``
    (counts by reason: ``overflow``, ``invalid``, ``http_<status>``, ``shutdown``...).
    """
    return get_telemetry_system().get_stats()


# The original's configure_malti tested these with ``if value:``.
_SKIPPED_WHEN_FALSY = frozenset({"service_name", "api_key", "malti_url", "node", "batch_size", "batch_interval"})


def configure_malti(
    service_name: str | None = None,
    api_key: str | None = None,
    malti_url: str | None = None,
    node: str | None = None,
    batch_size: int | None = None,
    batch_interval: float | None = None,
    clean_mode: bool | None = None,
    use_ip_as_consumer: bool | None = None,
    ip_anonymize: bool | None = None,
    **settings: Any,
) -> None:
    """Configure the instrumentation, like the original: each given value sets its ``MALTI_*`` variable.

    As in the original, ``None`` leaves a setting alone, and so does an empty name, key,
    URL or node and a zero batch size or interval. Unlike the original, the process-wide
    system also picks the values up when it already exists. Any other setting of
    :class:`TelemetryConfig` may be given by name (``retry_delay=1.0``,
    ``buffer_size=200_000``...); those are skipped only when ``None``.
    """
    given = dict(
        service_name=service_name,
        api_key=api_key,
        malti_url=malti_url,
        node=node,
        batch_size=batch_size,
        batch_interval=batch_interval,
        clean_mode=clean_mode,
        use_ip_as_consumer=use_ip_as_consumer,
        ip_anonymize=ip_anonymize,
        **settings,
    )
    unknown = [name for name in given if name not in _ENV]
    if unknown:  # before anything is written
        raise TypeError(f"configure_malti() got an unknown setting {unknown[0]!r}")
    changes, texts = {}, {}
    for name, value in given.items():
        if value is None or (not value and name in _SKIPPED_WHEN_FALSY):
            continue
        variable, parse = _ENV[name]
        text = str(value)  # booleans as the original wrote them: "True" / "False"
        try:
            if "\x00" in text:
                raise ValueError("contains a NUL character")
            changes[name] = parse(text)
        except (TypeError, ValueError) as exc:  # neither written nor applied
            logger.warning("Malti: ignoring %s=%r (%s)", name, value, exc)
            continue
        texts[variable] = text
    os.environ.update(texts)
    system = _system
    if system is not None and changes:
        # Only what was given changes: settings assigned on the sender since it was built stay.
        sender = system.batch_sender
        sender.config = dataclasses.replace(sender.config, **changes)
        sender.buffer.capacity = sender.config.buffer_size
    logger.debug("Malti configuration updated")
