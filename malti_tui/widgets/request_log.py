"""The recent-requests log: new records appended at the bottom, like ``tail -f``."""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text
from textual.events import Resize
from textual.widgets import DataTable

from ..config import LOG_MAX_ROWS
from ..data import RequestRecord
from ..formatting import format_latency, format_time, safe_text, status_style
from ..themes import level_color
from .tables import Flex, fitted_widths, set_column_widths, table_room

COLUMNS: tuple[tuple[str, str], ...] = (
    ("time", "Time"),
    ("status", "Status"),
    ("method", "Method"),
    ("endpoint", "Endpoint"),
    ("latency", "Latency"),
    ("consumer", "Consumer"),
    ("service", "Service"),
)
FLEX: Flex = {"endpoint": (8, 24, 60), "consumer": (8, 12, 30), "service": (7, 12, 30)}
"""Text columns that narrow (cut with "…") so the latency stays on screen."""


class RequestLog(DataTable):
    """Raw requests, oldest at the top, newest at the bottom.

    While the cursor sits on the last row (or nothing is selected) the log
    follows new records; move the cursor up to stop following, press ``End``
    to follow again. Text columns narrow to fit the width.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self._seen: set[int] = set()
        self._order: list[int] = []
        self.follow = True
        self._natural = {key: len(header) for key, header in COLUMNS}
        """Widest cell so far per column."""

    def on_mount(self) -> None:
        for key, header in COLUMNS:
            self.add_column(header, key=key)
        self._fit()

    def on_resize(self, event: Resize) -> None:
        self._fit()

    def _fit(self) -> None:
        set_column_widths(self, fitted_widths(self._natural, FLEX, table_room(self, len(COLUMNS))))

    def reset(self) -> None:
        """Forget every row (filters or range changed)."""
        self.clear()
        self._seen.clear()
        self._order.clear()
        self._natural = {key: len(header) for key, header in COLUMNS}
        self._fit()
        self.follow = True

    @property
    def record_ids(self) -> list[int]:
        """Ids of the rows shown, top to bottom."""
        return list(self._order)

    def add_records(self, newest_first: Iterable[RequestRecord]) -> int:
        """Append the records not shown yet (given newest first, as the API
        returns them); return how many were added."""
        fresh = [r for r in newest_first if r.id not in self._seen]
        if not fresh:
            return 0
        at_bottom = self.follow and (self.row_count == 0 or self.cursor_row >= self.row_count - 1)
        for record in reversed(fresh):
            self._seen.add(record.id)
            self._order.append(record.id)
            cells = self._cells(record)
            for (key, _), cell in zip(COLUMNS, cells):
                self._natural[key] = max(self._natural[key], cell.cell_len)
            self.add_row(*cells, key=str(record.id))
        self._fit()
        while len(self._order) > LOG_MAX_ROWS:
            oldest = self._order.pop(0)
            self._seen.discard(oldest)
            self.remove_row(str(oldest))
        if at_bottom:
            self.move_cursor(row=self.row_count - 1, animate=False)
            self.scroll_end(animate=False)
        return len(fresh)

    def _cells(self, r: RequestRecord) -> list[Text]:
        color = level_color(self.app, status_style(r.status))
        return [
            Text(format_time(r.created_at), style="dim"),
            Text(str(r.status), style=f"bold {color}"),
            safe_text(r.method, max_length=10),
            safe_text(r.endpoint, max_length=60),
            Text(format_latency(r.response_time), justify="right"),
            safe_text(r.consumer, max_length=30),
            safe_text(r.service, style="dim", max_length=30),
        ]

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.follow = event.cursor_row >= self.row_count - 1
