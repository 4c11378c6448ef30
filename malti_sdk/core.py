"""Import path of the original package's ``malti_telemetry.core``, for code that used it.

``_telemetry_system`` is the process-wide system, as in the original: test suites reset it
with ``malti_sdk.core._telemetry_system = None``, and a middleware that was not given a system
follows the change.
"""

import sys
import types

from . import _telemetry
from ._buffer import TelemetryBuffer
from ._records import TelemetryRecord
from ._sender import BatchSender
from ._telemetry import TelemetryCollector, TelemetrySystem, get_telemetry_system

logger = _telemetry.logger

__all__ = [
    "BatchSender",
    "TelemetryBuffer",
    "TelemetryCollector",
    "TelemetryRecord",
    "TelemetrySystem",
    "get_telemetry_system",
]


class _CoreModule(types.ModuleType):
    @property
    def _telemetry_system(self) -> "TelemetrySystem | None":
        return _telemetry._system

    @_telemetry_system.setter
    def _telemetry_system(self, system: "TelemetrySystem | None") -> None:
        _telemetry.set_process_system(system)

    @_telemetry_system.deleter
    def _telemetry_system(self) -> None:  # what mock.patch does on exit: back to "made on next use"
        _telemetry.set_process_system(None)


sys.modules[__name__].__class__ = _CoreModule
