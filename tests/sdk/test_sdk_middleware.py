"""MaltiMiddleware behaviour in process: statuses, errors, timing, consumers, context, pass-through."""

from __future__ import annotations

import asyncio
import gc
import warnings

import httpx
import pytest
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute

from malti_sdk import MaltiMiddleware, get_telemetry_system

from sdk_support import call

# every test runs on the compiled request path and on the pure-Python one
pytestmark = pytest.mark.usefixtures("request_path")


class Boom(Exception):
    pass


def rows(system):
    return list(system.batch_sender.buffer.rows)


@pytest.fixture
def system(make_system):
    return make_system(malti_url="http://127.0.0.1:9", batch_interval=3600, shutdown_timeout=0)


def make_app(system, **kwargs):
    async def ok(request):
        return PlainTextResponse("ok")

    async def status(request):
        return Response(status_code=int(request.path_params["code"]))

    async def boom(request):
        raise Boom("kaput")

    async def who(request):
        if "consumer" in request.query_params:
            request.state.malti_consumer = request.query_params["consumer"]
        if "context" in request.query_params:
            request.state.context = request.query_params["context"]
        if "malti_context" in request.query_params:
            request.state.malti_context = request.query_params["malti_context"]
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[
            Route("/ok", ok),
            Route("/status/{code}", status),
            Route("/boom", boom),
            Route("/who", who),
        ]
    )
    app.add_middleware(MaltiMiddleware, telemetry_system=system, **kwargs)
    return app


async def test_each_request_becomes_one_record(system):
    app = make_app(system)
    await call(app, "/ok", "/status/201", "/status/503")
    assert [(r[0], r[1], r[2]) for r in rows(system)] == [
        ("GET", "/ok", 200),
        ("GET", "/status/{code}", 201),
        ("GET", "/status/{code}", 503),
    ]
    method, endpoint, status, response_time, consumer, context, created = rows(system)[0]
    assert isinstance(response_time, float) and response_time >= 0
    assert consumer == "anonymous" and context is None


async def test_exception_is_recorded_as_500_and_reraised_untouched(system):
    app = make_app(system)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        with pytest.raises(Boom, match="kaput"):
            await client.get("/boom")
    assert [(r[1], r[2]) for r in rows(system)] == [("/boom", 500)]


async def test_exception_in_a_raw_asgi_app_is_the_same_object(system):
    error = Boom("same")

    async def raw(scope, receive, send):
        raise error

    app = MaltiMiddleware(raw, telemetry_system=system)
    with pytest.raises(Boom) as caught:
        await app({"type": "http", "method": "GET", "path": "/", "headers": []}, None, None)
    assert caught.value is error
    assert rows(system)[0][2] == 500


async def test_clean_mode_ignores_401_and_404(system):
    app = make_app(system)
    await call(app, "/status/401", "/status/404", "/nowhere", "/status/403")
    assert [r[2] for r in rows(system)] == [403]


async def test_without_clean_mode_401_and_404_are_recorded(make_system):
    system = make_system(malti_url="http://127.0.0.1:9", batch_interval=3600, clean_mode=False, shutdown_timeout=0)
    app = make_app(system)
    await call(app, "/status/401", "/nowhere")
    assert [(r[1], r[2]) for r in rows(system)] == [("/status/{code}", 401), ("<unmatched>", 404)]


async def test_nothing_is_recorded_without_an_api_key(make_system):
    system = make_system(api_key=None, malti_url="http://127.0.0.1:9")
    app = make_app(system)
    assert await call(app, "/ok") == [200]
    assert rows(system) == [] and not system.get_stats()["running"]


@pytest.mark.parametrize(
    "headers, expected",
    [
        ({"x-consumer-id": "a", "x-user-id": "b", "consumer-id": "c", "user-id": "d"}, "a"),
        ({"user-id": "d", "consumer-id": "c", "x-user-id": "b"}, "b"),
        ({"user-id": "d", "consumer-id": "c"}, "c"),
        ({"user-id": "d"}, "d"),
        ({}, "anonymous"),
    ],
)
async def test_consumer_headers_in_priority_order(system, headers, expected):
    await call(make_app(system), "/who", headers=headers)
    assert _consumers(system) == [expected]


