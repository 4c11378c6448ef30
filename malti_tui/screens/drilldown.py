"""The detail view of one endpoint or consumer: its cards, latency chart,
status codes and recent requests. Escape goes back."""

from __future__ import annotations

from dataclasses import replace

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Footer

from ..bindings import DRILLDOWN_BINDINGS
from ..data import Dashboard, DataSource, Query
from ..formatting import clean, safe_text
from ..messages import DrillDown
from ..widgets.cards import MetricCards
from ..widgets.charts import LatencyChart
from ..widgets.header import Banner, FilterBar, TopBar
from ..widgets.request_log import RequestLog
from ..widgets.status_breakdown import StatusBreakdown, merge_breakdowns
from .live import LiveScreen


class DrilldownScreen(LiveScreen):
    """Everything about one endpoint or one consumer."""

    BINDINGS = DRILLDOWN_BINDINGS

    def __init__(self, source: DataSource, query: Query, target: DrillDown, **kwargs) -> None:
        super().__init__(source, query, **kwargs)
        self.target = target

    @classmethod
    def for_target(cls, source: DataSource, query: Query, target: DrillDown) -> "DrilldownScreen":
        """The detail screen of ``target`` within ``query``'s range and filters."""
        filters = query.filters
        if target.kind == "endpoint":
            filters = filters.with_value("endpoint", target.value)
            if target.method:
                filters = filters.with_value("method", target.method)
            if target.service and not filters.service:
                filters = filters.with_value("service", target.service)
        else:
            filters = filters.with_value("consumer", target.value)
        return cls(source, replace(query, filters=filters), target)

    def title_text(self) -> Text:
        """``Endpoint GET /users/{id}`` or ``Consumer web-app``, literally."""
        text = Text(no_wrap=True)
        if self.target.kind == "endpoint":
            text.append("Endpoint ", style="dim")
            if self.target.method:
                text.append(clean(self.target.method, 10) + " ", style="bold")
            text.append_text(safe_text(self.target.value, style="bold", max_length=80))
        else:
            text.append("Consumer ", style="dim")
            text.append_text(safe_text(self.target.value, style="bold", max_length=80, empty="(none)"))
        return text

    def compose(self) -> ComposeResult:
        yield TopBar(self.query_state.time_range.name, title="◂ Malti")
        yield FilterBar(id="filter-bar")
        yield Banner(id="banner")
        yield MetricCards(id="cards")
        with Horizontal(id="detail-charts"):
            yield LatencyChart(id="detail-latency")
            yield StatusBreakdown(id="detail-status")
        yield RequestLog(id="detail-log")
        yield Footer()

    def show_filters(self) -> None:
        # The target's own filters are in the title; show only the inherited ones.
        filters = self.query_state.filters
        if self.target.kind == "endpoint":
            filters = filters.with_value("endpoint", None).with_value("method", None)
        else:
            filters = filters.with_value("consumer", None)
        self.query_one(FilterBar).set_filters(filters, prefix=self.title_text())

    def show_dashboard(self, dashboard: Dashboard) -> None:
        super().show_dashboard(dashboard)
        self.query_one(LatencyChart).set_series(dashboard.time_series)
        self.query_one(StatusBreakdown).set_counts(merge_breakdowns(dashboard.status_distribution))

    def show_unavailable(self, reason: str) -> None:
        super().show_unavailable(reason)
        self.query_one(LatencyChart).show_unavailable(reason)
        self.query_one(StatusBreakdown).show_unavailable(reason)

    def log_visible(self) -> bool:
        return True

    def action_close(self) -> None:
        """Back to the dashboard."""
        self.app.pop_screen()
