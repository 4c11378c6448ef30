"""The original package's module-level names, and the ways its users' test suites reach into them:
resetting ``core._telemetry_system`` and patching ``middleware.get_telemetry_system``."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from unittest import mock

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

import malti_sdk
from malti_sdk import MaltiMiddleware, _telemetry
from sdk_support import call


def test_every_name_of_the_original_modules_is_there() -> None:
    pytest.importorskip("malti_telemetry")
    # in a subprocess: importing the original configures logging for the whole process
    script = textwrap.dedent(
        """
        import types, malti_sdk, malti_telemetry
        import malti_telemetry.core, malti_telemetry.middleware, malti_telemetry.utils
        STDLIB = {"typing", "collections", "dataclasses", "datetime", "contextlib", "starlette.types"}
        missing = []
        for name in ("core", "middleware", "utils"):
            theirs, ours = getattr(malti_telemetry, name), getattr(malti_sdk, name)
            for attr, value in vars(theirs).items():
                if attr.startswith("__") or isinstance(value, types.ModuleType):
                    continue
                if getattr(value, "__module__", None) in STDLIB or attr in ("Any", "Dict", "List", "Optional", "Union", "Callable"):
                    continue  # the original's own imports of typing helpers
                if not hasattr(ours, attr):
                    missing.append(f"{name}.{attr}")
        missing += [attr for attr in vars(malti_telemetry) if not attr.startswith("__") and not hasattr(malti_sdk, attr)]
        print(" ".join(missing) or "none")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["none"]


def test_submodules_are_attributes_after_importing_the_package() -> None:
    assert malti_sdk.core.get_telemetry_system is malti_sdk.get_telemetry_system
    assert malti_sdk.middleware.get_telemetry_system is malti_sdk.get_telemetry_system
    assert malti_sdk.utils.get_telemetry_system is malti_sdk.get_telemetry_system
    assert callable(malti_sdk.middleware.anonymize_ip) and callable(malti_sdk.middleware.extract_ip_from_forwarded_for)
    assert malti_sdk.core.logger.name == "malti_sdk"


def app_with_middleware() -> Starlette:
    async def user(request):
        return PlainTextResponse("ok")

    app = Starlette(routes=[Mount("/api", routes=[Route("/users/{user_id}", user)])])
    app.add_middleware(MaltiMiddleware)  # no system given: the process-wide one
    return app


@pytest.fixture
def process_wide(monkeypatch):
    """The process-wide system from a test environment; restored (and the ones made stopped) after."""
    monkeypatch.setenv("MALTI_API_KEY", "k")
    monkeypatch.setenv("MALTI_URL", "http://127.0.0.1:9")  # nothing listens: records stay buffered
    monkeypatch.setenv("MALTI_SHUTDOWN_TIMEOUT", "0.2")
    saved = _telemetry._system
    _telemetry._system = None
    made = []
    yield made
    for system in made:
        system.batch_sender._running = False  # never started on a loop that outlives the test
    _telemetry._system = saved


async def test_resetting_core_telemetry_system_is_followed_by_the_middleware(process_wide) -> None:
    app = app_with_middleware()
    assert await call(app, "/api/users/1", "/api/users/2") == [200, 200]
    first = malti_sdk.core._telemetry_system
    process_wide.append(first)
    assert first is malti_sdk.get_telemetry_system() and first.get_stats()["total_added"] == 2

    malti_sdk.core._telemetry_system = None  # what test suites of the original do between tests
    assert await call(app, "/api/users/3") == [200]
    second = malti_sdk.core._telemetry_system
    process_wide.append(second)
    assert second is not None and second is not first
    assert second.get_stats()["total_added"] == 1 and first.get_stats()["total_added"] == 2
    await first.stop()
    await second.stop()


async def test_patched_get_telemetry_system_receives_record_request(process_wide) -> None:
    stand_in = mock.MagicMock()
    stand_in.batch_sender.should_ignore_status.side_effect = lambda status: status in (401, 404)
    stand_in.batch_sender.has_api_key.return_value = True
    stand_in.batch_sender.use_ip_as_consumer = False
    stand_in.batch_sender.ip_anonymize = False
    with mock.patch("malti_sdk.middleware.get_telemetry_system", return_value=stand_in):
        app = app_with_middleware()
        assert await call(app, "/api/users/7", "/nowhere", headers={"x-consumer-id": "web"}) == [200, 404]
    stand_in.record_request.assert_called_once()
    kwargs = stand_in.record_request.call_args.kwargs
    assert {k: kwargs[k] for k in ("method", "endpoint", "status", "consumer", "context")} == {
        "method": "GET",
        "endpoint": "/api/users/{user_id}",
        "status": 200,
        "consumer": "web",
        "context": None,
    }
    assert isinstance(kwargs["response_time"], float) and kwargs["response_time"] >= 0
    assert _telemetry._system is None  # the real process-wide system was never created


def test_mock_patch_of_core_telemetry_system_restores_on_exit(process_wide) -> None:
    stand_in = mock.MagicMock()
    with mock.patch("malti_sdk.core._telemetry_system", stand_in):
        assert malti_sdk.core._telemetry_system is stand_in
    assert _telemetry._system is None  # patch.object deletes what it added: made anew on next use
    with mock.patch.object(malti_sdk.core, "_telemetry_system", stand_in):
        pass
    assert _telemetry._system is None


async def test_a_snapshot_taken_across_a_swap_of_the_process_wide_system_is_dropped(process_wide) -> None:
    app = app_with_middleware()
    assert await call(app, "/api/users/1") == [200]
    first = malti_sdk.core._telemetry_system
    process_wide.append(first)
    middleware = app.middleware_stack
    while not isinstance(middleware, MaltiMiddleware):
        middleware = middleware.app
    middleware._snapshot = None
    # another thread swaps the system between the middleware's check and its snapshot
    _telemetry._system = mock.MagicMock()
    first.batch_sender._running = True  # as if its loop were running
    middleware._take_snapshot(first.batch_sender)
    assert middleware._snapshot is None
    first.batch_sender._running = False
    _telemetry._system = None
    await first.stop()
