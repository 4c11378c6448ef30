"""Tables: top endpoints (sortable, with inline bars), consumers, status codes
per service. Every cell from the data is a literal :class:`~rich.text.Text`.

The tables fit the terminal's width: text columns (endpoint, service,
consumer...) narrow and cut their text with "…", and the inline bars shrink,
so the figures (requests, error rate, latencies) stay on screen at 80 columns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rich.text import Text
from textual.events import Resize
from textual.geometry import Size
from textual.widgets import DataTable

from ..bindings import TABLE_BINDINGS
from ..data import ConsumerStat, EndpointStat, ServiceStatus, Thresholds
from ..formatting import (
    bar,
    format_count,
    format_latency,
    format_percent,
    level_for,
    safe_text,
    status_label,
    status_style,
)
from ..messages import DrillDown
from ..themes import level_color

BAR_WIDTH = 10

Flex = dict[str, tuple[int, int, int]]
"""Text columns that narrow to fit: column key -> (least, preferred, most) width."""


def fit_widths(natural: dict[str, int], flex: Flex, room: int | None,
               least: bool = False) -> tuple[dict[str, int], int]:
    """Column widths (padding excluded) for ``room`` cells.

    Flex columns are capped at their *most* width, then narrowed one cell at a
    time, the one furthest above its floor first, down to their *preferred*
    width (to *least* with ``least``); the other
    columns keep their ``natural`` width. ``room`` ``None`` (size not known
    yet) only caps. Returns the widths and how many cells are still missing
    (0 when they fit)."""
    widths = {key: min(width, flex[key][2]) if key in flex else width for key, width in natural.items()}
    if room is None:
        return widths, 0
    floors = {key: min(widths[key], flex[key][0 if least else 1]) for key in flex if key in widths}
    excess = sum(widths.values()) - room
    while excess > 0 and floors:
        key = max(floors, key=lambda k: widths[k] - floors[k])
        if widths[key] <= floors[key]:
            break
        widths[key] -= 1
        excess -= 1
    return widths, max(0, excess)


def fitted_widths(natural: dict[str, int], flex: Flex, room: int | None) -> dict[str, int]:
    """:func:`fit_widths` at the preferred widths, or at the least ones when those do not fit."""
    widths, missing = fit_widths(natural, flex, room)
    if missing:
        widths, _ = fit_widths(natural, flex, room, least=True)
    return widths


def table_room(table: DataTable, columns: int) -> int | None:
    """Cells ``table`` has for the contents of ``columns`` columns (cell padding
    and a vertical scroll bar taken off), ``None`` before it has a size."""
    if not table.size.width:
        return None
    return table.size.width - table.styles.scrollbar_size_vertical - 2 * table.cell_padding * columns


def set_column_widths(table: DataTable, widths: dict[str, int]) -> bool:
    """Give ``table``'s columns these fixed widths (text beyond is cut with "…");
    return whether any changed."""
    changed = False
    for key, width in widths.items():
        column = table.columns.get(key)  # type: ignore[call-overload]
        if column is not None and (column.auto_width or column.width != width):
            column.width, column.auto_width = width, False
            changed = True
    if changed:
        total = sum(column.get_render_width(table) for column in table.columns.values())
        table.virtual_size = Size(total, table.virtual_size.height)
        table._clear_caches()  # rows already drawn at the old widths
    return changed


class SortableTable(DataTable):
    """A DataTable whose rows are rebuilt from records and sorted by a column
    (click a header, or ``S`` to cycle the column and ``R`` to reverse)."""

    BINDINGS = TABLE_BINDINGS
    # (column key, header, sort key for a record)
    COLUMNS: tuple[tuple[str, str, Callable[[Any], Any] | None], ...] = ()
    DEFAULT_SORT = ""
    FLEX: Flex = {}
    """Text columns that give way on narrow screens: cut first down to their
    preferred width, then the inline bars shrink, then down to their least."""

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self._records: list[Any] = []
        self.sort_column = self.DEFAULT_SORT
        self.sort_reverse = True
        self.thresholds = Thresholds()
        self._room: int | None = None
        """The width the columns were fitted to."""

    def on_mount(self) -> None:
        for key, header, _ in self.COLUMNS:
            self.add_column(header, key=key)

    def on_resize(self, event: Resize) -> None:
        if table_room(self, len(self.COLUMNS)) != self._room:
            self._rebuild()

    def set_records(self, records: Sequence[Any], thresholds: Thresholds | None = None) -> None:
        """Show ``records`` in the current sort order, keeping the cursor's row."""
        if thresholds is not None:
            self.thresholds = thresholds
        self._records = list(records)
        self._rebuild()

    @property
    def records(self) -> list[Any]:
        """The records in display order."""
        return self._sorted()

    def _sorted(self) -> list[Any]:
        sort_key = next((k for c, _, k in self.COLUMNS if c == self.sort_column and k), None)
        if sort_key is None:
            return list(self._records)

        def key(record: Any) -> tuple[int, Any]:
            value = sort_key(record)
            # Missing values sort last whichever way.
            return (0, value) if value is not None else (1 if not self.sort_reverse else -1, 0)

        return sorted(self._records, key=key, reverse=self.sort_reverse)

    def _rebuild(self) -> None:
        row = self.cursor_row
        self.clear()
        records = self._sorted()
        self._label_headers()  # the sort arrow counts in the column's width
        widths, rows = self._layout(records)
        set_column_widths(self, widths)
        for index, cells in enumerate(rows):
            self.add_row(*cells, key=str(index))
        if records:
            self.move_cursor(row=min(row, len(records) - 1), animate=False)
        # Column widths are measured on idle; drop lines rendered before that
        # (otherwise a table visible during the update keeps header-wide columns).
        self.call_after_refresh(self._repaint)

    def _layout(self, records: list[Any]) -> tuple[dict[str, int], list[list[Text]]]:
        """Column widths that fit the table's width, and the rows' cells."""
        self._room = room = table_room(self, len(self.COLUMNS))
        bar_width = BAR_WIDTH
        while True:
            context = {**self.row_context(records), "bar": bar_width}
            rows = [self.cells(record, context) for record in records]
            natural = {}
            for index, (key, _, _) in enumerate(self.COLUMNS):
                label = self.columns[key].label  # type: ignore[index]
                natural[key] = max([label.cell_len, *(cells[index].cell_len for cells in rows)])
            widths, missing = fit_widths(natural, self.FLEX, room)
            if not missing or not bar_width or not rows:
                break
            bar_width = max(0, bar_width - missing)
        if missing:  # the bars are gone and it still does not fit
            widths = fitted_widths(natural, self.FLEX, room)
        return widths, rows

    def _repaint(self) -> None:
        self._clear_caches()
        self.refresh()

    def _label_headers(self) -> None:
        for key, header, sort_key in self.COLUMNS:
            column = self.columns.get(key)  # type: ignore[call-overload]
            if column is None:
                continue
            arrow = (" ▼" if self.sort_reverse else " ▲") if key == self.sort_column and sort_key else ""
            column.label = Text(header + arrow)
        self.refresh()

    def row_context(self, records: list[Any]) -> dict[str, Any]:
        """Values shared by every row (e.g. the largest count, for bars)."""
        return {}

    def cells(self, record: Any, context: dict[str, Any]) -> list[Text]:  # pragma: no cover - overridden
        """The cells of one record's row."""
        return []

    def sort_by(self, column: str, reverse: bool | None = None) -> None:
        """Sort by ``column`` (same column again flips the direction)."""
        if reverse is None:
            reverse = not self.sort_reverse if column == self.sort_column else True
        self.sort_column = column
        self.sort_reverse = reverse
        self._rebuild()

    def action_cycle_sort(self) -> None:
        sortable = [c for c, _, k in self.COLUMNS if k]
        if not sortable:
            return
        index = sortable.index(self.sort_column) if self.sort_column in sortable else -1
        self.sort_by(sortable[(index + 1) % len(sortable)], reverse=True)

    def action_reverse_sort(self) -> None:
        self.sort_by(self.sort_column, reverse=not self.sort_reverse)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        key = event.column_key.value
        if any(c == key and k for c, _, k in self.COLUMNS):
            self.sort_by(key)

    def selected_record(self) -> Any | None:
        """The record under the cursor."""
        records = self._sorted()
        if 0 <= self.cursor_row < len(records):
            return records[self.cursor_row]
        return None

    def color(self, level: str) -> str:
        return level_color(self.app, level)


