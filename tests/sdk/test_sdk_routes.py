"""Route patterns: the full declared pattern, every Mount / router prefix included, never a raw path."""

from __future__ import annotations

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Host, Mount, Route
from starlette.staticfiles import StaticFiles

from malti_sdk import MaltiMiddleware
from sdk_support import call

# every test runs on the compiled request path and on the pure-Python one
pytestmark = pytest.mark.usefixtures("request_path")


async def ok(request):
    return PlainTextResponse("ok")


def endpoints(system) -> list[str]:
    return [row[1] for row in system.batch_sender.buffer.rows]


@pytest.fixture
def system(make_system):
    # a sender that never needs to run: nothing listens on port 9
    return make_system(malti_url="http://127.0.0.1:9", batch_interval=3600, clean_mode=False, shutdown_timeout=0)


def instrument(app, system):
    app.add_middleware(MaltiMiddleware, telemetry_system=system)
    return app


async def test_plain_route_records_its_pattern(system):
    app = instrument(Starlette(routes=[Route("/users/{user_id}", ok)]), system)
    assert await call(app, "/users/42", "/users/43") == [200, 200]
    assert endpoints(system) == ["/users/{user_id}", "/users/{user_id}"]


async def test_mount_prefix_is_part_of_the_pattern(system):
    app = instrument(Starlette(routes=[Mount("/api/v2", routes=[Route("/posts/{post_id}", ok)])]), system)
    await call(app, "/api/v2/posts/7")
    assert endpoints(system) == ["/api/v2/posts/{post_id}"]


async def test_nested_mounts_with_parameters(system):
    inner = [Route("/posts/{post_id}", ok)]
    app = instrument(Starlette(routes=[Mount("/org/{org}", routes=[Mount("/team/{team}", routes=inner)])]), system)
    await call(app, "/org/acme/team/red/posts/9")
    assert endpoints(system) == ["/org/{org}/team/{team}/posts/{post_id}"]


async def test_one_router_mounted_twice_keeps_each_prefix(system):
    shared = [Route("/items/{item_id}", ok)]
    app = instrument(Starlette(routes=[Mount("/v1", routes=shared), Mount("/v2", routes=shared)]), system)
    await call(app, "/v2/items/1", "/v1/items/2", "/v2/items/3")
    assert endpoints(system) == ["/v2/items/{item_id}", "/v1/items/{item_id}", "/v2/items/{item_id}"]


async def test_fastapi_router_prefixes(system):
    app = FastAPI()
    items = APIRouter(prefix="/items")

    @items.get("/{item_id}")
    def get_item(item_id: int):
        return {"id": item_id}

    nested = APIRouter()
    nested.include_router(items, prefix="/nested")
    app.include_router(items, prefix="/v1")
    app.include_router(items, prefix="/v2")
    app.include_router(nested, prefix="/n")
    instrument(app, system)
    assert await call(app, "/v1/items/1", "/v2/items/2", "/n/nested/items/3") == [200, 200, 200]
    assert endpoints(system) == ["/v1/items/{item_id}", "/v2/items/{item_id}", "/n/nested/items/{item_id}"]


async def test_fastapi_sub_application_under_a_mount(system):
    sub = FastAPI()

    @sub.get("/orders/{order_id}")
    def order(order_id: int):
        return {"id": order_id}

    app = instrument(Starlette(routes=[Mount("/shop", app=sub)]), system)
    assert await call(app, "/shop/orders/5") == [200]
    assert endpoints(system) == ["/shop/orders/{order_id}"]


async def test_middleware_on_a_fastapi_app_with_a_mounted_starlette_app(system):
    app = FastAPI()
    app.mount("/legacy", Starlette(routes=[Route("/things/{thing}", ok)]))
    instrument(app, system)
    await call(app, "/legacy/things/x")
    assert endpoints(system) == ["/legacy/things/{thing}"]


async def test_opaque_mounted_app_records_the_mount(system, tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    app = instrument(Starlette(routes=[Mount("/static", app=StaticFiles(directory=tmp_path))]), system)
    assert await call(app, "/static/a.txt") == [200]
    assert endpoints(system) == ["/static/{path}"]


async def test_host_routes(system):
    app = instrument(Starlette(routes=[Host("api.example.com", app=Starlette(routes=[Route("/ping", ok)]))]), system)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.example.com") as client:
        assert (await client.get("/ping")).status_code == 200
    assert endpoints(system) == ["/ping"]


async def test_unmatched_paths_never_record_the_raw_path(system):
    app = instrument(Starlette(routes=[Mount("/api", routes=[Route("/known", ok)])]), system)
    assert await call(app, "/secret/user@example.com", "/api/unknown/123") == [404, 404]
    assert endpoints(system) == ["<unmatched>", "<unmatched>"]


async def test_wrong_method_records_the_route(system):
    app = instrument(Starlette(routes=[Route("/only-get/{x}", ok, methods=["GET"])]), system)
    assert await call(app, "/only-get/1", method="POST") == [405]
    assert endpoints(system) == ["/only-get/{x}"]


async def test_routes_added_after_the_first_request_are_found(system):
    app = instrument(Starlette(routes=[Route("/a", ok)]), system)
    await call(app, "/a")
    app.router.routes.append(Route("/late/{n}", ok))
    import malti_sdk._routes as routes_module

    routes_module._REBUILD_EVERY, saved = 0.0, routes_module._REBUILD_EVERY
    try:
        await call(app, "/late/1")
    finally:
        routes_module._REBUILD_EVERY = saved
    assert endpoints(system) == ["/a", "/late/{n}"]


async def test_any_asgi_app_without_routes(system):
    async def raw_app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"hi"})

    app = MaltiMiddleware(raw_app, telemetry_system=system)
    assert await call(app, "/anything/123") == [200]
    assert endpoints(system) == ["<unmatched>"]


def forget_route(app):
    """An inner ASGI layer that removes scope["route"] after the app ran, as Starlette < 1.0 never set it."""

    async def wrapper(scope, receive, send):
        await app(scope, receive, send)
        scope.pop("route", None)

    wrapper.app = app  # found through .app like any middleware
    return wrapper


async def test_patterns_without_scope_route_come_from_the_endpoint(system):
    shared = [Route("/items/{item_id}", ok)]
    starlette_app = Starlette(
        routes=[
            Route("/users/{user_id}", ok),
            Mount("/api/v2", routes=[Route("/posts/{post_id}", ok)]),
            Mount("/v1", routes=shared),
            Mount("/v2", routes=shared),
        ]
    )
    app = MaltiMiddleware(forget_route(starlette_app), telemetry_system=system)
    assert await call(app, "/users/1", "/api/v2/posts/2", "/v2/items/3", "/v1/items/4", "/api/v2/nope") == [
        200,
        200,
        200,
        200,
        404,
    ]
    assert endpoints(system) == [
        "/users/{user_id}",
        "/api/v2/posts/{post_id}",
        "/v2/items/{item_id}",
        "/v1/items/{item_id}",
        "<unmatched>",
    ]
