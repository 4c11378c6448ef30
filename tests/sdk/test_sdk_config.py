"""Settings, configure_malti, stats keys, lifespan wiring and import hygiene."""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys

import pytest
from starlette.applications import Starlette

import malti_sdk
import malti_sdk._telemetry as telemetry_module
from malti_sdk import MaltiMiddleware, TelemetryConfig, configure_malti, get_malti_stats, get_telemetry_system

ORIGINAL_STATS_KEYS = {
    "total_added",
    "total_sent",
    "total_failed",
    "current_size",
    "max_size",
    "service_name",
    "node",
    "running",
    "malti_url",
    "clean_mode",
}


@pytest.fixture
def clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("MALTI_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(telemetry_module, "_system", None)
    return monkeypatch


def test_defaults_are_the_original_packages(clean_env):
    config = TelemetryConfig.from_env()
    assert (config.service_name, config.api_key, config.malti_url, config.node) == (
        "default-service",
        None,
        "http://localhost:8000",
        "default-node",
    )
    assert (config.batch_size, config.batch_interval, config.max_retries, config.retry_delay) == (500, 60.0, 3, 5.0)
    assert (config.http_timeout, config.max_keepalive_connections, config.max_connections) == (15.0, 5, 10)
    assert config.overflow_threshold_percent == 90.0
    assert (config.clean_mode, config.use_ip_as_consumer, config.ip_anonymize) == (True, False, False)
    assert config.buffer_size >= 50_000


def test_every_variable_is_read(clean_env):
    values = {
        "MALTI_API_KEY": "k",
        "MALTI_SERVICE_NAME": "svc",
        "MALTI_URL": "http://malti:9000/",
        "MALTI_NODE": "n1",
        "MALTI_BATCH_SIZE": "100",
        "MALTI_BATCH_INTERVAL": "2.5",
        "MALTI_MAX_RETRIES": "7",
        "MALTI_RETRY_DELAY": "0.5",
        "MALTI_HTTP_TIMEOUT": "3",
        "MALTI_MAX_KEEPALIVE_CONNECTIONS": "2",
        "MALTI_MAX_CONNECTIONS": "4",
        "MALTI_OVERFLOW_THRESHOLD_PERCENT": "75",
        "MALTI_CLEAN_MODE": "false",
        "MALTI_USE_IP_AS_CONSUMER": "True",
        "MALTI_IP_ANONYMIZE": "true",
        "MALTI_BUFFER_SIZE": "60000",
    }
    for k, v in values.items():
        clean_env.setenv(k, v)
    c = TelemetryConfig.from_env()
    assert (c.api_key, c.service_name, c.malti_url, c.node) == ("k", "svc", "http://malti:9000", "n1")
    assert (c.batch_size, c.batch_interval, c.max_retries, c.retry_delay, c.http_timeout) == (100, 2.5, 7, 0.5, 3.0)
    assert (c.max_keepalive_connections, c.max_connections, c.overflow_threshold_percent) == (2, 4, 75.0)
    assert (c.clean_mode, c.use_ip_as_consumer, c.ip_anonymize, c.buffer_size) == (False, True, True, 60000)
    assert c.ingest_url == "http://malti:9000/api/v1/ingest"


def test_malformed_values_fall_back_to_defaults_with_a_warning(clean_env, caplog):
    clean_env.setenv("MALTI_BATCH_SIZE", "lots")
    clean_env.setenv("MALTI_BATCH_INTERVAL", "-1")
    clean_env.setenv("MALTI_CLEAN_MODE", "maybe")
    with caplog.at_level(logging.WARNING, logger="malti_sdk"):
        config = TelemetryConfig.from_env()
    # a word that is not "true" reads as false, like the original (which compared with "true")
    assert (config.batch_size, config.batch_interval, config.clean_mode) == (500, 60.0, False)
    assert "MALTI_BATCH_SIZE" in caplog.text and "'maybe'" in caplog.text


@pytest.mark.parametrize(
    "text, expected",
    [("true", True), ("True", True), (" TRUE ", True), ("1", True), ("yes", True), ("on", True),
     ("false", False), ("False", False), ("0", False), ("", False), ("disabled", False), ("enabled", False)],
)
def test_booleans_read_like_the_original(clean_env, text, expected):
    clean_env.setenv("MALTI_CLEAN_MODE", text)
    clean_env.setenv("MALTI_USE_IP_AS_CONSUMER", text)
    config = TelemetryConfig.from_env()
    assert (config.clean_mode, config.use_ip_as_consumer) == (expected, expected)


def test_configure_malti_skips_empty_values_like_the_original(clean_env):
    import os

    configure_malti(service_name="billing", api_key="key-1", batch_size=50, batch_interval=5.0)
    configure_malti(service_name="", api_key="", malti_url="", node="", batch_size=0, batch_interval=0.0)
    assert (os.environ["MALTI_SERVICE_NAME"], os.environ["MALTI_API_KEY"]) == ("billing", "key-1")
    assert (os.environ["MALTI_BATCH_SIZE"], os.environ["MALTI_BATCH_INTERVAL"]) == ("50", "5.0")
    assert "MALTI_URL" not in os.environ and "MALTI_NODE" not in os.environ
    configure_malti(clean_mode=False, max_retries=0)  # booleans and the added settings: only None is skipped
    assert (os.environ["MALTI_CLEAN_MODE"], os.environ["MALTI_MAX_RETRIES"]) == ("False", "0")
    c = get_telemetry_system().config
    assert (c.service_name, c.api_key, c.batch_size, c.clean_mode, c.max_retries) == ("billing", "key-1", 50, False, 0)


def test_configure_malti_sets_the_environment_and_the_live_system(clean_env):
    system = get_telemetry_system()
    assert system.config.service_name == "default-service"
    configure_malti(
        service_name="billing",
        api_key="key-1",
        malti_url="http://m:1",
        node="pod-7",
        batch_size=50,
        batch_interval=5.0,
        clean_mode=False,
        use_ip_as_consumer=True,
        ip_anonymize=True,
        retry_delay=0.5,
    )
    import os

    assert os.environ["MALTI_SERVICE_NAME"] == "billing" and os.environ["MALTI_CLEAN_MODE"] == "False"
    assert get_telemetry_system() is system
    c = system.config
    assert (c.service_name, c.api_key, c.malti_url, c.node, c.batch_size, c.batch_interval) == (
        "billing",
        "key-1",
        "http://m:1",
        "pod-7",
        50,
        5.0,
    )
    assert (c.clean_mode, c.use_ip_as_consumer, c.ip_anonymize, c.retry_delay) == (False, True, True, 0.5)


def test_configure_malti_rejects_unknown_settings(clean_env):
    with pytest.raises(TypeError, match="colour"):
        configure_malti(colour="blue")


def test_stats_keep_the_original_keys_and_add_drops(clean_env):
    stats = get_malti_stats()
    assert ORIGINAL_STATS_KEYS <= set(stats)
    assert stats["dropped"] == {} and stats["total_dropped"] == 0 and stats["in_flight"] == 0


def test_public_names_of_the_original_package_exist():
    for name in (
        "MaltiMiddleware",
        "configure_malti",
        "get_telemetry_system",
        "get_malti_stats",
        "TelemetrySystem",
        "TelemetryCollector",
        "BatchSender",
        "TelemetryBuffer",
        "TelemetryRecord",
    ):
        assert name in malti_sdk.__all__ and getattr(malti_sdk, name)


async def run_lifespan(app, system, inbox=None):
    """Lifespan events (``inbox``, which keeps those not read; by default startup and
    shutdown) through ``app``: returns what it sent, each with whether the sender ran then."""
    if inbox is None:
        inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent = []

    async def receive():
        return inbox.pop(0)

    async def send(message):
        sent.append((message["type"], system.get_stats()["running"]))

    await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    return sent


async def test_lifespan_starts_and_stops_the_system_around_the_apps_own(make_system):
    system = make_system(malti_url="http://127.0.0.1:9")
    events = []

    @contextlib.asynccontextmanager
    async def lifespan(app):
        events.append(("app startup", system.get_stats()["running"]))
        yield
        events.append(("app shutdown", system.get_stats()["running"]))

    app = Starlette(lifespan=lifespan)
    app.add_middleware(MaltiMiddleware, telemetry_system=system)
    sent = await run_lifespan(app, system)
    assert events == [("app startup", True), ("app shutdown", True)]
    assert sent == [("lifespan.startup.complete", True), ("lifespan.shutdown.complete", False)]


@pytest.mark.parametrize("kind", ["returns", "raises", "sends first"])
async def test_lifespan_events_an_app_ignores_are_answered_by_the_middleware(make_system, kind):
    system = make_system(malti_url="http://127.0.0.1:9")

    async def app(scope, receive, send):
        if kind == "raises":
            assert scope["type"] == "http"  # uvicorn's own example app: lifespan "not supported"
        elif kind == "sends first":  # takes part (against the spec's order): left to it
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
        # returns: serves "http" only

    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent = await run_lifespan(MaltiMiddleware(app, telemetry_system=system), system, inbox)
    if kind == "sends first":
        assert sent == [("lifespan.startup.complete", False), ("lifespan.shutdown.complete", False)]
        assert inbox == [{"type": "lifespan.shutdown"}]
    else:
        assert sent == [("lifespan.startup.complete", True), ("lifespan.shutdown.complete", False)]
        assert inbox == []


async def test_an_app_failing_after_taking_part_in_lifespan_raises_as_it_did(make_system):
    system = make_system(malti_url="http://127.0.0.1:9")

    async def app(scope, receive, send):
        await receive()
        raise RuntimeError("startup failed")

    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    with pytest.raises(RuntimeError, match="startup failed"):
        await run_lifespan(MaltiMiddleware(app, telemetry_system=system), system, inbox)
    assert inbox == [{"type": "lifespan.shutdown"}]


async def test_lifespan_injection_can_be_turned_off(make_system):
    system = make_system(malti_url="http://127.0.0.1:9")
    app = Starlette()
    app.add_middleware(MaltiMiddleware, telemetry_system=system, auto_inject_lifespan=False)
    await run_lifespan(app, system)
    assert not system.get_stats()["running"]


def test_import_has_no_side_effects():
    code = (
        "import logging, sys, threading, malti_sdk\n"
        "assert logging.getLogger().handlers == [], logging.getLogger().handlers\n"
        "assert threading.active_count() == 1\n"
        "heavy = {'numpy', 'msgspec', 'asyncpg', 'pandas', 'textual', 'orjson'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_configure_malti_changes_only_what_it_is_given(clean_env):
    sender = get_telemetry_system().batch_sender
    sender.clean_mode = False
    sender.batch_size = 50
    configure_malti(node="pod-1")
    assert (sender.clean_mode, sender.batch_size, sender.node) == (False, 50, "pod-1")


def test_configure_malti_checks_names_before_writing_and_keeps_valid_settings(clean_env):
    import os

    sender = get_telemetry_system().batch_sender
    with pytest.raises(TypeError, match="colour"):
        configure_malti(service_name="ok", colour="blue")
    assert "MALTI_SERVICE_NAME" not in os.environ
    sender.batch_size = 50
    clean_env.setenv("MALTI_BATCH_SIZE", "50")
    configure_malti(batch_size=-3, node="pod-2")  # a bad value is neither written nor applied
    assert (sender.batch_size, sender.node, os.environ["MALTI_BATCH_SIZE"]) == (50, "pod-2", "50")
    configure_malti(service_name="bad\x00name")  # os.environ would raise: ignored like any bad value
    assert "MALTI_SERVICE_NAME" not in os.environ


def test_sender_settings_are_checked_like_the_environment(clean_env):
    sender = get_telemetry_system().batch_sender
    with pytest.raises(ValueError):
        sender.batch_size = 0  # would send empty batches in a tight loop
    with pytest.raises(ValueError):
        sender.batch_interval = -1
    sender.api_key = None
    assert sender.batch_size == 500 and not sender.has_api_key()
    sender.clean_mode = "false"  # stored as the environment would read it, not as the string
    sender.batch_size = "100"
    assert (sender.clean_mode, sender.batch_size) == (False, 100)


def test_get_batch_gives_records_of_the_senders_service_and_node(clean_env):
    from malti_sdk import TelemetryBuffer, TelemetryConfig, TelemetrySystem

    system = TelemetrySystem(TelemetryConfig(api_key="k", service_name="billing", node="pod-3", malti_url="http://127.0.0.1:9"))
    system.batch_sender.buffer.offer(("GET", "/x", 200, 1.5, "c", None, 1_700_000_000.0))
    (record,) = system.batch_sender.buffer.get_batch(10)
    assert (record.service, record.node, record.endpoint, record.response_time) == ("billing", "pod-3", "/x", 1.5)
    alone = TelemetryBuffer()
    alone.offer(("GET", "/y", 200, 1.0, "c", None, 1_700_000_000.0))
    assert alone.get_batch(1)[0].service == ""  # a buffer of its own knows no service
