"""The sender against a scriptable receiver under uvicorn: batching, gzip, idempotent retries, drops by reason."""

from __future__ import annotations

import asyncio
import decimal
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import numpy
import pytest

from sdk_support import Receiver, free_port, wait_for


def record_many(system, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        system.record_request("GET", "/items/{item_id}", 200, 0.25 + i / 1000, f"consumer-{i}")


def consumers(records) -> list[str]:
    return sorted(r["consumer"] for r in records)


async def test_records_arrive_in_batches_with_the_wire_format(receiver, make_system):
    system = make_system(malti_url=receiver.url, batch_size=40)
    record_many(system, 100)
    await wait_for(lambda: system.get_stats()["total_sent"] == 100)
    assert [len(r["records"]) for r in receiver.requests][:2] == [40, 40]
    first = receiver.stored[0]
    assert set(first) == {
        "service",
        "node",
        "method",
        "endpoint",
        "status",
        "response_time",
        "consumer",
        "context",
        "created_at",
    }
    assert first["service"] == "test-service" and first["node"] == "node-1"
    assert first["response_time"] == 0.25  # fractional milliseconds survive
    assert first["created_at"].endswith("Z")
    headers = receiver.requests[0]["headers"]
    assert headers["x-api-key"] == "test-key"
    assert headers["content-encoding"] == "gzip"
    assert len(headers["idempotency-key"]) >= 16
    assert receiver.requests[0]["path"] == "/api/v1/ingest"
    stats = system.get_stats()
    assert stats["total_sent"] == 100 and stats["total_added"] == 100 and stats["total_failed"] == 0


async def test_partial_batch_is_sent_after_the_interval(receiver, make_system):
    system = make_system(malti_url=receiver.url, batch_size=500, batch_interval=0.3)
    record_many(system, 3)
    await wait_for(lambda: len(receiver.stored) == 3)


async def test_retries_keep_the_idempotency_key_and_honour_retry_after(receiver, make_system):
    receiver.script.extend([(503, {"Retry-After": "0"}), (429, {"Retry-After": "0"}), (500, {}), (408, {})])
    system = make_system(malti_url=receiver.url, batch_size=10)
    record_many(system, 10)
    await wait_for(lambda: system.get_stats()["total_sent"] == 10)
    keys = {r["headers"]["idempotency-key"] for r in receiver.requests}
    assert len(receiver.requests) == 5 and len(keys) == 1
    assert system.get_stats()["total_sent"] == 10


async def test_a_422_is_not_retried_and_is_counted(receiver, make_system):
    receiver.script.append((422, {}))
    system = make_system(malti_url=receiver.url, batch_size=10)
    record_many(system, 10)
    await wait_for(lambda: system.get_stats()["total_failed"] == 10)
    await asyncio.sleep(0.3)
    assert len(receiver.requests) == 1
    stats = system.get_stats()
    assert stats["dropped"] == {"http_422": 10} and stats["total_sent"] == 0


async def test_too_large_batches_are_split(receiver, make_system):
    receiver.script.extend([(413, {}), (413, {})])
    system = make_system(malti_url=receiver.url, batch_size=8)
    record_many(system, 8)
    await wait_for(lambda: len(receiver.stored) == 8)
    assert consumers(receiver.stored) == sorted(f"consumer-{i}" for i in range(8))
    assert system.get_stats()["dropped"] == {}


async def test_server_down_then_up_delivers_everything_once(make_system):
    port = free_port()
    system = make_system(malti_url=f"http://127.0.0.1:{port}", batch_size=25)
    record_many(system, 100)
    await asyncio.sleep(0.5)  # several failed attempts while nothing listens
    assert system.get_stats()["total_sent"] == 0
    receiver = Receiver()
    receiver.port = port
    receiver.start()
    try:
        await wait_for(lambda: system.get_stats()["total_sent"] == 100)
        assert consumers(receiver.stored) == sorted(f"consumer-{i}" for i in range(100))
        assert system.get_stats()["dropped"] == {}
    finally:
        receiver.stop()


async def test_lost_answers_do_not_duplicate(receiver, make_system):
    # The receiver stores the batch but answers 502: the retry carries the same key and is not stored again.
    receiver.script.append((502, {}))
    original_app = receiver.app

    async def store_then_fail(scope, receive, send):
        await original_app(scope, receive, send)
        if len(receiver.requests) == 1:
            receiver.stored.extend(receiver.requests[0]["records"])
            receiver._keys.add(receiver.requests[0]["headers"]["idempotency-key"])

    receiver.app = store_then_fail
    system = make_system(malti_url=receiver.url, batch_size=5)
    record_many(system, 5)
    await wait_for(lambda: system.get_stats()["total_sent"] == 5)
    assert len(receiver.requests) == 2 and len(receiver.stored) == 5


async def test_a_connection_the_server_closes_is_replaced(receiver, make_system):
    # Each answer closes the kept-alive connection: the next batch opens a new one, nothing lost.
    receiver.script.extend([(200, {"Connection": "close"})] * 3)
    system = make_system(malti_url=receiver.url, batch_size=10)
    for round_no in range(5):
        record_many(system, 10, start=round_no * 10)
        await wait_for(lambda: system.get_stats()["total_sent"] == (round_no + 1) * 10)
    assert consumers(receiver.stored) == sorted(f"consumer-{i}" for i in range(50))
    assert system.get_stats()["dropped"] == {}


async def test_urls_the_lean_client_does_not_handle_go_through_httpx(receiver, make_system):
    # Credentials in the URL (like https:// and proxies) take the httpx path: same wire format.
    system = make_system(malti_url=f"http://user:secret@127.0.0.1:{receiver.port}", batch_size=20)
    record_many(system, 40)
    await wait_for(lambda: system.get_stats()["total_sent"] == 40)
    assert len(receiver.stored) == 40
    headers = receiver.requests[0]["headers"]
    assert headers["authorization"].startswith("Basic ")
    assert headers["content-encoding"] == "gzip" and headers["x-api-key"] == "test-key"
    assert len({r["headers"]["idempotency-key"] for r in receiver.requests}) == 2


async def test_overflow_is_counted_never_silent(make_system):
    system = make_system(
        malti_url=f"http://127.0.0.1:{free_port()}",
        buffer_size=50,
        batch_size=1000,
        batch_interval=3600,
        shutdown_timeout=0,
    )
    record_many(system, 80)
    stats = system.get_stats()
    assert stats["current_size"] == 50 and stats["dropped"] == {"overflow": 30}
    assert stats["total_added"] == 80


async def test_shutdown_flush_delivers_what_is_buffered(receiver, make_system):
    system = make_system(malti_url=receiver.url, batch_size=1000, batch_interval=3600)
    record_many(system, 321)
    await system.stop()
    assert len(receiver.stored) == 321
    assert not system.get_stats()["running"]


async def test_shutdown_flush_is_bounded_when_the_server_is_down(make_system):
    system = make_system(malti_url=f"http://127.0.0.1:{free_port()}", batch_size=10, shutdown_timeout=0.5)
    record_many(system, 30)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await system.stop()
    assert loop.time() - started < 5
    stats = system.get_stats()
    assert stats["dropped"] == {"shutdown": 30} and stats["current_size"] == 0


async def test_record_request_from_threads_and_other_loops(receiver, make_system):
    system = make_system(malti_url=receiver.url, batch_size=200)

    def from_thread(n: int) -> None:
        record_many(system, 250, start=n * 1000)

    def from_other_loop(n: int) -> None:
        async def go():
            record_many(system, 250, start=n * 1000)
            await asyncio.sleep(0)

        asyncio.run(go())

    threads = [threading.Thread(target=from_thread, args=(n,)) for n in range(4)]
    threads += [threading.Thread(target=from_other_loop, args=(n,)) for n in range(4, 8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    await wait_for(lambda: len(receiver.stored) == 2000)
    assert len(set(consumers(receiver.stored))) == 2000
    assert system.get_stats()["dropped"] == {}


def test_record_request_without_any_event_loop_starts_a_sender_thread(receiver):
    from malti_sdk import TelemetryConfig, TelemetrySystem

    system = TelemetrySystem(TelemetryConfig(api_key="k", malti_url=receiver.url, batch_interval=0.05))
    record_many(system, 5)
    asyncio.run(wait_for(lambda: len(receiver.stored) == 5))
    asyncio.run(system.stop())
    assert not system.get_stats()["running"]


async def test_invalid_manual_records_are_counted_not_sent(receiver, make_system):
    system = make_system(malti_url=receiver.url)
    system.record_request("GET", "/x", 700, 1.0, "c")
    system.record_request("GET", "/x", 200, -1.0, "c")
    system.record_request("GET", "", 200, 1.0, "c")
    system.record_request("GET", "/x", 200, float("nan"), "c")
    system.record_request("GET", "/x", 200, 2e12, "c")  # over the server's maximum: it would refuse the batch
    system.record_request("GET", "/x", 200, 1e12, "c", context="max")
    system.record_request("GET", "/x", 200, 1, "c", context="ctx")
    await system.stop()
    assert sorted(r["context"] for r in receiver.stored) == ["ctx", "max"]
    stats = system.get_stats()
    assert stats["dropped"] == {"invalid": 5} and stats["total_added"] == 7


async def test_numbers_given_as_text_are_taken_as_the_server_would(receiver, make_system):
    system = make_system(malti_url=receiver.url)
    system.record_request("GET", "/x", "201", "12.5", "c")
    system.record_request("GET", "/x", 202.0, 3, "c")
    system.record_request("GET", "/x", numpy.int64(203), numpy.float32(1.5), "c")
    system.record_request("GET", "/x", 204, decimal.Decimal("2.25"), "c")
    system.record_request("GET", "/x", "2xx", 1.0, "c")  # still invalid
    system.record_request("GET", "/x", 200.5, 1.0, "c")  # not a whole status
    system.record_request("GET", "/x", " 200 ", 1.0, "c")  # not a JSON number: the server refuses it too
    system.record_request("GET", "/x", 200, 10**400, "c")  # too large for a float: counted, never raised
    await system.stop()
    assert sorted((r["status"], r["response_time"]) for r in receiver.stored) == [
        (201, 12.5),
        (202, 3.0),
        (203, 1.5),
        (204, 2.25),
    ]
    assert system.get_stats()["dropped"] == {"invalid": 4}


async def test_refused_key_drops_and_counts(receiver, make_system):
    receiver.script.append((401, {}))
    system = make_system(malti_url=receiver.url, batch_size=3)
    record_many(system, 3)
    await wait_for(lambda: system.get_stats()["dropped"].get("http_401") == 3)


EXIT_SCRIPT = """
import asyncio, sys
from malti_sdk import TelemetryConfig, TelemetrySystem
system = TelemetrySystem(TelemetryConfig(api_key="k", malti_url=sys.argv[1], batch_interval=3600, batch_size=10_000))
if sys.argv[2] == "thread":
    for i in range(37):
        system.record_request("GET", "/exit", 200, 1.0, f"c{i}")
else:
    async def main():  # the loop ends without a lifespan shutdown: the sender task is cancelled
        for i in range(37):
            system.record_request("GET", "/exit", 200, 1.0, f"c{i}")
        await asyncio.sleep(0.3)
    asyncio.run(main())
"""


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])  # a name is resolved after threads are gone
@pytest.mark.parametrize("mode", ["thread", "loop"])
def test_records_left_at_interpreter_exit_are_flushed(receiver, tmp_path, mode, host):
    script = tmp_path / "exit_app.py"
    script.write_text(EXIT_SCRIPT)
    url = receiver.url.replace("127.0.0.1", host)
    done = subprocess.run([sys.executable, str(script), url, mode], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert len(receiver.stored) == 37


SIGTERM_APP = """
import os

from malti_sdk import MaltiMiddleware


async def plain(scope, receive, send):  # a plain ASGI app: it serves "http" only
    if os.environ["APP_KIND"] == "raises":
        assert scope["type"] == "http"  # as uvicorn's own example app
    elif scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


app = MaltiMiddleware(plain)
"""


@pytest.mark.parametrize("kind", ["returns", "raises"])
def test_sigterm_to_uvicorn_serving_an_app_without_lifespan_delivers_what_is_buffered(receiver, tmp_path, kind):
    """uvicorn stops on SIGTERM, then raises the signal again with its default action, which
    ends the process before any exit hook runs. The app takes no part in lifespan events,
    so the middleware answers them: its sender stops (and delivers) with the server."""
    (tmp_path / "sigterm_app.py").write_text(SIGTERM_APP)
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path]),
        "APP_KIND": kind,
        "MALTI_API_KEY": "k",
        "MALTI_URL": receiver.url,
        "MALTI_BATCH_INTERVAL": "3600",  # nothing is sent before the signal
        "MALTI_BATCH_SIZE": "10000",
    }
    command = [sys.executable, "-m", "uvicorn", "sigterm_app:app", "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(command, env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False) as client:
            for _ in range(400):
                try:
                    client.get("/first")
                    break
                except httpx.TransportError:
                    if proc.poll() is not None:
                        raise AssertionError(proc.stderr.read()) from None
                    time.sleep(0.05)
            else:
                raise AssertionError("uvicorn did not answer within 20 s")
            for i in range(41):
                assert client.get(f"/users/{i}").status_code == 200
        assert receiver.stored == []
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode in (0, -signal.SIGTERM), stderr  # uvicorn 0.29 and later raise it again
    assert len(receiver.stored) == 42, stderr
    assert {r["endpoint"] for r in receiver.stored} == {"<unmatched>"}
