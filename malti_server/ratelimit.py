"""Rate limits on top of the ``limits`` library: moving windows kept in memory by default, or in
Redis (``limits.storage_uri = "redis://..."``) so several server hosts share one budget."""

from __future__ import annotations

import logging
import math
import time
from functools import lru_cache

from limits import RateLimitItem, parse
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from .errors import ApiError

log = logging.getLogger("malti.ratelimit")


@lru_cache(maxsize=64)
def _item(rate: str) -> RateLimitItem:
    return parse(rate.replace(" per ", "/"))


def _async_uri(uri: str) -> str:
    return uri if uri.startswith("async+") else f"async+{uri}"


def _storage_options(uri: str) -> dict[str, str]:
    # limits defaults to the coredis client for Redis; we ship the common redis-py one ([redis] extra).
    bare = uri.removeprefix("async+")
    return {"implementation": "redispy"} if bare.startswith(("redis://", "rediss://", "redis+unix://")) else {}


class RateLimiter:
    """Named budgets (``"ingest"``, ``"auth-fail"`` ...) per identifier, with Retry-After hints."""

    def __init__(self, storage_uri: str = "memory://") -> None:
        self.storage_uri = storage_uri
        self._storage = storage_from_string(_async_uri(storage_uri), **_storage_options(storage_uri))
        self._limiter = MovingWindowRateLimiter(self._storage)
        self._last_warning = -1e9

    async def hit(self, rate: str, scope: str, identifier: str) -> bool:
        """Count one event; False when the budget is exhausted (the event is not counted then)."""
        try:
            return await self._limiter.hit(_item(rate), scope, identifier)
        except Exception as exc:  # storage (Redis) down: fail open, telemetry must keep flowing
            self._storage_failed(exc)
            return True

    async def exhausted(self, rate: str, scope: str, identifier: str) -> bool:
        """True when no budget is left, without counting an event."""
        try:
            return not await self._limiter.test(_item(rate), scope, identifier)
        except Exception as exc:
            self._storage_failed(exc)
            return False

    def _storage_failed(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._last_warning > 60:
            self._last_warning = now
            log.warning("rate-limit storage %s unavailable, not limiting: %s", self.storage_uri, exc)

    async def retry_after(self, rate: str, scope: str, identifier: str) -> int:
        try:
            stats = await self._limiter.get_window_stats(_item(rate), scope, identifier)
        except Exception:
            return 1
        return max(1, math.ceil(stats.reset_time - time.time()))

    async def enforce(self, rate: str, scope: str, identifier: str, what: str) -> None:
        """Count one event or raise 429 with Retry-After."""
        if not await self.hit(rate, scope, identifier):
            wait = await self.retry_after(rate, scope, identifier)
            raise ApiError(
                429,
                f"Rate limit exceeded for {what} ({rate}); retry in {wait} s",
                headers={"Retry-After": str(wait)},
            )

    async def check_storage(self) -> bool:
        return bool(await self._storage.check())