class EndpointsTable(SortableTable):
    """Top endpoints: requests (with a bar), errors, error rate, avg, p95, p99."""

    COLUMNS = (
        ("method", "Method", lambda e: e.method),
        ("endpoint", "Endpoint", lambda e: e.endpoint),
        ("service", "Service", lambda e: e.service),
        ("requests", "Requests", lambda e: e.total_requests),
        ("error_rate", "Err %", lambda e: e.error_rate),
        ("avg", "Avg", lambda e: e.avg_latency),
        ("p95", "P95", lambda e: e.p95_latency),
        ("p99", "P99", lambda e: e.p99_latency),
    )
    DEFAULT_SORT = "requests"
    FLEX = {"endpoint": (10, 24, 60), "service": (6, 12, 30)}

    def row_context(self, records: list[EndpointStat]) -> dict[str, Any]:
        return {"max": max((r.total_requests for r in records), default=0)}

    def cells(self, e: EndpointStat, context: dict[str, Any]) -> list[Text]:
        t = self.thresholds
        requests = requests_cell(e.total_requests, context, self.color("accent"))
        rate_level = level_for(e.error_rate, t.error_rate_success, t.error_rate_warning) if e.total_requests else "neutral"
        return [
            safe_text(e.method, style="bold", max_length=10),
            safe_text(e.endpoint, max_length=60),
            safe_text(e.service, style="dim", max_length=30),
            requests,
            Text(format_percent(e.error_rate), style=self.color(rate_level), justify="right"),
            self._latency(e.avg_latency),
            self._latency(e.p95_latency),
            self._latency(e.p99_latency),
        ]

    def _latency(self, value: float | None) -> Text:
        t = self.thresholds
        return Text(format_latency(value), style=self.color(level_for(value, t.latency_success, t.latency_warning)), justify="right")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        record = self.selected_record()
        if record is not None:
            self.post_message(DrillDown("endpoint", record.endpoint, method=record.method or None, service=record.service or None))


