"""Malti in Jupyter: telemetry as pandas DataFrames, matplotlib plots and an ipywidgets dashboard.

::

    from malti_notebook import connect
    m = connect()                      # MALTI_URL / MALTI_USER_KEY
    m.timeseries(start="24h")          # DataFrame indexed by bucket (UTC)
    m.endpoints(service="auth-service").sort_values("p95_latency", ascending=False)
    m.dashboard()                      # live widget

Built only on :mod:`malti_sdk`'s query client; errors are :class:`malti_sdk.MaltiError` subclasses.
"""

from malti_sdk import (
    MaltiAPIError,
    MaltiAuthError,
    MaltiConnectionError,
    MaltiError,
    MaltiUsageError,
)

from ._connection import Malti, connect

__all__ = [
    "connect",
    "Malti",
    "MaltiDashboard",
    "MaltiError",
    "MaltiAPIError",
    "MaltiAuthError",
    "MaltiConnectionError",
    "MaltiUsageError",
]


def __getattr__(name: str):
    # ipywidgets is imported only when a dashboard is wanted
    if name == "MaltiDashboard":
        from ._dashboard import MaltiDashboard

        return MaltiDashboard
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
