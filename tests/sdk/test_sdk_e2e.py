"""End to end: instrumented apps ship records into a real malti-server, checked in its PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from datetime import datetime, timezone

import httpx
import pytest
import uvicorn
from fastapi import APIRouter, FastAPI
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route

from malti_sdk import MaltiMiddleware, TelemetryRecord
from sdk_support import call, free_port, wait_for

SERVICE = "user-service"


@pytest.fixture
def node() -> str:
    """A node name of this test only: its rows are told apart from other tests' on the shared server."""
    return f"node-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def server_system(malti_server, make_system, node):
    def factory(**settings):
        base = dict(
            api_key=malti_server.service_keys[SERVICE], service_name=SERVICE, node=node, malti_url=malti_server.url
        )
        return make_system(**{**base, **settings})

    return factory


def rows_of(server, node: str):
    return server.sql(
        "SELECT method, endpoint, status, response_time, consumer, context FROM requests WHERE node = $1", node
    )


class Boom(Exception):
    pass


def build_app(system) -> Starlette:
    async def ok(request):
        return PlainTextResponse("ok")

    async def status(request):
        return Response(status_code=int(request.path_params["code"]))

    async def boom(request):
        raise Boom()

    api = FastAPI()
    router = APIRouter(prefix="/items")

    @router.get("/{item_id}")
    def item(item_id: int):
        return {"id": item_id}

    api.include_router(router, prefix="/v1")
    app = Starlette(
        routes=[
            Route("/users/{user_id}", ok),
            Route("/status/{code}", status),
            Route("/boom", boom),
            Mount("/api/v2", routes=[Route("/posts/{post_id}", ok)]),
            Mount("/fast", app=api),
        ]
    )
    app.add_middleware(MaltiMiddleware, telemetry_system=system)
    return app


async def test_n_requests_arrive_as_exactly_n_records_with_full_patterns(malti_server, server_system, node):
    system = server_system(batch_size=100)
    app = build_app(system)
    paths = (
        [f"/users/{i}" for i in range(120)]
        + [f"/api/v2/posts/{i}" for i in range(50)]
        + [f"/fast/v1/items/{i}" for i in range(30)]
    )
    statuses = await call(app, *paths, headers={"x-consumer-id": "web-app"})
    assert set(statuses) == {200}
    await system.stop()
    rows = rows_of(malti_server, node)
    assert len(rows) == 200
    by_endpoint = {}
    for r in rows:
        by_endpoint[r["endpoint"]] = by_endpoint.get(r["endpoint"], 0) + 1
    assert by_endpoint == {"/users/{user_id}": 120, "/api/v2/posts/{post_id}": 50, "/fast/v1/items/{item_id}": 30}
    assert {r["consumer"] for r in rows} == {"web-app"}
    # sub-millisecond precision end to end: fast in-process requests are not all 0 ms
    assert any(0 < r["response_time"] < 1 for r in rows)
    assert any(r["response_time"] != int(r["response_time"]) for r in rows)
    assert system.get_stats()["total_sent"] == 200


async def test_404_exceptions_and_clean_mode(malti_server, server_system, node):
    system = server_system()
    app = build_app(system)
    statuses = await call(app, "/status/404", "/status/401", "/nowhere/42", "/boom", "/status/503")
    assert statuses == [404, 401, 404, 500, 503]
    await system.stop()
    assert sorted((r["endpoint"], r["status"]) for r in rows_of(malti_server, node)) == [
        ("/boom", 500),
        ("/status/{code}", 503),
    ]


async def test_without_clean_mode_unmatched_paths_are_one_marker(malti_server, server_system, node):
    system = server_system(clean_mode=False)
    app = build_app(system)
    await call(app, "/nowhere/42", "/secret/alice@example.com", "/status/401")
    await system.stop()
    assert sorted((r["endpoint"], r["status"]) for r in rows_of(malti_server, node)) == [
        ("/status/{code}", 401),
        ("<unmatched>", 404),
        ("<unmatched>", 404),
    ]


async def test_ip_anonymisation_and_context(malti_server, server_system, node):
    system = server_system(use_ip_as_consumer=True, ip_anonymize=True)

    async def ctx(request):
        request.state.context = "legacy"
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/ctx", ctx)])
    app.add_middleware(MaltiMiddleware, telemetry_system=system)
    await call(app, "/ctx", headers={"x-forwarded-for": "203.0.113.77, 10.0.0.1"})
    await call(app, "/ctx", headers={"x-forwarded-for": "2001:db8:85a3:8d3:1319:8a2e:370:7348"})
    await system.stop()
    rows = rows_of(malti_server, node)
    assert sorted(r["consumer"] for r in rows) == ["2001:db8:85a3:8d3:xxxx:xxxx:xxxx:xxxx", "203.0.113.xxx"]
    assert {r["context"] for r in rows} == {"legacy"}


