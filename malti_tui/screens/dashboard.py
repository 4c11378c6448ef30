"""The main screen: cards, charts, top endpoints, consumers, status codes and
the live request log, for a time range and filters."""

from __future__ import annotations

from functools import partial

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Footer, TabbedContent, TabPane

from ..bindings import DASHBOARD_BINDINGS
from ..data import FILTER_NAMES, Dashboard, DataError, Dimensions, Query
from ..formatting import clean, safe_text
from ..messages import DrillDown
from ..widgets.cards import MetricCards
from ..widgets.charts import ConsumersChart, LatencyChart, RequestsChart
from ..widgets.empty_state import EmptyState
from ..widgets.header import Banner, FilterBar, TopBar
from ..widgets.request_log import RequestLog
from ..widgets.tables import ConsumersTable, EndpointsTable, StatusTable
from .live import LiveScreen
from .picker import Choice, Picked, PickerScreen

TABS: tuple[tuple[str, str], ...] = (
    ("overview", "Overview"),
    ("endpoints", "Endpoints"),
    ("consumers", "Consumers"),
    ("status", "Status codes"),
    ("log", "Requests"),
)

ALL = object()
"""Picker value meaning "no filter"."""


class DashboardScreen(LiveScreen):
    """Everything the server knows about the chosen range, at a glance."""

    BINDINGS = DASHBOARD_BINDINGS

    def compose(self) -> ComposeResult:
        yield TopBar(self.query_state.time_range.name)
        yield FilterBar(id="filter-bar")
        yield Banner(id="banner")
        yield MetricCards(id="cards")
        with TabbedContent(id="tabs", initial="overview"):
            with TabPane("Overview", id="overview"):
                with Horizontal(id="charts"):
                    yield LatencyChart(id="latency-chart")
                    yield RequestsChart(id="requests-chart")
                yield EndpointsTable(id="overview-endpoints")
                yield EmptyState(id="empty-state")
            with TabPane("Endpoints", id="endpoints"):
                yield EndpointsTable(id="endpoints-table")
            with TabPane("Consumers", id="consumers"):
                with Horizontal(id="consumers-area"):
                    yield ConsumersChart(id="consumers-chart")
                    yield ConsumersTable(id="consumers-table")
            with TabPane("Status codes", id="status"):
                yield StatusTable(id="status-table")
            with TabPane("Requests", id="log"):
                yield RequestLog(id="request-log")
        yield Footer()

    # ------------------------------------------------------------------ showing data

    def show_dashboard(self, dashboard: Dashboard) -> None:
        super().show_dashboard(dashboard)
        self.set_class(dashboard.is_empty, "-empty")
        # Cards first: tables and charts take longer to build, so they follow on
        # the next frame and the numbers are on screen as early as possible.
        self.call_after_refresh(self._show_details, dashboard)

    def _show_details(self, dashboard: Dashboard) -> None:
        if dashboard is not self.dashboard:
            return  # a newer load already replaced it
        thresholds = self.thresholds
        for table in self.query(EndpointsTable):
            table.set_records(dashboard.endpoints, thresholds)
        self.query_one(ConsumersTable).set_records(dashboard.consumers, thresholds)
        self.query_one(StatusTable).set_records(dashboard.status_distribution, thresholds)
        self.query_one(LatencyChart).set_series(dashboard.time_series)
        self.query_one(RequestsChart).set_series(dashboard.time_series)
        self.query_one(ConsumersChart).set_consumers(dashboard.consumers)

    def show_unavailable(self, reason: str) -> None:
        super().show_unavailable(reason)
        self.set_class(False, "-empty")  # not "no requests": we do not know
        for table in self.query(EndpointsTable):
            table.set_records(())
        self.query_one(ConsumersTable).set_records(())
        self.query_one(StatusTable).set_records(())
        for chart in (self.query_one(LatencyChart), self.query_one(RequestsChart), self.query_one(ConsumersChart)):
            chart.show_unavailable(reason)

    def log_visible(self) -> bool:
        return self.query_one(TabbedContent).active == "log"

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id == "log":
            self._poll_log()

    def action_show_tab(self, tab: str) -> None:
        """Switch to view ``tab``."""
        self.query_one(TabbedContent).active = tab
        pane = self.query_one(f"#{tab}", TabPane)
        focusable = [w for w in pane.query("DataTable") if w.display]
        if focusable:
            focusable[0].focus()

    # ------------------------------------------------------------------ filters

    def set_filter(self, name: str, value: str | None) -> None:
        """Set filter ``name`` to ``value`` (``None`` clears it) and reload."""
        from dataclasses import replace

        self.set_query(replace(self.query_state, filters=self.query_state.filters.with_value(name, value)))

    def action_clear_filters(self) -> None:
        """Drop every filter."""
        from dataclasses import replace

        from ..data import Filters

        if self.query_state.filters.active():
            self.set_query(replace(self.query_state, filters=Filters()))

    def action_filters(self) -> None:
        """Choose which filter to set."""
        active = self.query_state.filters.active()
        choices = []
        for name in FILTER_NAMES:
            label = Text(f"{name:<9}", style="bold")
            label.append_text(safe_text(active.get(name), max_length=50, empty="all"))
            choices.append(Choice(label, name))

        def chosen(result: Picked | None) -> None:
            if result is not None:
                self.action_pick(result.value)

        self.app.push_screen(PickerScreen("Filter by…", choices), chosen)

    def action_pick(self, name: str) -> None:
        """Pick a value for filter ``name`` from the server's dimensions."""
        if name == "node" and not self.query_state.filters.service:
            self.notify("Choose a service first (s): nodes belong to a service.", severity="warning")
            return
        self.run_worker(partial(self._pick, name, self.query_state), group="dimensions", exclusive=True,
                        exit_on_error=False)

    async def _pick(self, name: str, query: Query) -> None:
        try:
            dimensions = await self.source.dimensions(query)
        except DataError as error:
            self.notify(str(error), title="Could not load the filter values", severity="error", markup=False)
            return
        current = getattr(query.filters, name)
        choices = [Choice(Text("(all)", style="italic"), ALL)] + _choices(name, dimensions)

        def chosen(result: Picked | None) -> None:
            if result is None:
                return
            if result.value is ALL:
                self.set_filter(name, None)
            elif name == "endpoint":
                endpoint, method = result.value
                from dataclasses import replace

                filters = self.query_state.filters.with_value("endpoint", endpoint).with_value("method", method or None)
                self.set_query(replace(self.query_state, filters=filters))
            else:
                self.set_filter(name, result.value)

        if name == "endpoint":
            current = (query.filters.endpoint, query.filters.method)
        self.app.push_screen(PickerScreen(f"Filter by {name}", choices, current=current), chosen)

    # ------------------------------------------------------------------ drill-down

    def on_drill_down(self, message: DrillDown) -> None:
        self.open_detail(message)

    def open_detail(self, target: DrillDown) -> None:
        """Open the detail view for an endpoint or consumer."""
        from .drilldown import DrilldownScreen

        if not target.value:
            self.notify(f"Requests without a {target.kind} cannot be opened on their own.", severity="warning")
            return
        detail = DrilldownScreen.for_target(self.source, self.query_state, target)
        detail.start_paused = self.paused  # a paused dashboard opens a paused detail view
        self.app.push_screen(detail)

    def action_drill(self) -> None:
        """Choose an endpoint or consumer to open (from the current data)."""
        focused = self.focused
        if isinstance(focused, (EndpointsTable, ConsumersTable)) and focused.row_count:
            focused.action_select_cursor()
            return
        dashboard = self.dashboard
        if dashboard is None or dashboard.is_empty:
            self.notify("Nothing to open yet.", severity="warning")
            return
        choices = []
        for e in dashboard.endpoints:
            label = Text("endpoint  ", style="dim")
            label.append(clean(e.method, 10) + " ", style="bold")
            label.append_text(safe_text(e.endpoint, max_length=60))
            choices.append(Choice(label, DrillDown("endpoint", e.endpoint, e.method or None, e.service or None)))
        for c in dashboard.consumers:
            label = Text("consumer  ", style="dim")
            label.append_text(safe_text(c.consumer, max_length=60, empty="(none)"))
            choices.append(Choice(label, DrillDown("consumer", c.consumer)))

        def chosen(result: Picked | None) -> None:
            if result is not None:
                self.open_detail(result.value)

        self.app.push_screen(PickerScreen("Open…", choices), chosen)


def _choices(name: str, dimensions: Dimensions) -> list[Choice]:
    if name == "endpoint":
        seen = set()
        choices = []
        for ref in dimensions.endpoints:
            if (ref.endpoint, ref.method) in seen:
                continue
            seen.add((ref.endpoint, ref.method))
            label = Text(clean(ref.method, 10).ljust(7), style="bold")
            label.append_text(safe_text(ref.endpoint, max_length=70))
            if ref.service:
                label.append("  ")
                label.append_text(safe_text(ref.service, style="dim", max_length=30))
            choices.append(Choice(label, (ref.endpoint, ref.method)))
        return choices
    values = {
        "service": dimensions.services,
        "node": dimensions.nodes,
        "method": dimensions.methods,
        "consumer": dimensions.consumers,
        "context": dimensions.contexts,
    }[name]
    return [Choice(safe_text(value, max_length=80, empty="(empty)"), value) for value in values]
