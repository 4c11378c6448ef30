"""API-key authentication: keys are found by their SHA-256 digest (no secret is compared with
``==``), service keys may only ingest, user keys may only read, and repeated failures from one
client address are rate limited."""

from __future__ import annotations

from starlette.requests import Request

from .config import Principal, Settings
from .errors import ApiError

AUTH_FAILURE_SCOPE = "auth-failure"


def client_ip(request: Request) -> str:
    # uvicorn has already applied X-Forwarded-For from trusted proxies (--forwarded-allow-ips).
    return request.client.host if request.client else "unknown"


def settings_of(request: Request) -> Settings:
    return request.app.state.settings.current


async def authenticate(request: Request) -> Principal:
    """The principal of the request's ``X-API-Key``, or 401 (429 after too many failures)."""
    settings = settings_of(request)
    limiter = request.app.state.limiter
    ip = client_ip(request)
    rate = settings.limits.auth_failure_rate
    if await limiter.exhausted(rate, AUTH_FAILURE_SCOPE, ip):
        wait = await limiter.retry_after(rate, AUTH_FAILURE_SCOPE, ip)
        raise ApiError(
            429,
            f"Too many failed authentication attempts from this address; retry in {wait} s",
            headers={"Retry-After": str(wait)},
        )
    key = request.headers.get("x-api-key")
    if not key:
        await limiter.hit(rate, AUTH_FAILURE_SCOPE, ip)
        raise ApiError(401, "Missing API key: send it in the X-API-Key header")
    principal = settings.lookup(key)
    if principal is None:
        await limiter.hit(rate, AUTH_FAILURE_SCOPE, ip)
        raise ApiError(401, "Invalid API key")
    return principal


async def require_service(request: Request) -> Principal:
    """A service key (ingest only)."""
    principal = await authenticate(request)
    if principal.kind != "service":
        raise ApiError(403, "This endpoint needs a service key; user keys may only read metrics")
    return principal


async def require_user(request: Request) -> Principal:
    """A user key (read only), within its metrics rate limit."""
    principal = await authenticate(request)
    if principal.kind != "user":
        raise ApiError(403, "This endpoint needs a user key; service keys may only ingest")
    settings = settings_of(request)
    await request.app.state.limiter.enforce(
        settings.limits.metrics_rate, "metrics", principal.name, "metrics queries"
    )
    return principal
