"""Every key of the TUI, in one place.

The command palette is built from these lists too (see ``MaltiApp.get_system_commands``),
so each action is reachable by key and by name.
"""

from __future__ import annotations

from textual.binding import Binding

from .timeranges import TIME_RANGES

APP_BINDINGS = [
    Binding("question_mark", "help", "Help", key_display="?"),
    Binding("f1", "help", "Help", show=False),
    Binding("d", "toggle_dark", "Light/dark", show=False),
    Binding("q", "quit", "Quit"),
]

RANGE_BINDINGS = [
    Binding(r.key, f"set_range('{r.name}')", f"Time range: {r.label}", show=False) for r in TIME_RANGES
]

REFRESH_BINDINGS = [
    Binding("r", "refresh", "Refresh"),
    Binding("p", "toggle_pause", "Pause/resume"),
]

FILTER_BINDINGS = [
    Binding("f", "filters", "Filters"),
    Binding("s", "pick('service')", "Filter by service", show=False),
    Binding("n", "pick('node')", "Filter by node (after a service)", show=False),
    Binding("e", "pick('endpoint')", "Filter by endpoint", show=False),
    Binding("m", "pick('method')", "Filter by method", show=False),
    Binding("c", "pick('consumer')", "Filter by consumer", show=False),
    Binding("x", "pick('context')", "Filter by context", show=False),
    Binding("0", "clear_filters", "Clear all filters", show=False),
]

DASHBOARD_BINDINGS = [
    *RANGE_BINDINGS,
    *REFRESH_BINDINGS,
    *FILTER_BINDINGS,
    Binding("g", "show_tab('overview')", "View: overview charts", show=False),
    Binding("t", "show_tab('endpoints')", "View: top endpoints", show=False),
    Binding("u", "show_tab('consumers')", "View: consumers", show=False),
    Binding("h", "show_tab('status')", "View: status codes", show=False),
    Binding("l", "show_tab('log')", "View: recent requests (live)", show=False),
    Binding("o", "drill", "Open endpoint/consumer", show=False),
]

DRILLDOWN_BINDINGS = [
    Binding("escape", "close", "Back"),
    *RANGE_BINDINGS,
    *REFRESH_BINDINGS,
]

TABLE_BINDINGS = [
    Binding("enter", "select_cursor", "Open", show=False),
    Binding("S", "cycle_sort", "Sort column", show=False),
    Binding("R", "reverse_sort", "Reverse sort", show=False),
]

LOGIN_BINDINGS = [
    Binding("escape", "app.quit", "Quit"),
]

MODAL_BINDINGS = [
    Binding("escape", "dismiss_modal", "Close"),
]