async def test_records_from_threads_all_arrive(malti_server, server_system, node):
    system = server_system(batch_size=250)

    def worker(n):
        for i in range(300):
            system.record_request("POST", "/jobs/{job_id}", 201, 1.5, f"t{n}-{i}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    await system.stop()
    rows = malti_server.sql("SELECT count(*) AS n, count(DISTINCT consumer) AS d FROM requests WHERE node = $1", node)
    assert rows[0]["n"] == 1800 and rows[0]["d"] == 1800


async def test_a_422_from_the_server_is_dropped_not_retried(malti_server, server_system, node):
    system = server_system(batch_size=3)
    sender = system.batch_sender
    far_future = datetime(2200, 1, 1, tzinfo=timezone.utc)
    sender.add_record(TelemetryRecord(SERVICE, "GET", "/x", 200, 1.0, "c", created_at=far_future))
    system.record_request("GET", "/y", 200, 1.0, "c")
    system.record_request("GET", "/z", 200, 1.0, "c")
    await wait_for(lambda: system.get_stats()["dropped"].get("http_422") == 3)
    assert system.get_stats()["in_flight"] == 0  # settled, not pending a retry
    await system.stop()
    assert rows_of(malti_server, node) == []


async def test_overflow_is_counted_with_a_live_server(malti_server, server_system, node):
    system = server_system(buffer_size=100, batch_size=1000, batch_interval=3600)
    for i in range(150):
        system.record_request("GET", "/o", 200, 1.0, f"c{i}")
    await system.stop()
    stats = system.get_stats()
    assert stats["dropped"] == {"overflow": 50} and stats["total_sent"] == 100
    assert len(rows_of(malti_server, node)) == 100


async def test_server_stopped_mid_traffic_every_record_arrives_once(start_server, make_system, node):
    server = start_server()
    system = make_system(
        api_key=server.service_keys[SERVICE],
        service_name=SERVICE,
        node=node,
        malti_url=server.url,
        batch_size=50,
        batch_interval=0.1,
        retry_delay=0.1,
        max_retry_delay=0.5,
        shutdown_timeout=15,
    )
    app = build_app(system)
    sent = 0

    async def traffic(count):
        nonlocal sent
        for _ in range(count):
            await call(app, f"/users/{sent}", headers={"x-consumer-id": f"c-{sent}"})
            sent += 1
            await asyncio.sleep(0.001)

    await traffic(300)
    await asyncio.to_thread(server.stop)  # down while traffic goes on
    await traffic(300)
    await asyncio.sleep(0.5)
    assert system.get_stats()["total_sent"] < sent
    await asyncio.to_thread(server.start)
    await traffic(100)
    await wait_for(lambda: system.get_stats()["total_sent"] == sent, timeout=60)
    await system.stop()
    rows = server.sql("SELECT count(*) AS n, count(DISTINCT consumer) AS d FROM requests WHERE node = $1", node)
    assert rows[0]["n"] == sent == 700 and rows[0]["d"] == 700
    assert system.get_stats()["dropped"] == {}


def test_lifespan_starts_the_sender_and_shutdown_flushes(malti_server, node):
    from malti_sdk import TelemetryConfig, TelemetrySystem

    system = TelemetrySystem(
        TelemetryConfig(
            api_key=malti_server.service_keys[SERVICE],
            service_name=SERVICE,
            node=node,
            malti_url=malti_server.url,
            batch_interval=3600,
            batch_size=10_000,
        )
    )
    started = []

    async def ok(request):
        started.append(system.get_stats()["running"])
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/hello/{name}", ok)])
    app.add_middleware(MaltiMiddleware, telemetry_system=system)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        for i in range(25):
            assert client.get(f"/hello/{i}").status_code == 200
    assert started and all(started)  # running from startup, before any request
    assert rows_of(malti_server, node) == []  # the interval is an hour: nothing sent yet
    server.should_exit = True
    thread.join(30)
    assert len(rows_of(malti_server, node)) == 25  # delivered by the shutdown flush
    assert not system.get_stats()["running"]
