"""Import path of the original package's ``malti_telemetry.core``, for code that used it."""

from ._buffer import TelemetryBuffer
from ._records import TelemetryRecord
from ._sender import BatchSender
from ._telemetry import TelemetryCollector, TelemetrySystem, get_telemetry_system

__all__ = [
    "BatchSender",
    "TelemetryBuffer",
    "TelemetryCollector",
    "TelemetryRecord",
    "TelemetrySystem",
    "get_telemetry_system",
]
