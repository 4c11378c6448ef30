"""The Malti TUI application: connection flow, themes, top-level keys and the
command palette."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from datetime import datetime
from functools import partial

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from .bindings import APP_BINDINGS
from .config import RETRY_SECONDS, Settings, forget_credentials, load_saved, save_credentials
from .data import AuthFailed, AuthInfo, ClientDataSource, DataError, DataSource, Filters, Query, RateLimited, Thresholds, utc_now
from .screens.dashboard import DashboardScreen
from .screens.help import HelpScreen
from .screens.live import LiveScreen
from .screens.login import LoginScreen
from .themes import DARK_THEME, LIGHT_THEME, THEMES
from .timeranges import get_range

SourceFactory = Callable[[str, str], DataSource]


class MaltiApp(App):
    """Terminal dashboard for a Malti server.

    Args:
        settings: URL, key, starting range, theme. Without URL and key the
            saved login is tried, else the login screen asks.
        source_factory: builds the :class:`DataSource` for a URL and key
            (default: the ``malti_sdk`` client); tests pass their own.
        clock: the time shown as "last updated" (tests freeze it).
    """

    CSS_PATH = "app.tcss"
    TITLE = "Malti"
    BINDINGS = APP_BINDINGS
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (36, "-tall")]

    def __init__(self, settings: Settings | None = None, source_factory: SourceFactory | None = None,
                 clock: Callable[[], datetime] = utc_now) -> None:
        super().__init__()
        self.settings = settings or Settings()
        self.source_factory: SourceFactory = source_factory or ClientDataSource
        self.clock = clock
        self.refresh_enabled = self.settings.auto_refresh
        self.source: DataSource | None = None
        self.auth: AuthInfo | None = None
        self.thresholds = Thresholds()
        if "TEXTUAL_ANIMATIONS" not in os.environ:
            # Sliding tab underlines cost frames (and bandwidth over SSH); keep it snappy.
            self.animation_level = "basic"

    # ------------------------------------------------------------------ start-up

    def on_mount(self) -> None:
        for theme in THEMES:
            self.register_theme(theme)
        self.theme = self.settings.theme if self.settings.theme in self.available_themes else DARK_THEME
        url, key = self.settings.url, self.settings.api_key
        if not (url and key):
            saved_url, saved_key = load_saved(self.settings.config_dir)
            url, key = url or saved_url, key or saved_key
        if url and key:
            try:
                source = self.make_source(url, key)
            except DataError as error:
                self.push_screen(LoginScreen(url=url, message=str(error), remember=self.settings.remember))
                return
            self.open_dashboard(source)
            self.run_worker(self._fetch_auth, group="auth", exclusive=True, exit_on_error=False)
        else:
            self.push_screen(LoginScreen(url=url, remember=self.settings.remember))

    def make_source(self, url: str, api_key: str) -> DataSource:
        """A data source for ``url`` with ``api_key``."""
        return self.source_factory(url, api_key)

    def open_dashboard(self, source: DataSource) -> DashboardScreen:
        """Show the dashboard for ``source`` (replacing the login screen)."""
        self.source = source
        query = Query(get_range(self.settings.time_range), Filters())
        screen = DashboardScreen(source, query)
        self._replace_screens(screen)
        return screen

    def _replace_screens(self, screen: Screen) -> None:
        while len(self.screen_stack) > 2:
            self.pop_screen()
        if len(self.screen_stack) > 1:
            self.switch_screen(screen)
        else:
            self.push_screen(screen)

    async def _fetch_auth(self) -> None:
        """Get the thresholds; keep trying while the server is away."""
        import asyncio

        source = self.source
        while source is not None and source is self.source:
            try:
                auth = await source.auth_test()
            except AuthFailed as error:
                self.on_auth_failed(error)
                return
            except DataError as error:
                # Rate limited or unreachable: the dashboard keeps default colours
                # and reports the outage itself; try again later.
                wait = error.retry_after if isinstance(error, RateLimited) and error.retry_after else RETRY_SECONDS * 2
                await asyncio.sleep(max(1.0, min(float(wait), 60.0)))
                continue
            self.set_auth(auth)
            return

    def set_auth(self, auth: AuthInfo) -> None:
        """Use ``auth``'s thresholds on every screen."""
        self.auth = auth
        self.thresholds = auth.thresholds
        for screen in self.screen_stack:
            if isinstance(screen, LiveScreen):
                screen.thresholds_changed()

    def login_succeeded(self, source: DataSource, auth: AuthInfo, url: str, api_key: str, remember: bool) -> None:
        """Called by the login screen once the server accepted the key."""
        if remember:
            try:
                save_credentials(self.settings.config_dir, url, api_key)
            except OSError as error:
                self.notify(f"Could not save the login: {error}", severity="warning", markup=False)
        self.auth = auth
        self.thresholds = auth.thresholds
        self.open_dashboard(source)

    def on_auth_failed(self, error: AuthFailed) -> None:
        """The key was refused before any data was shown: ask for another."""
        url = getattr(self.source, "url", None)
        source, self.source = self.source, None
        if source is not None:
            self.run_worker(source.aclose(), exit_on_error=False)
        self._replace_screens(LoginScreen(url=url, message=str(error), remember=self.settings.remember))

    async def on_unmount(self) -> None:
        if self.source is not None:
            await self.source.aclose()

    # ------------------------------------------------------------------ actions

    def action_help(self) -> None:
        """Show the help screen."""
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_toggle_dark(self) -> None:
        """Switch between the light and the dark theme."""
        self.theme = LIGHT_THEME if self.current_theme.dark else DARK_THEME

    def action_logout(self) -> None:
        """Forget the saved key and go back to the login screen."""
        forget_credentials(self.settings.config_dir)
        url = getattr(self.source, "url", None)
        source, self.source = self.source, None
        if source is not None:
            self.run_worker(source.aclose(), exit_on_error=False)
        self._replace_screens(LoginScreen(url=url, message="Logged out; the saved key was deleted."))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """The palette: Textual's own commands, then every key binding of the
        app and of the current screen, by its description."""
        yield from super().get_system_commands(screen)
        seen: set[str] = set()
        sources: list[tuple[object, list[Binding]]] = [(self, list(APP_BINDINGS))]
        sources.append((screen, [b for b in getattr(screen, "BINDINGS", []) if isinstance(b, Binding)]))
        for target, bindings in sources:
            for binding in bindings:
                if not binding.description or binding.description in seen or binding.action == "quit":
                    continue
                seen.add(binding.description)
                key = binding.key_display or binding.key
                yield SystemCommand(binding.description, f"key: {key}", partial(target.run_action, binding.action))
        if self.source is not None:
            yield SystemCommand("Log out", "Forget the saved key and show the login screen", self.action_logout)
