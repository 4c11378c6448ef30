"""The Starlette application: routes, lifespan (pool, migrations, maintenance) and error handling."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from datetime import datetime, timezone
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from . import __version__, maintenance, metrics_api
from .auth import client_ip, require_user, settings_of
from .config import SettingsHolder, resolve_config_path
from .db import UNAVAILABLE_ERRORS, Partitions, create_pool, migrate, storage_kind
from .errors import ApiError, api_error, unavailable
from .ingest import ingest
from .openapi import DOCS_HTML, openapi_spec
from .pages import index_html
from .ratelimit import RateLimiter

log = logging.getLogger("malti.server")

HEALTH_TIMEOUT = 2.0
POOL_CLOSE_TIMEOUT = 10.0


async def health(request: Request) -> Response:
    state = request.app.state
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT):
            async with state.pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
    except (*UNAVAILABLE_ERRORS, TimeoutError) as exc:
        reason = str(exc) or type(exc).__name__
        return JSONResponse({"status": "unhealthy", "database": reason, "version": __version__}, status_code=503)
    return JSONResponse(
        {"status": "healthy", "database": "ok", "version": __version__, "storage": state.storage}
    )


async def index(request: Request) -> Response:
    return HTMLResponse(index_html(str(request.base_url).rstrip("/")))


async def openapi_json(request: Request) -> Response:
    return JSONResponse(openapi_spec())


async def docs(request: Request) -> Response:
    return HTMLResponse(DOCS_HTML)


async def auth_test(request: Request) -> Response:
    settings = settings_of(request)
    await request.app.state.limiter.enforce(
        settings.limits.auth_test_rate, "auth-test", client_ip(request), "authentication tests"
    )
    principal = await require_user(request)
    return JSONResponse(
        {
            "authenticated": True,
            "user": {
                "name": principal.name,
                "type": principal.kind,
                "permissions": ["metrics"],  # the original's field: user keys read metrics
                "services": sorted(principal.services) if principal.services is not None else None,
            },
            "thresholds": settings.thresholds.as_dict(),
            "timestamp": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
            "rate_limit_info": {
                "endpoint": "auth_test",
                "limit": settings.limits.auth_test_rate,
                "description": "Rate limited per client address to prevent abuse of authentication testing",
            },
        }
    )


async def _api_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return api_error(exc.status_code, str(exc.detail), headers=exc.headers)


async def _unavailable_handler(request: Request, exc: Exception) -> Response:
    return unavailable().response()


async def _unexpected_handler(request: Request, exc: Exception) -> Response:
    # Starlette's ServerErrorMiddleware logs the traceback after this answer is sent.
    return api_error(500, "Internal server error")


class ConfiguredCors:
    """CORS for the origins of ``[cors] allow_origins``, as the configuration file says now
    (it is reloaded while the server runs); no origins: requests pass untouched."""

    def __init__(self, app, holder: SettingsHolder) -> None:
        self.app = app
        self.holder = holder
        self._built: tuple[tuple[str, ...], CORSMiddleware] | None = None

    async def __call__(self, scope, receive, send) -> None:
        origins = self.holder.current.cors_origins if scope["type"] == "http" else ()
        if not origins:
            await self.app(scope, receive, send)
            return
        built = self._built
        if built is None or built[0] != origins:
            built = self._built = (origins, CORSMiddleware(
                self.app,
                allow_origins=list(origins),
                allow_methods=["GET", "POST"],
                allow_headers=["X-API-Key", "Content-Type", "Content-Encoding", "Idempotency-Key"],
                expose_headers=["Retry-After"],
                max_age=600,
            ))
        await built[1](scope, receive, send)


def create_app(
    config_path: str | Path | None = None,
    database_url: str | None = None,
    *,
    run_maintenance: bool = True,
    pool_size: int | None = None,
) -> Starlette:
    """Build the app. Arguments default to MALTI_CONFIG_PATH / DATABASE_URL (set by the CLI for workers)."""
    holder = SettingsHolder(resolve_config_path(str(config_path) if config_path else None))
    url = database_url or os.environ.get("DATABASE_URL")
    if not url:
        raise RuntimeError("no database: set DATABASE_URL or run through `malti-server`")
    size = pool_size or int(os.environ.get("MALTI_POOL_SIZE", "10"))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        app.state.pool = await create_pool(url, min_size=min(2, size), max_size=size)
        async with app.state.pool.acquire() as conn:
            await migrate(conn)
            app.state.storage = await storage_kind(conn)
        app.state.partitions = Partitions(enabled=app.state.storage == "postgresql")
        await maintenance.ensure_upcoming_partitions(app.state.pool, app.state.partitions)
        try:
            if run_maintenance:
                async with maintenance.running(app.state.pool, holder, app.state.partitions, app.state.storage):
                    yield
            else:
                yield
        finally:
            try:
                await asyncio.wait_for(app.state.pool.close(), POOL_CLOSE_TIMEOUT)
            except TimeoutError:  # a database gone mid-shutdown must not hold the process
                app.state.pool.terminate()

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        Route("/api/v1/ingest", ingest, methods=["POST"]),
        Route("/api/v1/auth/test", auth_test, methods=["GET"]),
        *metrics_api.routes,
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(ConfiguredCors, holder=holder)],
        lifespan=lifespan,
        exception_handlers={
            ApiError: _api_error_handler,
            HTTPException: _http_error_handler,
            **{cls: _unavailable_handler for cls in UNAVAILABLE_ERRORS},
            Exception: _unexpected_handler,
        },
    )
    app.state.settings = holder
    app.state.limiter = RateLimiter(holder.current.limits.storage_uri)
    app.state.storage = "unknown"
    return app
