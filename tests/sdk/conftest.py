"""SDK fixtures: a scriptable ingest receiver, and telemetry systems that stop (flush) at teardown."""

from __future__ import annotations

from typing import Any

import pytest

from malti_sdk import TelemetryConfig, TelemetrySystem
from sdk_support import Receiver


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


# Fast test settings: short interval and backoff, so tests run in well under a second each.
FAST = dict(
    api_key="test-key",
    service_name="test-service",
    node="node-1",
    batch_interval=0.1,
    retry_delay=0.05,
    max_retry_delay=0.2,
    shutdown_timeout=5.0,
    http_timeout=5.0,
)


@pytest.fixture
async def make_system():
    """Factory of TelemetrySystems with fast settings; every one is stopped (flushed) at teardown."""
    systems: list[TelemetrySystem] = []

    def factory(**settings: Any) -> TelemetrySystem:
        system = TelemetrySystem(TelemetryConfig(**{**FAST, **settings}))
        systems.append(system)
        return system

    yield factory
    for system in systems:
        system.config.shutdown_timeout = min(system.config.shutdown_timeout, 2.0)
        await system.stop()


@pytest.fixture(params=["compiled", "python"])
def request_path(request, monkeypatch):
    """Runs a test on both request paths of the middleware: the compiled one
    (malti_sdk/_speedups.c, buffering into its RowStore) and the pure-Python one it falls
    back to (a deque of tuples)."""
    from malti_sdk import _middleware

    if request.param == "compiled":
        if _middleware._speedups is None:
            pytest.skip("malti_sdk._speedups is not built here (no C compiler, or MALTI_SPEEDUPS=0)")
        _middleware._use_speedups(_middleware._speedups)
    else:
        from collections import deque

        from malti_sdk import _buffer

        _middleware._use_speedups(None)
        monkeypatch.setattr(_buffer, "_Rows", deque)  # buffers made from here hold tuples, as without C
    yield request.param
    _middleware._use_speedups(_middleware._speedups)


@pytest.fixture(params=["compiled", "python"])
def encoder_path(request, monkeypatch):
    """Runs a test on both batch encoders: the compiled one (with its gzip writer) and the
    pure-Python one (with zlib)."""
    from malti_sdk import _records

    if request.param == "compiled":
        if _records._encode is None:
            pytest.skip("malti_sdk._speedups is not built here (no C compiler, or MALTI_SPEEDUPS=0)")
    else:
        monkeypatch.setattr(_records, "_encode", None)
        monkeypatch.setattr(_records, "_GzipWriter", None)
    return request.param