class ConsumersTable(SortableTable):
    """Consumers: requests (with a bar), error rate, avg, p95."""

    COLUMNS = (
        ("consumer", "Consumer", lambda c: c.consumer),
        ("requests", "Requests", lambda c: c.total_requests),
        ("error_rate", "Err %", lambda c: c.error_rate),
        ("avg", "Avg", lambda c: c.avg_latency),
        ("p95", "P95", lambda c: c.p95_latency),
    )
    DEFAULT_SORT = "requests"
    FLEX = {"consumer": (8, 20, 40)}

    def row_context(self, records: list[ConsumerStat]) -> dict[str, Any]:
        return {"max": max((r.total_requests for r in records), default=0)}

    def cells(self, c: ConsumerStat, context: dict[str, Any]) -> list[Text]:
        t = self.thresholds
        requests = requests_cell(c.total_requests, context, self.color("accent"))
        rate_level = level_for(c.error_rate, t.error_rate_success, t.error_rate_warning) if c.total_requests else "neutral"
        return [
            safe_text(c.consumer, max_length=40, empty="(none)"),
            requests,
            Text(format_percent(c.error_rate), style=self.color(rate_level), justify="right"),
            Text(format_latency(c.avg_latency), justify="right"),
            Text(format_latency(c.p95_latency), justify="right"),
        ]

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        record = self.selected_record()
        if record is not None:
            self.post_message(DrillDown("consumer", record.consumer))


class StatusTable(SortableTable):
    """Status codes per service: a stacked 2xx/3xx/4xx-5xx bar and the top codes."""

    COLUMNS = (
        ("service", "Service", lambda s: s.service),
        ("requests", "Requests", lambda s: s.total_requests),
        ("mix", "2xx / 3xx / 4xx-5xx", None),
        ("codes", "Status codes", None),
    )
    DEFAULT_SORT = "requests"
    FLEX = {"service": (7, 16, 40), "codes": (12, 24, 80)}

    def cells(self, s: ServiceStatus, context: dict[str, Any]) -> list[Text]:
        return [
            safe_text(s.service, style="bold", max_length=40, empty="(none)"),
            Text(format_count(s.total_requests), justify="right"),
            stacked_bar(s, max(4, 2 * context["bar"]), self.color),
            status_codes(s.status_breakdown, self.color),
        ]


def requests_cell(count: int, context: dict[str, Any], color: str) -> Text:
    """A request count after a bar (``context``: the largest count, the bar width)."""
    text = Text(no_wrap=True)
    if context["bar"]:
        text.append(bar(count, context["max"], context["bar"]), style=color)
        text.append(" ")
    text.append(format_count(count).rjust(7))
    return text


def stacked_bar(s: ServiceStatus, width: int, color: Callable[[str], str]) -> Text:
    """A bar split into 2xx (success), 3xx (accent) and 4xx/5xx (error) parts."""
    text = Text(no_wrap=True)
    total = s.success_2xx + s.warning_3xx + s.error_4xx_5xx
    if total <= 0:
        return Text(" " * width)
    parts = [(s.success_2xx, "success"), (s.warning_3xx, "accent"), (s.error_4xx_5xx, "error")]
    cells = [round(count / total * width) for count, _ in parts]
    # Every non-zero part gets at least one cell; rounding drift goes to the largest.
    cells = [max(c, 1) if count else 0 for c, (count, _) in zip(cells, parts)]
    largest = max(range(3), key=lambda i: cells[i])
    cells[largest] += width - sum(cells)
    for n, (_, level) in zip(cells, parts):
        if n > 0:
            text.append("█" * n, style=color(level))
    return text


def status_codes(breakdown: dict[str, int], color: Callable[[str], str], top: int = 6) -> Text:
    """``200×480 404×10 500×5`` with each code in its class's colour."""
    text = Text(no_wrap=True, overflow="ellipsis")
    items = sorted(breakdown.items(), key=lambda item: (-item[1], item[0]))[:top]
    for code, count in items:
        try:
            style = color(status_style(int(code)))
        except ValueError:
            style = ""
        text.append(status_label(code), style=f"bold {style}")
        text.append(f"×{format_count(count)} ")
    return text