async def test_request_state_consumer_wins_over_headers(system):
    await call(make_app(system), "/who?consumer=billing", headers={"x-consumer-id": "header"})
    assert _consumers(system) == ["billing"]


async def test_empty_consumer_is_anonymous_from_state_and_headers_alike(system):
    app = make_app(system)
    await call(app, "/who?consumer=", headers={"x-consumer-id": "header"})
    await call(app, "/who", headers={"x-consumer-id": ""})
    assert _consumers(system) == ["anonymous", "anonymous"]


async def test_context_from_request_state(system):
    app = make_app(system)
    await call(app, "/who?context=legacy", "/who?malti_context=beta", "/who")
    assert [r[5] for r in rows(system)] == ["legacy", "beta", None]


@pytest.mark.parametrize(
    "anonymize, forwarded, expected",
    [
        (False, "203.0.113.7, 10.0.0.1", "203.0.113.7"),
        (True, "203.0.113.7, 10.0.0.1", "203.0.113.xxx"),
        (True, "2001:db8:85a3:8d3:1319:8a2e:370:7348", "2001:db8:85a3:8d3:xxxx:xxxx:xxxx:xxxx"),
        (True, "not-an-ip, 10.0.0.1", "192.0.2.xxx"),  # invalid leftmost entry: the client address
        (True, "fe80::1%eth0", "fe80:0:0:0:xxxx:xxxx:xxxx:xxxx"),  # a zone index is masked too
        (False, "fe80::1%eth0", "fe80::1%eth0"),
        (False, None, "192.0.2.10"),
    ],
)
async def test_ip_as_consumer(make_system, anonymize, forwarded, expected):
    system = make_system(
        malti_url="http://127.0.0.1:9",
        batch_interval=3600,
        use_ip_as_consumer=True,
        ip_anonymize=anonymize,
        shutdown_timeout=0,
    )
    app = make_app(system)
    headers = {"x-forwarded-for": forwarded} if forwarded else {}
    transport = httpx.ASGITransport(app=app, client=("192.0.2.10", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        await client.get("/who", headers=headers)
    assert _consumers(system) == [expected]


async def test_consumer_header_beats_ip(make_system):
    system = make_system(
        malti_url="http://127.0.0.1:9", use_ip_as_consumer=True, batch_interval=3600, shutdown_timeout=0
    )
    await call(make_app(system), "/who", headers={"x-consumer-id": "app", "x-forwarded-for": "1.2.3.4"})
    assert _consumers(system) == ["app"]


async def test_response_time_runs_to_the_last_body_chunk_not_background_tasks(system):
    async def slow_stream(request):
        async def body():
            yield b"a"
            await asyncio.sleep(0.05)
            yield b"b"

        return StreamingResponse(body(), background=BackgroundTask(asyncio.sleep, 0.5))

    app = Starlette(routes=[Route("/stream", slow_stream)])
    app.add_middleware(MaltiMiddleware, telemetry_system=system)
    await call(app, "/stream")
    response_time = rows(system)[0][3]
    assert 50.0 <= response_time < 500.0


async def test_response_time_of_a_stream_includes_the_server_taking_the_last_chunk(system):
    # uvicorn's send waits while a slow client drains what earlier chunks filled: part of the response
    async def stream(request):
        async def body():
            yield b"a" * 1000
            yield b"b"

        return StreamingResponse(body())

    app = Starlette(routes=[Route("/stream", stream)])
    app.add_middleware(MaltiMiddleware, telemetry_system=system)
    scope = {"type": "http", "method": "GET", "path": "/stream", "root_path": "", "query_string": b"", "headers": []}

    async def receive():
        await asyncio.sleep(1)  # no disconnect while streaming
        return {"type": "http.request", "body": b"", "more_body": False}

    async def slow_send(message):
        if message["type"] == "http.response.body" and not message.get("more_body"):
            await asyncio.sleep(0.05)

    await app(scope, receive, slow_send)
    await app(dict(scope), receive, slow_send)  # the second goes through the inline path
    assert [r[3] >= 50.0 for r in rows(system)] == [True, True]


async def test_a_response_left_incomplete_is_recorded_as_500(system):
    async def half(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        # returns without the last chunk

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        pass

    scope = {"type": "http", "method": "GET", "path": "/half", "root_path": "", "query_string": b"", "headers": []}
    await MaltiMiddleware(half, telemetry_system=system)(scope, receive, send)
    assert [(r[1], r[2]) for r in rows(system)] == [("<unmatched>", 500)]


async def test_websockets_pass_through(system):
    async def echo(websocket):
        await websocket.accept()
        await websocket.send_text(await websocket.receive_text())
        await websocket.close()

    app = Starlette(routes=[WebSocketRoute("/ws", echo)])
    app.add_middleware(MaltiMiddleware, telemetry_system=system)
    inbox = [{"type": "websocket.connect"}, {"type": "websocket.receive", "text": "hi"}]
    sent = []

    async def receive():
        return inbox.pop(0) if inbox else {"type": "websocket.disconnect", "code": 1000}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "websocket",
        "path": "/ws",
        "raw_path": b"/ws",
        "root_path": "",
        "headers": [],
        "query_string": b"",
        "scheme": "ws",
        "server": ("t", 80),
        "subprotocols": [],
    }
    await app(scope, receive, send)
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert sent[1]["text"] == "hi"
    assert rows(system) == []


async def test_weird_methods_are_recorded_as_other(system):
    app = make_app(system)
    await call(app, "/ok", method="m1!")
    assert rows(system)[0][0] == "OTHER"


async def test_recording_failure_never_reaches_the_app(system, monkeypatch):
    app = make_app(system)
    monkeypatch.setattr("malti_sdk._middleware.time", lambda: 1 / 0)
    assert await call(app, "/ok") == [200]
    assert rows(system) == []


def test_default_system_is_the_process_wide_one():
    app = MaltiMiddleware(Starlette())
    assert app.telemetry_system is get_telemetry_system()


def _consumers(system):
    return [r[4].decode() if isinstance(r[4], bytes) else r[4] for r in rows(system)]


async def test_consumer_set_by_another_middleware(system):
    from starlette.middleware.base import BaseHTTPMiddleware

    class SetConsumer(BaseHTTPMiddleware):
        async def dispatch(self, request, call_next):
            request.state.malti_consumer = "from-middleware"
            return await call_next(request)

    for position in ("inner", "outer"):
        app = Starlette(routes=[Route("/x", lambda request: PlainTextResponse("ok"))])
        if position == "inner":
            app.add_middleware(SetConsumer)
            app.add_middleware(MaltiMiddleware, telemetry_system=system)
        else:
            app.add_middleware(MaltiMiddleware, telemetry_system=system)
            app.add_middleware(SetConsumer)
        assert await call(app, "/x") == [200]
    assert _consumers(system) == ["from-middleware", "from-middleware"]
    assert [r[1] for r in rows(system)] == ["/x", "/x"]


# --- the inline common case (a snapshot of the settings kept on the middleware) ----------


def _malti_layer(app):
    layer = app.middleware_stack
    while not isinstance(layer, MaltiMiddleware):
        layer = layer.app
    return layer


async def test_common_case_records_the_same_as_the_full_path(system):
    app = make_app(system)
    headers = {"x-user-id": "u1", "user-id": "u2"}
    await call(app, "/ok", "/status/201", headers=headers)
    layer = _malti_layer(app)
    assert layer._snapshot is not None, "after the first request the sender runs: the inline path applies"
    await call(app, "/ok", "/status/201", headers=headers)
    got = [(r[0], r[1], r[2], r[4], r[5]) for r in rows(system)]
    assert got[:2] == got[2:] == [("GET", "/ok", 200, b"u1", None), ("GET", "/status/{code}", 201, b"u1", None)]
    assert all(isinstance(r[3], float) and r[3] >= 0 and r[6] > 0 for r in rows(system))
    # request state and unknown methods leave the inline path and still record right
    await call(app, "/who?consumer=c&context=x")
    await call(app, "/ok", method="m1!")
    assert [(r[0], r[4], r[5]) for r in rows(system)[4:]] == [("GET", "c", "x"), ("OTHER", "anonymous", None)]


async def test_configuration_changes_reach_the_common_case(system):
    from dataclasses import replace

    app = make_app(system)
    sender = system.batch_sender
    sender.config = replace(sender.config, clean_mode=False)
    await call(app, "/ok", "/status/404")
    assert _malti_layer(app)._snapshot is not None
    sender.config = replace(sender.config, clean_mode=True)
    assert _malti_layer(app)._snapshot is None
    await call(app, "/status/404", "/status/404")
    assert [r[2] for r in rows(system)] == [200, 404]
    sender.config = replace(sender.config, clean_mode=False)
    await call(app, "/status/404", "/status/404")
    assert [r[2] for r in rows(system)] == [200, 404, 404, 404]
    # a smaller buffer: the next records are refused and counted, not lost silently
    sender.buffer.capacity = 4
    await call(app, "/ok", "/ok", "/ok")
    assert len(rows(system)) == 4
    assert system.get_stats()["dropped"]["overflow"] == 3


async def test_a_stopped_sender_is_restarted_by_the_next_request(system):
    app = make_app(system)
    await call(app, "/ok", "/ok")
    layer = _malti_layer(app)
    assert layer._snapshot is not None
    await system.stop()
    assert not system.batch_sender.running and layer._snapshot is None
    await call(app, "/ok")
    assert system.batch_sender.running
    await call(app, "/ok")
    assert layer._snapshot is not None


async def test_routes_added_later_get_their_pattern(system, monkeypatch):
    monkeypatch.setattr("malti_sdk._routes._REBUILD_EVERY", 0.0)
    app = make_app(system)
    await call(app, "/ok", "/ok")
    assert _malti_layer(app)._snapshot is not None

    async def late(request):
        return PlainTextResponse("late")

    from starlette.routing import Mount, Router

    app.router.routes.append(Mount("/later", routes=[Route("/items/{item_id}", late)]))
    await call(app, "/later/items/1", "/later/items/2")
    assert [r[1] for r in rows(system)] == ["/ok", "/ok", "/later/items/{item_id}", "/later/items/{item_id}"]


async def test_a_failure_on_the_common_case_never_reaches_the_app(system, monkeypatch):
    app = make_app(system)
    await call(app, "/ok", "/ok")
    assert _malti_layer(app)._snapshot is not None
    monkeypatch.setattr("malti_sdk._middleware.time", lambda: 1 / 0)
    assert await call(app, "/ok") == [200]
    assert await call(app, "/who?consumer=slow-path") == [200]
    assert len(rows(system)) == 2
    # not lost silently: both are counted
    assert system.get_stats()["dropped"] == {"error": 2}
    assert system.get_stats()["total_added"] == 4


async def test_a_configuration_change_while_the_snapshot_is_taken_is_not_missed(system, monkeypatch):
    from dataclasses import replace

    sender = system.batch_sender
    sender.config = replace(sender.config, clean_mode=False)
    subscribe = sender.subscribe

    def subscribe_after_a_change(listener):
        # another thread turns clean mode on just before the middleware subscribes
        sender.config = replace(sender.config, clean_mode=True)
        monkeypatch.setattr(sender, "subscribe", subscribe)
        return subscribe(listener)

    monkeypatch.setattr(sender, "subscribe", subscribe_after_a_change)
    app = make_app(system)
    await call(app, "/ok")
    assert _malti_layer(app)._snapshot is not None
    await call(app, "/status/404", "/status/401", "/ok")
    assert [r[2] for r in rows(system)] == [200, 200]


def test_a_sender_whose_event_loop_closed_is_restarted(system, monkeypatch):
    monkeypatch.setattr("malti_sdk._middleware._backlog_limit", lambda sender: 3)
    app = make_app(system)
    sender = system.batch_sender
    old_loop = asyncio.new_event_loop()
    old_loop.run_until_complete(call(app, "/ok"))
    old_loop.close()  # without cancelling the sender's task (it never ends)
    assert sender.running and not sender._alive()

    async def later():
        await call(app, "/ok", "/ok", "/ok", "/ok")
        alive = sender._alive()
        await system.stop()
        return alive

    assert asyncio.run(later()), "the request past the backlog limit restarted the sender"
    with warnings.catch_warnings():  # the abandoned task of the closed loop, collected here
        warnings.simplefilter("ignore")
        del old_loop
        gc.collect()


async def test_lifespan_state_keeps_the_common_case_and_request_state_still_wins(system):
    inner = make_app(system)

    async def with_lifespan_state(scope, receive, send):
        # what uvicorn does for an app whose lifespan yields state: a copy in every request
        if scope["type"] == "http":
            scope["state"] = {"pool": object()}
        await inner(scope, receive, send)

    await call(with_lifespan_state, "/ok", "/ok", headers={"x-consumer-id": "c1"})
    assert _malti_layer(inner)._snapshot is not None
    await call(with_lifespan_state, "/who?consumer=from-state&context=ctx", "/who?malti_context=m")
    got = [(r[1], r[4], r[5]) for r in rows(system)]
    assert got == [
        ("/ok", b"c1", None),
        ("/ok", b"c1", None),
        ("/who", "from-state", "ctx"),
        ("/who", "anonymous", "m"),
    ]


# --- where the app sits: below a Mount, behind a proxy prefix ---------------------------


async def test_middleware_on_a_mounted_sub_application_records_the_mount_prefix(system):
    from starlette.routing import Mount

    sub = make_app(system)
    outer = Starlette(routes=[Mount("/api/v2", app=sub), Mount("/t/{tenant}", app=sub)])
    assert await call(outer, "/api/v2/ok", "/api/v2/status/201", "/api/v2/nope", "/t/acme/ok") == [200, 201, 404, 200]
    system.batch_sender.config = __import__("dataclasses").replace(system.config, clean_mode=False)
    await call(outer, "/api/v2/nope")
    # a parameterised Mount above would put its values into the pattern: no prefix then
    assert [r[1] for r in rows(system)] == ["/api/v2/ok", "/api/v2/status/{code}", "/ok", "<unmatched>"]


async def test_a_proxy_root_path_is_not_part_of_the_pattern(system):
    app = make_app(system)
    transport = httpx.ASGITransport(app=app, root_path="/proxy")
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for _ in range(3):
            assert (await client.get("/proxy/status/201")).status_code == 201
    assert [r[1] for r in rows(system)] == ["/status/{code}"] * 3


async def test_a_route_added_to_a_mounted_router_before_the_next_walk_keeps_its_prefix(system, monkeypatch):
    from starlette.routing import Mount

    monkeypatch.setattr("malti_sdk._routes._REBUILD_EVERY", 3600.0)

    async def late(request):
        return PlainTextResponse("late")

    app = make_app(system)
    mount = Mount("/api", routes=[Route("/first", late)])
    app.router.routes.append(mount)
    await call(app, "/api/first")
    mount.routes.append(Route("/late/{item_id}", late))  # not walked yet: the index does not know it
    await call(app, "/api/late/1", "/api/late/2")
    assert [r[1] for r in rows(system)] == ["/api/first", "/api/late/{item_id}", "/api/late/{item_id}"]


async def test_sender_settings_are_assignable_like_the_originals_attributes(system):
    app = make_app(system)
    await call(app, "/ok", "/status/404")
    system.batch_sender.clean_mode = False  # the original kept its settings as plain attributes
    system.batch_sender.node = "pod-9"
    await call(app, "/status/404")
    assert system.config.clean_mode is False and system.batch_sender.node == "pod-9"
    assert [r[2] for r in rows(system)] == [200, 404]
    system.batch_sender.ingest_endpoint = "http://elsewhere:9000/api/v1/ingest"  # derived from malti_url
    assert system.config.malti_url == "http://elsewhere:9000"
    with pytest.raises(AttributeError, match="malti_url"):
        system.batch_sender.ingest_endpoint = "http://elsewhere/custom"


async def test_no_path_values_in_the_prefix_below_parameterised_mounts(system, monkeypatch):
    from fastapi import FastAPI
    from starlette.routing import Mount

    # Starlette: a plain Mount inside a parameterised one
    sub = make_app(system)
    outer = Starlette(routes=[Mount("/t/{tenant}", routes=[Mount("/api", app=sub)])])
    assert await call(outer, "/t/acme/api/ok", "/t/globex/api/status/201") == [200, 201]
    # FastAPI: app.mount with a parameter (FastAPI's router leaves no Mount in scope["route"])
    fastapi_sub = FastAPI()

    @fastapi_sub.get("/items/{item_id}")
    async def item(item_id: int):
        return {"item_id": item_id}

    fastapi_sub.add_middleware(MaltiMiddleware, telemetry_system=system)
    fastapi_outer = FastAPI()
    fastapi_outer.mount("/t/{tenant}", fastapi_sub)
    assert await call(fastapi_outer, "/t/a/items/1", "/t/b/items/2") == [200, 200]
    # a route the index has not walked yet, below a parameterised Mount
    monkeypatch.setattr("malti_sdk._routes._REBUILD_EVERY", 3600.0)

    async def late(request):
        return PlainTextResponse("late")

    user_mount = Mount("/u/{user}", routes=[Route("/first", late)])
    app = make_app(system)
    app.router.routes.append(user_mount)
    await call(app, "/u/alice/first")
    user_mount.routes.append(Route("/late/{x}", late))
    await call(app, "/u/alice/late/1", "/u/bob/late/2")
    assert [r[1] for r in rows(system)] == [
        "/ok",
        "/status/{code}",
        "/items/{item_id}",
        "/items/{item_id}",
        "/u/{user}/first",
        "/late/{x}",
        "/late/{x}",
    ]


async def test_a_router_mounted_twice_inside_a_mounted_sub_application(system):
    from starlette.routing import Mount

    async def x(request):
        return PlainTextResponse("x")

    shared = [Route("/x", x)]
    sub = Starlette(routes=[Mount("/a", routes=shared), Mount("/b", routes=shared)])
    sub.add_middleware(MaltiMiddleware, telemetry_system=system)
    outer = Starlette(routes=[Mount("/api", app=sub)])
    assert await call(outer, "/api/a/x", "/api/b/x", "/api/b/x") == [200, 200, 200]
    assert [r[1] for r in rows(system)] == ["/api/a/x", "/api/b/x", "/api/b/x"]


async def test_no_snapshot_when_the_sender_stops_while_it_is_taken(system, monkeypatch):
    sender = system.batch_sender
    app = make_app(system)
    await call(app, "/ok")
    layer = _malti_layer(app)
    layer._snapshot = None
    subscribe = sender.subscribe

    def subscribe_as_the_sender_ends(listener):
        sender._running = False  # the sender's loop ends on another thread just now
        monkeypatch.setattr(sender, "subscribe", subscribe)
        return subscribe(listener)

    monkeypatch.setattr(sender, "subscribe", subscribe_as_the_sender_ends)
    await call(app, "/ok")
    assert layer._snapshot is None and not sender.running
    await call(app, "/ok")
    assert sender.running, "the next request restarts the sender"


async def test_a_failure_after_buffering_is_not_counted_as_a_drop(system, monkeypatch):
    app = make_app(system)

    def broken_start():
        raise RuntimeError("no loop for you")

    monkeypatch.setattr(system.batch_sender, "start_soon", broken_start)
    assert await call(app, "/ok") == [200]
    stats = system.get_stats()
    assert (len(rows(system)), stats["dropped"], stats["total_added"]) == (1, {}, 1)


# --- the original package's extension points and import paths -----------------------------


async def test_subclass_hooks_of_the_original_are_called(system):
    class Custom(MaltiMiddleware):
        def _extract_consumer(self, request, use_ip_as_consumer=False, ip_anonymize=False):
            return request.headers.get("x-tenant", "nobody")

        def _extract_context(self, request):
            return request.url.path.split("/")[1]

    app = make_app(system)
    app.user_middleware.clear()
    app.add_middleware(Custom, telemetry_system=system)
    await call(app, "/ok", "/status/201", headers={"x-tenant": "acme", "x-consumer-id": "ignored"})
    await call(app, "/ok")
    assert [(r[1], r[4], r[5]) for r in rows(system)] == [
        ("/ok", "acme", "ok"),
        ("/status/{code}", "acme", "status"),
        ("/ok", "nobody", "ok"),
    ]
    assert _malti_layer(app)._snapshot is None, "an override means every request takes the full path"


async def test_a_failing_or_odd_hook_never_reaches_the_app(system):
    class Broken(MaltiMiddleware):
        def _extract_route_pattern(self, request):
            if request.url.path == "/ok":
                raise ValueError("bug in the subclass")
            return None

    app = make_app(system)
    app.user_middleware.clear()
    app.add_middleware(Broken, telemetry_system=system)
    assert await call(app, "/ok", "/status/201") == [200, 201]
    assert [(r[1], r[2]) for r in rows(system)] == [("<unmatched>", 201)]
    assert system.get_stats()["dropped"] == {"error": 1}


async def test_context_from_state_counts_only_as_a_string(system):
    inner = make_app(system)

    class AppContext:
        pass

    async def with_lifespan_state(scope, receive, send):
        if scope["type"] == "http":
            scope["state"] = {"context": AppContext()}  # an app's own object, copied from its lifespan
        await inner(scope, receive, send)

    await call(with_lifespan_state, "/ok", "/who?context=beta", "/who?malti_context=7")
    assert [r[5] for r in rows(system)] == [None, "beta", "7"]


def test_the_original_import_paths_exist():
    import malti_telemetry.core
    import malti_telemetry.middleware
    import malti_telemetry.utils

    import malti_sdk.core
    import malti_sdk.middleware
    import malti_sdk.utils

    for original, ours in [
        (malti_telemetry.core, malti_sdk.core),
        (malti_telemetry.middleware, malti_sdk.middleware),
        (malti_telemetry.utils, malti_sdk.utils),
    ]:
        public = {
            name
            for name, value in vars(original).items()
            if not name.startswith("_") and getattr(value, "__module__", None) == original.__name__
        }
        assert public and public <= set(dir(ours)), (original.__name__, public - set(dir(ours)))
    assert malti_sdk.utils.anonymize_ip("10.1.2.3") == "10.1.2.xxx"
    assert malti_sdk.utils.extract_ip_from_forwarded_for("203.0.113.7, 10.0.0.1") == "203.0.113.7"


async def test_hooks_delegating_to_super_returning_odd_values_or_skipping_our_init(system):
    from starlette.routing import Mount

    class Delegating(MaltiMiddleware):
        def _extract_route_pattern(self, request):
            return super()._extract_route_pattern(request)  # the full pattern, mount prefix included

        def _extract_consumer(self, request, use_ip_as_consumer=False, ip_anonymize=False):
            return 0  # not a string: recorded as "0", not as anonymous

        def _extract_context(self, request):
            return b"ctx"

    sub = make_app(system)
    sub.user_middleware.clear()
    sub.add_middleware(Delegating, telemetry_system=system)
    assert await call(Starlette(routes=[Mount("/api", app=sub)]), "/api/ok") == [200]
    assert [(r[1], r[4], r[5]) for r in rows(system)] == [("/api/ok", "0", "ctx")]

    class OriginalStyle(MaltiMiddleware):
        def __init__(self, app, auto_inject_lifespan=True):
            self.app = app  # what a subclass of the original might do: no super().__init__

        @property
        def telemetry_system(self):
            return system

        def _extract_consumer(self, request, use_ip_as_consumer=False, ip_anonymize=False):
            return "original-style"

    app = make_app(system)
    app.user_middleware.clear()
    app.add_middleware(OriginalStyle)
    assert await call(app, "/ok", "/status/201") == [200, 201]
    assert [(r[1], r[4]) for r in rows(system)[1:]] == [("/ok", "original-style"), ("/status/{code}", "original-style")]
