"""API errors: one exception the handlers raise, turned into ``{"detail": ...}`` JSON by the app."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

RETRY_AFTER_UNAVAILABLE = "5"  # seconds a client should wait when the database is unreachable


class ApiError(Exception):
    """An error answer: HTTP status, a human-readable detail, optional per-field errors and headers."""

    def __init__(
        self,
        status: int,
        detail: str,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors
        self.headers = headers

    def response(self) -> JSONResponse:
        return api_error(self.status, self.detail, self.errors, self.headers)


def api_error(
    status: int,
    detail: str,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """JSON error response in the API's one format."""
    body: dict[str, Any] = {"detail": detail}
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, headers=headers)


def unavailable() -> ApiError:
    """503 for an unreachable database, with the Retry-After the SDK honours."""
    return ApiError(503, "Storage unavailable; retry later", headers={"Retry-After": RETRY_AFTER_UNAVAILABLE})
