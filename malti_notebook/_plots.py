"""Matplotlib charts of a time-series DataFrame (see ``_frames.timeseries_frame``).

Figures are built with the object API, never through pyplot's global state, so the dashboard
can draw them from a refresh thread and a script's open windows are left alone. They are
:class:`NotebookFigure` objects: ordinary ``matplotlib.figure.Figure`` instances that Jupyter
also shows as a PNG when no inline backend has registered itself yet.
"""

from __future__ import annotations

import io

import matplotlib.dates as mdates
import pandas as pd
from matplotlib.figure import Figure

DEFAULT_SIZE = (9.0, 3.2)
LATENCY_LINES = [  # column, label, style
    ("p50_latency", "p50", {"color": "#2b8cbe", "linewidth": 1.4}),
    ("p95_latency", "p95", {"color": "#f0a030", "linewidth": 1.4}),
    ("p99_latency", "p99", {"color": "#d7301f", "linewidth": 1.2}),
    ("avg_latency", "avg", {"color": "#777777", "linewidth": 1.0, "linestyle": "--"}),
]


class NotebookFigure(Figure):
    """A matplotlib ``Figure`` that Jupyter displays as a PNG when it is a cell's result."""

    def _repr_png_(self) -> bytes:
        return png_bytes(self, dpi=100)


def _new_figure(figsize: tuple[float, float] | None) -> tuple[Figure, object]:
    width, height = figsize or DEFAULT_SIZE
    figure = NotebookFigure(figsize=(width, height))
    # Fixed margins in inches instead of a layout engine: constrained layout doubles the
    # drawing time, which the dashboard pays twice per refresh.
    figure.subplots_adjust(left=0.75 / width, right=1 - 0.4 / width, bottom=0.62 / height, top=1 - 0.32 / height)
    return figure, figure.add_subplot()


def _time_axis(axes, frame: pd.DataFrame) -> None:
    locator = mdates.AutoDateLocator()
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz="UTC"))
    axes.grid(True, alpha=0.25)
    if len(frame.index):
        axes.set_xlim(frame.index[0].to_pydatetime(), frame.index[-1].to_pydatetime())
    axes.set_xlabel("time (UTC)")


def _no_data(axes) -> None:
    axes.text(0.5, 0.5, "no requests in this range", ha="center", va="center", transform=axes.transAxes, alpha=0.6)


def latency_figure(frame: pd.DataFrame, title: str | None = None, figsize: tuple[float, float] | None = None) -> Figure:
    """p50/p95/p99 (and average) latency of 2xx responses per bucket, in ms."""
    figure, axes = _new_figure(figsize)
    drawn = False
    times = frame.index.to_pydatetime() if len(frame.index) else []
    for column, label, style in LATENCY_LINES:
        if column in frame and frame[column].notna().any():
            axes.plot(times, frame[column].to_numpy(), label=label, marker="." if len(frame) < 40 else None, **style)
            drawn = True
    if drawn:
        axes.legend(loc="upper left", fontsize="small", ncols=4)
        axes.set_ylim(bottom=0)
    else:
        _no_data(axes)
    axes.set_ylabel("latency (ms)")
    axes.set_title(title or "Latency (2xx responses)", loc="left", fontsize="medium")
    _time_axis(axes, frame)
    return figure


def requests_figure(frame: pd.DataFrame, title: str | None = None, figsize: tuple[float, float] | None = None) -> Figure:
    """Requests and errors per bucket."""
    figure, axes = _new_figure(figsize)
    times = frame.index.to_pydatetime() if len(frame.index) else []
    if len(frame) and frame["total_requests"].sum() > 0:
        axes.fill_between(times, frame["total_requests"].to_numpy(), step="mid", color="#2b8cbe", alpha=0.35,
                          label="requests")  # fmt: skip
        axes.step(times, frame["total_requests"].to_numpy(), where="mid", color="#2b8cbe", linewidth=1.0)
        axes.fill_between(times, frame["error_count"].to_numpy(), step="mid", color="#d7301f", alpha=0.6,
                          label="errors")  # fmt: skip
        axes.legend(loc="upper left", fontsize="small", ncols=2)
        axes.set_ylim(bottom=0)
    else:
        _no_data(axes)
    resolution = frame.attrs.get("resolution")
    axes.set_ylabel(f"requests per {resolution}" if resolution else "requests")
    axes.set_title(title or "Requests and errors", loc="left", fontsize="medium")
    _time_axis(axes, frame)
    return figure


def png_bytes(figure: Figure, dpi: int = 90) -> bytes:
    """The figure as PNG bytes (for an ``ipywidgets.Image``)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
