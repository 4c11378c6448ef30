"""Import path of the original package's ``malti_telemetry.middleware``, for code that used it.

A middleware that was not given a system finds the process-wide one through this module's
``get_telemetry_system`` when it first records, so a test that patches
``malti_sdk.middleware.get_telemetry_system`` before the app's first request is heard.
"""

from starlette.requests import Request
from starlette.routing import Router
from starlette.types import ASGIApp

from ._consumer import anonymize_ip, extract_ip_from_forwarded_for
from ._middleware import MaltiMiddleware, logger
from ._telemetry import get_telemetry_system

__all__ = ["MaltiMiddleware"]
