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
