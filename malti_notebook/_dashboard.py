"""The ipywidgets dashboard returned by ``Malti.dashboard()``.

Widgets only: dropdown filters filled from ``/metrics/dimensions``, range toggle buttons,
metric cards, latency and request charts (matplotlib rendered to PNG ``Image`` widgets, so
it works in JupyterLab, the classic notebook and VS Code without a matplotlib widget
backend), and the top-endpoints table. Every change re-queries; auto-refresh runs in a
daemon thread (ipykernel sends widget updates from any thread). Errors show in the status
line; they are never raised into the widget's event handlers.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from malti_sdk import Dashboard, Dimensions, MaltiError, MaltiUsageError

from . import _frames, _html, _plots

if TYPE_CHECKING:
    from ._connection import Malti

# range button → (start, interval): 1 h in 1-minute buckets, up to 4 days in 5-minute ones, then hourly.
RANGES: dict[str, tuple[str, str | None]] = {
    "1h": ("1h", "1min"),
    "6h": ("6h", "5min"),
    "24h": ("24h", "5min"),
    "7d": ("7d", "1hour"),
    "30d": ("30d", "1hour"),
    "90d": ("90d", "1hour"),
    "1y": ("365d", "1hour"),
}
FILTER_NAMES = ("service", "node", "method", "endpoint", "consumer", "context")
ALL = "All"
CHART_SIZE = (5.6, 2.8)
MIN_REFRESH_SECONDS = 2.0


class MaltiDashboard(widgets.VBox):
    """A live dashboard widget. Drive it from Python as well as by clicking::

        dash = m.dashboard()
        dash.select(service="auth-service")               # re-queries (any value, seen or not)
        dash.filters["node"].value = "node-1"             # a dropdown takes one of its options
        dash.range_buttons.value = "7d"                   # re-queries
        dash.auto_refresh.value = True                    # refresh every ``refresh_seconds``
    """

    def __init__(
        self,
        malti: Malti,
        *,
        range: str = "24h",
        auto_refresh: bool = False,
        refresh_seconds: float = 30.0,
        **filters: str | None,
    ) -> None:
        self._timer: threading.Thread | None = None
        self._stop = threading.Event()  # the running auto-refresh loop's (each loop has its own)
        if range not in RANGES:
            raise MaltiUsageError(f"range must be one of {', '.join(RANGES)}, not {range!r}")
        self._malti = malti
        self._lock = threading.RLock()
        # the thread rewriting options or values (its own changes must not re-query); a user's
        # change on another thread meanwhile (auto-refresh refills options) still counts
        self._quiet: int | None = None
        self._options_stale = True  # the dropdowns have not been filled from the server yet
        self.refresh_seconds = max(float(refresh_seconds), MIN_REFRESH_SECONDS)
        self.last_dashboard: Dashboard | None = None
        self.last_query: dict[str, Any] | None = None
        self.last_error: Exception | None = None
        self.refresh_count = 0

        self.title_html = widgets.HTML(_title_html(malti.url))
        self.status = widgets.HTML(_html.status_html("loading…"))
        self.filters: dict[str, widgets.Dropdown] = {
            name: widgets.Dropdown(
                description=name,
                options=[(ALL, None)] + ([(filters[name], filters[name])] if filters.get(name) else []),
                value=filters.get(name) or None,
                layout=widgets.Layout(width="250px"),
                style={"description_width": "70px"},
            )
            for name in FILTER_NAMES
        }
        self.range_buttons = widgets.ToggleButtons(
            options=list(RANGES), value=range, style={"button_width": "48px"}, tooltips=[f"last {r}" for r in RANGES]
        )
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh", layout=widgets.Layout(width="100px"))
        self.auto_refresh = widgets.Checkbox(value=False, description=f"auto-refresh ({self.refresh_seconds:g}s)",
                                             indent=False)  # fmt: skip
        self.cards = widgets.HTML()
        self.latency_chart = widgets.Image(format="png")
        self.requests_chart = widgets.Image(format="png")
        self.endpoints_table = widgets.HTML()

        filter_boxes = list(self.filters.values())
        super().__init__(
            children=[
                widgets.HBox([self.title_html, self.status], layout=widgets.Layout(justify_content="space-between")),
                widgets.HBox(filter_boxes[:3]),
                widgets.HBox(filter_boxes[3:]),
                widgets.HBox([self.range_buttons, self.refresh_button, self.auto_refresh],
                             layout=widgets.Layout(align_items="center")),  # fmt: skip
                self.cards,
                widgets.HBox([self.requests_chart, self.latency_chart]),
                self.endpoints_table,
            ]
        )

        for name, dropdown in self.filters.items():
            dropdown.observe(self._on_filter_change(name), names="value")
        self.range_buttons.observe(self._on_range_change, names="value")
        self.refresh_button.on_click(lambda _button: (self.reload_options(), self.refresh()))
        self.auto_refresh.observe(self._on_auto_refresh, names="value")

        self.reload_options()
        self.refresh()
        if auto_refresh:
            self.auto_refresh.value = True

    # --- queries -----------------------------------------------------------------------------

    def query(self) -> dict[str, Any]:
        """The client arguments the current widget state asks for."""
        start, interval = RANGES[self.range_buttons.value]
        query: dict[str, Any] = {"start_time": start, "interval": interval}
        for name, dropdown in self.filters.items():
            if dropdown.value is not None:
                query[name] = dropdown.value
        return query

    def refresh(self) -> None:
        """Re-query the server and redraw cards, charts and table (errors go to the status line)."""
        with self._lock:
            query = self.query()
            started = time.perf_counter()
            try:
                dashboard = self._malti.client.aggregate(**query)
                thresholds = self._malti.thresholds()
                frame = _frames.timeseries_frame(dashboard.time_series, dashboard)
                self.cards.value = _html.cards_html(dashboard.metrics_summary, thresholds)
                self.requests_chart.value = _plots.png_bytes(_plots.requests_figure(frame, figsize=CHART_SIZE))
                self.latency_chart.value = _plots.png_bytes(_plots.latency_figure(frame, figsize=CHART_SIZE))
                self.endpoints_table.value = _html.endpoints_html(dashboard.endpoints)
            except Exception as error:  # noqa: BLE001  shown to the user, never raised into the widget loop
                self.last_error = error
                message = _describe(error)
                if query != self.last_query:  # never show the previous selection's figures as this one's
                    self._clear()
                    message += " (nothing shown for this selection yet)"
                self.status.value = _html.status_html(message, error=True)
                return
            self.last_dashboard = dashboard
            self.last_query = query
            self.last_error = None
            self.refresh_count += 1
            elapsed = (time.perf_counter() - started) * 1000
            now = datetime.now(timezone.utc).strftime("%H:%M:%S")
            self.status.value = _html.status_html(
                f"updated {now} UTC · {dashboard.resolution or '?'} buckets · {elapsed:.0f} ms"
            )
            if self._options_stale:  # the server was unreachable when the dropdowns were filled
                self.reload_options(report=False)  # a failure here leaves the good refresh's status

    def _clear(self) -> None:
        self.last_dashboard = None
        self.last_query = None
        self.cards.value = ""
        self.requests_chart.value = b""
        self.latency_chart.value = b""
        self.endpoints_table.value = ""

    def select(self, **filters: str | None) -> None:
        """Set filters (``service=``, ``node=``, ...; None: all) and re-query once. Unlike
        assigning a dropdown's ``value``, a value not seen in the range is accepted."""
        unknown = sorted(set(filters) - set(self.filters))
        if unknown:
            raise MaltiUsageError(f"unknown filter {unknown[0]!r}: use {', '.join(self.filters)}")
        self._quiet = threading.get_ident()
        try:
            for name, value in filters.items():
                dropdown = self.filters[name]
                if value is not None and value not in [v for _label, v in dropdown.options]:
                    dropdown.options = [*dropdown.options, (value, value)]
                dropdown.value = value
        finally:
            self._quiet = None
        self.reload_options()
        self.refresh()

    def reload_options(self, report: bool = True) -> None:
        """Fill the dropdowns with the values seen in the selected range (and service); a
        failure shows in the status line (``report``) and is tried again after the next refresh."""
        start, _interval = RANGES[self.range_buttons.value]
        try:
            dimensions = self._malti.client.dimensions(service=self.filters["service"].value, start_time=start)
        except Exception as error:  # noqa: BLE001
            self._options_stale = True
            if report:
                self.last_error = error
                self.status.value = _html.status_html(_describe(error), error=True)
            return
        self._options_stale = False
        if self.filters["service"].value is not None:
            # the other services stay selectable even while one is chosen
            try:
                dimensions_all = self._malti.client.dimensions(start_time=start)
                services = dimensions_all.services
            except MaltiError:
                services = dimensions.services
        else:
            services = dimensions.services
        self._set_options(dimensions, services)

    def _set_options(self, dimensions: Dimensions, services: list[str]) -> None:
        values = {
            "service": services,
            "node": dimensions.nodes,
            "method": dimensions.methods,
            "endpoint": sorted({item.endpoint for item in dimensions.endpoints}),
            "consumer": dimensions.consumers,
            "context": dimensions.contexts,
        }
        self._quiet = threading.get_ident()
        try:
            for name, dropdown in self.filters.items():
                current = dropdown.value
                choices = list(dict.fromkeys(values[name]))
                if current is not None and current not in choices:
                    choices.insert(0, current)  # keep the user's choice even if the range has no data for it
                dropdown.options = [(ALL, None)] + [(value, value) for value in choices]
                dropdown.value = current
        finally:
            self._quiet = None

    # --- events ------------------------------------------------------------------------------

    def _on_filter_change(self, name: str):
        def handler(change: dict[str, Any]) -> None:
            if self._quiet == threading.get_ident():
                return
            if name == "service":
                self.reload_options()
            self.refresh()

        return handler

    def _on_range_change(self, change: dict[str, Any]) -> None:
        if self._quiet == threading.get_ident():
            return
        self.reload_options()
        self.refresh()

    def _on_auto_refresh(self, change: dict[str, Any]) -> None:
        if change["new"]:
            self.start_auto_refresh()
        else:
            self.stop_auto_refresh()

    # --- auto-refresh ------------------------------------------------------------------------

    def start_auto_refresh(self) -> None:
        """Refresh every ``refresh_seconds`` until stopped (or the widget is closed)."""
        if self._timer is not None and self._timer.is_alive() and not self._stop.is_set():
            return
        # A new loop with its own event: one that was stopped but is still finishing a refresh
        # ends on its own (set) event instead of swallowing this start.
        self._stop = stop = threading.Event()
        self._timer = threading.Thread(target=self._auto_loop, args=(stop,), name="malti-dashboard-refresh", daemon=True)
        self._timer.start()
        if not self.auto_refresh.value:
            self.auto_refresh.value = True

    def stop_auto_refresh(self) -> None:
        """Stop the periodic refresh."""
        self._stop.set()
        if self.auto_refresh.value:
            self.auto_refresh.value = False

    def _auto_loop(self, stop: threading.Event) -> None:
        while not stop.wait(self.refresh_seconds):
            self.refresh()

    def close(self) -> None:
        """Stop auto-refresh and close the widgets."""
        self._stop.set()
        if "status" in self.__dict__:  # fully built (a bad argument stops __init__ before the widgets)
            for child in (*self.filters.values(), self.range_buttons, self.refresh_button, self.auto_refresh,
                          self.cards, self.latency_chart, self.requests_chart, self.endpoints_table,
                          self.title_html, self.status):  # fmt: skip
                child.close()
        super().close()


def _title_html(url: str) -> str:
    import html

    return f"<b>Malti</b> <span style='opacity:0.6'>{html.escape(url)}</span>"


def _describe(error: Exception) -> str:
    if isinstance(error, MaltiError):
        return f"{type(error).__name__}: {error}"
    return f"unexpected {type(error).__name__}: {error}"
