"""The recent-requests log: new records appended at the bottom, like ``tail -f``."""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text
from textual.widgets import DataTable

from ..config import LOG_MAX_ROWS
from ..data import RequestRecord
from ..formatting import format_latency, format_time, safe_text, status_style
from ..themes import level_color


class RequestLog(DataTable):
    """Raw requests, oldest at the top, newest at the bottom.

    While the cursor sits on the last row (or nothing is selected) the log
    follows new records; move the cursor up to stop following, press ``End``
    to follow again.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self._seen: set[int] = set()
        self._order: list[int] = []
        self.follow = True

    def on_mount(self) -> None:
        self.add_column("Time", key="time")
        self.add_column("Status", key="status")
        self.add_column("Method", key="method")
        self.add_column("Endpoint", key="endpoint")
        self.add_column("Latency", key="latency")
        self.add_column("Consumer", key="consumer")
        self.add_column("Service", key="service")

    def reset(self) -> None:
        """Forget every row (filters or range changed)."""
        self.clear()
        self._seen.clear()
        self._order.clear()
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
            self.add_row(*self._cells(record), key=str(record.id))
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
