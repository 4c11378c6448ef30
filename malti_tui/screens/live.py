"""What the dashboard and the drill-down view share: a query, a refresh timer
that can be paused, loading in workers, and clear messages when the server
cannot answer (with automatic retry).

Queries run in exclusive async workers: a new range or filter cancels the
query still in flight, and the event loop keeps handling keys while a slow
query waits on the network.

Figures on screen always belong to the range and filters shown above them:
when the server cannot answer a new query, the previous query's figures are
cleared (``–``, charts saying why) rather than left under the new label.
"""

from __future__ import annotations

import math
from functools import partial

from textual.screen import ModalScreen, Screen
from textual.timer import Timer
from textual.worker import Worker, WorkerState

from ..config import LOG_LIMIT, RETRY_SECONDS
from ..data import AuthFailed, Dashboard, DataError, DataSource, Query, RateLimited, ServerUnavailable, Thresholds
from ..timeranges import get_range
from ..widgets.cards import MetricCards, system_level
from ..widgets.header import Banner, FilterBar, RangeBar, RefreshState, StatusIndicator
from ..widgets.request_log import RequestLog

LOG_POLL_SECONDS = 2.0
"""How often the recent-requests log asks for new records while it is shown."""


def unavailable_reason(error: DataError) -> str:
    """Why a view has no figures, in a few words (the banner has the details)."""
    if isinstance(error, ServerUnavailable):
        return "offline, no data yet"
    if isinstance(error, RateLimited):
        return "rate limited, no data yet"
    if isinstance(error, AuthFailed):
        return "key refused, no data"
    return "query failed, no data"


