"""Status codes of one endpoint or consumer, one line per code with a bar."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from ..data import ServiceStatus
from ..formatting import NO_REQUESTS, WAITING, bar, format_count, status_label, status_style
from ..themes import level_color


def merge_breakdowns(statuses: tuple[ServiceStatus, ...] | list[ServiceStatus]) -> dict[str, int]:
    """Counts per status code over all services."""
    merged: dict[str, int] = {}
    for service in statuses:
        for code, count in service.status_breakdown.items():
            merged[code] = merged.get(code, 0) + count
    return merged


class StatusBreakdown(Static):
    """``200 ██████████ 480`` per status code, most frequent first."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.border_title = "Status codes"
        self._counts: dict[str, int] = {}
        self.placeholder = WAITING
        """What the box says while it has no counts."""

    def set_counts(self, counts: dict[str, int]) -> None:
        """Show ``counts`` (status code -> requests)."""
        self._counts = dict(counts)
        self.placeholder = NO_REQUESTS
        self.refresh()

    def show_unavailable(self, reason: str) -> None:
        """Drop the counts and say why there are none (e.g. the server is offline)."""
        self._counts = {}
        self.placeholder = reason
        self.refresh()

    def render(self) -> Text:
        if not self._counts:
            return Text(self.placeholder, style="dim")
        items = sorted(self._counts.items(), key=lambda item: (-item[1], item[0]))
        largest = items[0][1]
        width = max(4, self.content_size.width - 14) if self.content_size.width else 12
        text = Text(no_wrap=True)
        for index, (code, count) in enumerate(items):
            try:
                color = level_color(self.app, status_style(int(code)))
            except ValueError:
                color = ""
            if index:
                text.append("\n")
            text.append(f"{status_label(code):>3} ", style=f"bold {color}")
            text.append(bar(count, largest, width), style=color)
            text.append(f" {format_count(count)}")
        return text
