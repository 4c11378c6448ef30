"""The top of every data screen: title, system status, time ranges, refresh
state; the active filters; and a banner for connection problems."""

from __future__ import annotations

from datetime import datetime

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.events import Click
from textual.widgets import Static

from ..data import FILTER_NAMES, Filters
from ..formatting import Level, format_time, safe_text
from ..messages import RangeChosen
from ..themes import level_color
from ..timeranges import TIME_RANGES

STATUS_LABELS: dict[str, str] = {
    "success": "Healthy",
    "warning": "Degraded",
    "error": "Critical",
    "neutral": "No data",
    "offline": "Offline",
    "loading": "Connecting",
}


class StatusIndicator(Static):
    """``● Healthy`` / ``● Degraded`` / ``● Critical`` / ``● Offline``."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._state = "loading"

    def set_state(self, state: Level | str) -> None:
        """Show ``state`` (a level, ``"offline"`` or ``"loading"``)."""
        self._state = state
        self.refresh(layout=True)  # ``width: auto``: "Offline" is shorter than "Connecting"

    @property
    def state(self) -> str:
        """The state shown."""
        return self._state

    def render(self) -> Text:
        level = {"offline": "error", "loading": "neutral"}.get(self._state, self._state)
        color = level_color(self.app, level)
        return Text.assemble(("● ", color), (STATUS_LABELS.get(self._state, self._state), "bold"))


class RangeBar(Static):
    """The time ranges as a clickable strip; the current one highlighted."""

    def __init__(self, current: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self._current = current
        self._spans: list[tuple[int, int, str]] = []

    def set_current(self, name: str) -> None:
        """Highlight range ``name``."""
        self._current = name
        self.refresh()

    def render(self) -> Text:
        text = Text(no_wrap=True, overflow="crop")
        self._spans = []
        highlight = f"bold {self.app.theme_variables.get('foreground', 'white')} on {self.app.theme_variables.get('primary', 'blue')}"
        for time_range in TIME_RANGES:
            start = len(text)
            label = f" {time_range.name} "
            text.append(label, style=highlight if time_range.name == self._current else "")
            self._spans.append((start, len(text), time_range.name))
        return text

    def on_click(self, event: Click) -> None:
        for start, end, name in self._spans:
            if start <= event.x < end:
                self.post_message(RangeChosen(name))
                return


class RefreshState(Static):
    """``⟳ 5s · 12:00:01`` (live), ``‖ paused · 12:00:01``, or ``loading…``."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.paused = False
        self.every: float = 5.0
        self.updated: datetime | None = None
        self.busy = False

    def show(self, *, paused: bool | None = None, every: float | None = None,
             updated: datetime | None = None, loading: bool | None = None) -> None:
        """Change what is shown (only the given parts)."""
        if paused is not None:
            self.paused = paused
        if every is not None:
            self.every = every
        if updated is not None:
            self.updated = updated
        if loading is not None:
            self.busy = loading
        self.refresh(layout=True)  # ``width: auto``: the text's length decides the width

    def forget_update(self) -> None:
        """Stop showing the time of the last update (it was another selection's)."""
        self.updated = None
        self.refresh(layout=True)

    def render(self) -> Text:
        if self.paused:
            mode = Text("‖ paused", style="bold " + level_color(self.app, "warning"))
        else:
            seconds = int(self.every) if self.every < 60 else None
            every = f"{seconds}s" if seconds is not None else f"{int(self.every // 60)}m"
            mode = Text(f"⟳ {every}")
        parts = [mode]
        if self.busy:
            parts.append(Text(" · loading…", style="dim"))
        elif self.updated is not None:
            parts.append(Text(f" · {format_time(self.updated)}", style="dim"))
        return Text.assemble(*parts)


class TopBar(Horizontal):
    """Title, system status, range strip and refresh state in one line."""

    def __init__(self, current_range: str, title: str = "Malti", **kwargs) -> None:
        super().__init__(**kwargs)
        self._title = title
        self._range = current_range

    def compose(self) -> ComposeResult:
        yield Static(Text(self._title, style="bold"), id="title")
        yield StatusIndicator(id="status-indicator")
        yield RangeBar(self._range, id="range-bar")
        yield RefreshState(id="refresh-state")


class FilterBar(Static):
    """The active filters, shown literally: ``service: auth-service  endpoint: /login``."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._filters = Filters()
        self._prefix: Text | None = None

    def set_filters(self, filters: Filters, prefix: Text | None = None) -> None:
        """Show ``filters`` (and an optional prefix, e.g. a drill-down title)."""
        self._filters = filters
        self._prefix = prefix
        self.refresh()

    def render(self) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis")
        if self._prefix is not None:
            text.append_text(self._prefix)
            text.append("  ")
        active = self._filters.active()
        if not active:
            if self._prefix is not None:
                return text
            text.append("All services", style="bold")
            text.append("  (f filter · s service · e endpoint · c consumer)", style="dim")
            return text
        for name in FILTER_NAMES:
            if name in active:
                text.append(f"{name}: ", style="dim")
                text.append_text(safe_text(active[name], style="bold", max_length=60))
                text.append("  ")
        text.append("(0 clears)", style="dim")
        return text


class Banner(Static):
    """A one-line notice for connection problems; hidden when there is none."""

    def show_message(self, message: str | None, level: str = "error") -> None:
        """Show ``message`` literally, or hide the banner when ``None``."""
        if message:
            self.update(Text(message, style="bold"))
            self.set_class(level == "error", "-error")
            self.set_class(level == "warning", "-warning")
            self.display = True
        else:
            self.display = False