class LiveScreen(Screen):
    """A screen showing data for :attr:`query`, refreshed while it is shown."""

    def __init__(self, source: DataSource, query: Query, **kwargs) -> None:
        super().__init__(**kwargs)
        self.source = source
        self.query_state = query
        self.dashboard: Dashboard | None = None
        self.dashboard_query: Query | None = None
        """The query :attr:`dashboard` answers (the figures on screen belong to it)."""
        self.loads = 0
        """Completed loads (tests and benchmarks wait on it)."""
        self.last_error: DataError | None = None
        self._timer: Timer | None = None
        self._log_timer: Timer | None = None
        self._retry_timer: Timer | None = None
        self._countdown: Timer | None = None
        self._retry_left = 0
        self._retry_message: tuple[str, str] = ("", "error")
        self.paused = False
        self.start_paused: bool | None = None
        """Start with auto-refresh paused (``None``: as the app's setting says)."""

    # ------------------------------------------------------------------ lifecycle

    def on_mount(self) -> None:
        if self.start_paused is not None:
            self.paused = self.start_paused
        else:
            self.paused = not getattr(self.app, "refresh_enabled", True)
        self._start_timer()
        self._log_timer = self.set_interval(LOG_POLL_SECONDS, self._poll_log, pause=self.paused)
        self.query_one(RefreshState).show(paused=self.paused, every=self.query_state.time_range.refresh_seconds)
        self.show_filters()
        self.load()

    def _start_timer(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_interval(self.query_state.time_range.refresh_seconds, self._tick, pause=self.paused)

    @property
    def on_view(self) -> bool:
        """On top, or only under dialogs (which leave it visible)."""
        stack = self.app.screen_stack
        if self not in stack:
            return False
        return all(isinstance(screen, ModalScreen) for screen in stack[stack.index(self) + 1:])

    def _tick(self) -> None:
        # A screen covered by another (a detail view) does not poll the server.
        if self.on_view:
            self.load()

    def on_screen_resume(self) -> None:
        # Back on top (e.g. after a detail view): catch up at once if we are live.
        if self.loads and not self.paused:
            self.load()

    @property
    def thresholds(self) -> Thresholds:
        """The server's colour thresholds (defaults until the auth test answered)."""
        return getattr(self.app, "thresholds", Thresholds())

    # ------------------------------------------------------------------ loading

    def load(self) -> Worker:
        """Fetch the dashboard for the current query in a worker."""
        self.query_one(RefreshState).show(loading=True)
        # The work is a callable, not a coroutine: a queued load that a newer one
        # replaces before it starts then leaves no coroutine that was never awaited.
        return self.run_worker(partial(self._load, self.query_state), group="load", exclusive=True,
                               exit_on_error=False)

    async def _load(self, query: Query) -> None:
        try:
            dashboard = await self.source.dashboard(query)
        except DataError as error:
            if query == self.query_state:
                self.show_error(error)
            return
        if query != self.query_state:  # superseded while in flight
            return
        self.last_error = None
        self._cancel_retry()
        self.dashboard = dashboard
        self.dashboard_query = query
        self.query_one(Banner).show_message(None)
        self.show_dashboard(dashboard)
        self.query_one(StatusIndicator).set_state(system_level(dashboard.summary, self.thresholds))
        self.query_one(RefreshState).show(loading=False, updated=self.app.clock())
        self.loads += 1
        if self.log_visible():
            self._poll_log()

    def show_dashboard(self, dashboard: Dashboard) -> None:
        """Put ``dashboard`` on screen (screens fill their own widgets)."""
        self.query_one(MetricCards).show(dashboard.summary, self.thresholds)

    def show_error(self, error: DataError) -> None:
        """Say what went wrong and retry by itself (counting down in the banner).

        The last data stays on screen while it answers the current query (a
        failed refresh); after a change of range or filters it is cleared, so
        the previous query's figures never show under the new label."""
        self.last_error = error
        self.query_one(RefreshState).show(loading=False)
        retry = error.retry_after if error.retry_after else RETRY_SECONDS
        retry = max(1.0, min(float(retry), 60.0))
        level = "warning" if isinstance(error, RateLimited) else "error"
        if not isinstance(error, (AuthFailed, RateLimited)):
            self.query_one(StatusIndicator).set_state("offline")
        if isinstance(error, AuthFailed) and not self.loads:
            on_auth_failed = getattr(self.app, "on_auth_failed", None)
            if on_auth_failed is not None:
                on_auth_failed(error)
                return
        if self.dashboard_query != self.query_state:
            self.dashboard = None
            self.show_unavailable(unavailable_reason(error))
        self._cancel_retry()
        self._retry_message = (str(error), level)
        self._retry_left = math.ceil(retry)
        self._show_retry()
        self._countdown = self.set_interval(1.0, self._count_down)
        self._retry_timer = self.set_timer(retry, self.load)

    def show_unavailable(self, reason: str) -> None:
        """Clear the figures: there are none for the current query (``reason``
        says why; screens clear their own widgets)."""
        self.query_one(MetricCards).clear()
        self.query_one(RefreshState).forget_update()

    def _show_retry(self) -> None:
        message, level = self._retry_message
        when = f"next try in {self._retry_left}s" if self._retry_left > 0 else "trying again…"
        self.query_one(Banner).show_message(f"{message}  ({when})", level)

    def _count_down(self) -> None:
        self._retry_left -= 1
        self._show_retry()
        if self._retry_left <= 0 and self._countdown is not None:
            self._countdown.stop()

    def _cancel_retry(self) -> None:
        for timer in (self._retry_timer, self._countdown):
            if timer is not None:
                timer.stop()
        self._retry_timer = self._countdown = None

    def thresholds_changed(self) -> None:
        """Re-colour with new thresholds."""
        if self.dashboard is not None:
            self.show_dashboard(self.dashboard)
            self.query_one(StatusIndicator).set_state(system_level(self.dashboard.summary, self.thresholds))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        # A bug in showing data must not kill the app: say what failed, keep going.
        if event.state == WorkerState.ERROR:
            error = event.worker.error
            self.query_one(RefreshState).show(loading=False)
            self.query_one(Banner).show_message(f"Could not show the data: {type(error).__name__}: {error}")
            self.log.error("worker failed", error)

    # ------------------------------------------------------------------ recent requests

    def log_visible(self) -> bool:
        """Whether the recent-requests log is on screen."""
        return False

    def _poll_log(self) -> None:
        if self.log_visible() and self.on_view:
            self.run_worker(partial(self._load_log, self.query_state), group="log", exclusive=True, exit_on_error=False)

    async def _load_log(self, query: Query) -> None:
        try:
            records = await self.source.requests(query, limit=LOG_LIMIT)
        except DataError:
            return  # the dashboard load reports connection problems
        if query == self.query_state:
            self.query_one(RequestLog).add_records(records)

    # ------------------------------------------------------------------ changing the query

    def set_query(self, query: Query) -> None:
        """Switch to ``query`` and load it now."""
        range_changed = query.time_range != self.query_state.time_range
        self.query_state = query
        if range_changed:
            self._start_timer()
            self.query_one(RangeBar).set_current(query.time_range.name)
            self.query_one(RefreshState).show(every=query.time_range.refresh_seconds)
        for log in self.query(RequestLog):
            log.reset()
        self.show_filters()
        self.load()

    def show_filters(self) -> None:
        """Show the active filters."""
        self.query_one(FilterBar).set_filters(self.query_state.filters)

    def action_set_range(self, name: str) -> None:
        """Show time range ``name``."""
        from dataclasses import replace

        time_range = get_range(name)
        if time_range != self.query_state.time_range:
            self.set_query(replace(self.query_state, time_range=time_range))

    def on_range_chosen(self, message) -> None:
        self.action_set_range(message.name)

    def action_refresh(self) -> None:
        """Load now."""
        self.load()
        self._poll_log()

    def action_toggle_pause(self) -> None:
        """Pause or resume auto-refresh."""
        self.paused = not self.paused
        for timer in (self._timer, self._log_timer):
            if timer is not None:
                timer.pause() if self.paused else timer.resume()
        self.query_one(RefreshState).show(paused=self.paused)
        self.notify("Auto-refresh paused (p resumes)" if self.paused else "Auto-refresh resumed", timeout=2)
        if not self.paused:
            self.load()
