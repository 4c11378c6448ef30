"""Errors of the metrics query client.

Callers catch the level they care about::

    MaltiError                       every error the query client raises
    ├── MaltiUsageError              a bad argument, detected before any request (also a ValueError)
    ├── MaltiConnectionError         the server could not be reached (refused, DNS, TLS, ...)
    │   └── MaltiTimeoutError        the server did not answer in time
    ├── MaltiResponseError           the server answered something that is not the documented JSON
    └── MaltiAPIError                the server answered with an error status (``status``, ``detail``, ``errors``)
        ├── MaltiAuthError           401 missing/unknown key, 403 key not allowed (service key, foreign service)
        ├── MaltiNotFoundError       404 (wrong URL, or a server without this endpoint)
        ├── MaltiValidationError     422 invalid query parameters; ``errors`` lists them
        ├── MaltiRateLimitError      429 too many requests; ``retry_after`` seconds
        └── MaltiServerError         5xx (503: database unavailable; ``retry_after`` seconds when given)
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "MaltiError",
    "MaltiUsageError",
    "MaltiConnectionError",
    "MaltiTimeoutError",
    "MaltiResponseError",
    "MaltiAPIError",
    "MaltiAuthError",
    "MaltiNotFoundError",
    "MaltiValidationError",
    "MaltiRateLimitError",
    "MaltiServerError",
]


class MaltiError(Exception):
    """Base class of every error raised by the Malti query client."""


class MaltiUsageError(MaltiError, ValueError):
    """An argument the client cannot send (an unparseable time, a bad limit, ...)."""


class MaltiConnectionError(MaltiError):
    """The Malti server could not be reached at ``url``."""

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class MaltiTimeoutError(MaltiConnectionError):
    """The Malti server did not answer within the client's timeout."""


class MaltiResponseError(MaltiError):
    """The server answered with a body that is not the JSON the API documents."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class MaltiAPIError(MaltiError):
    """The server answered with an error status.

    ``status`` is the HTTP status, ``detail`` the server's explanation and ``errors`` the
    per-field validation errors (``[{"index", "field", "error"}]``) when the server gave any.
    """

    def __init__(
        self,
        status: int,
        detail: str,
        errors: list[dict[str, Any]] | None = None,
        *,
        url: str | None = None,
    ) -> None:
        self.status = status
        self.detail = detail
        self.errors = list(errors) if errors else []
        self.url = url
        super().__init__(self._message())

    def _message(self) -> str:
        message = f"{self.status}: {self.detail}"
        if self.errors:
            fields = "; ".join(
                f"{error.get('field', '?')}: {error.get('error', '?')}"
                for error in self.errors
                if isinstance(error, dict)
            )
            if fields:
                message += f" ({fields})"
        return message


class MaltiAuthError(MaltiAPIError):
    """401: the key is missing or unknown; 403: the key may not do this (wrong key type, foreign service)."""


class MaltiNotFoundError(MaltiAPIError):
    """404: no such endpoint at this URL (check the server URL and version)."""


class MaltiValidationError(MaltiAPIError):
    """422: the server refused the query parameters; ``errors`` says which and why."""


class MaltiRateLimitError(MaltiAPIError):
    """429: too many requests; wait ``retry_after`` seconds (``None`` when the server did not say)."""

    def __init__(
        self,
        status: int,
        detail: str,
        errors: list[dict[str, Any]] | None = None,
        *,
        url: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(status, detail, errors, url=url)


class MaltiServerError(MaltiAPIError):
    """5xx: the server failed (503: its database is unavailable); ``retry_after`` seconds when given."""

    def __init__(
        self,
        status: int,
        detail: str,
        errors: list[dict[str, Any]] | None = None,
        *,
        url: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(status, detail, errors, url=url)
