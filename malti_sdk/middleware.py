"""Import path of the original package's ``malti_telemetry.middleware``, for code that used it."""

from ._middleware import MaltiMiddleware

__all__ = ["MaltiMiddleware"]
