"""The login screen: server URL and user key, checked with the server's auth
test before the dashboard opens; remembered for next time (mode 0600).

A refused key says so and waits for a new one; an unreachable or restarting
server is retried automatically with a countdown.
"""

from __future__ import annotations

from functools import partial

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Center, Horizontal, Vertical
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Button, Checkbox, Footer, Input, Label, Static

from ..bindings import LOGIN_BINDINGS
from ..config import DEFAULT_URL, RETRY_SECONDS, normalise_url
from ..data import AuthFailed, DataError, RateLimited

LOGIN_INTRO = (
    "Connect to a Malti server with a user key (a [users.NAME] key from the server's "
    "malti.toml; service keys can only send data)."
)


class LoginScreen(Screen):
    """Ask for URL and key, check them, then open the dashboard."""

    BINDINGS = LOGIN_BINDINGS

    def __init__(self, url: str | None = None, api_key: str | None = None, message: str | None = None,
                 remember: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.initial_url = url or DEFAULT_URL
        self.initial_key = api_key or ""
        self.initial_message = message
        self.initial_remember = remember
        self.attempts = 0
        self._retry: Timer | None = None
        self._countdown: Timer | None = None
        self._seconds_left = 0

    def compose(self) -> ComposeResult:
        with Center():
            with Vertical(id="login"):
                yield Static(Text("Malti", style="bold"), id="login-title")
                yield Static(Text(LOGIN_INTRO), id="login-intro")
                yield Label("Server URL")
                yield Input(self.initial_url, placeholder=DEFAULT_URL, id="login-url")
                yield Label("User API key")
                yield Input(self.initial_key, placeholder="user key", password=True, id="login-key")
                with Horizontal(id="login-actions"):
                    yield Checkbox("Remember on this computer", self.initial_remember, id="login-remember")
                    yield Button("Connect", variant="primary", id="login-connect")
                yield Static(id="login-message")
        yield Footer()

    def on_mount(self) -> None:
        if self.initial_message:
            self.show_message(self.initial_message, "error")
        target = "#login-key" if self.initial_url else "#login-url"
        self.query_one(target, Input).focus()

    def show_message(self, message: str, level: str = "info") -> None:
        """Show ``message`` literally under the form."""
        widget = self.query_one("#login-message", Static)
        widget.update(Text(message))
        for name in ("-error", "-info", "-warning"):
            widget.remove_class(name)
        widget.add_class(f"-{level}")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "login-url":
            self.query_one("#login-key", Input).focus()
        else:
            self.connect()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "login-connect":
            self.connect()

    def connect(self) -> None:
        """Check the URL and key in a worker."""
        self._cancel_retry()
        url = normalise_url(self.query_one("#login-url", Input).value)
        key = self.query_one("#login-key", Input).value.strip()
        if not url:
            self.show_message("Enter the server URL, e.g. http://127.0.0.1:8000", "error")
            self.query_one("#login-url", Input).focus()
            return
        if not key:
            self.show_message("Enter a user API key.", "error")
            self.query_one("#login-key", Input).focus()
            return
        self.show_message(f"Connecting to {url}…", "info")
        self.run_worker(partial(self._check, url, key), group="login", exclusive=True, exit_on_error=False)

    async def _check(self, url: str, key: str) -> None:
        self.attempts += 1
        try:
            source = self.app.make_source(url, key)
        except Exception as error:  # a malformed URL: say so, never crash
            self.show_message(f"Cannot use {url!r}: {error}", "error")
            return
        try:
            auth = await source.auth_test()
        except AuthFailed as error:
            await source.aclose()
            self.show_message(f"{error}", "error")
            key_input = self.query_one("#login-key", Input)
            key_input.focus()
            return
        except DataError as error:
            await source.aclose()
            wait = error.retry_after if isinstance(error, RateLimited) and error.retry_after else RETRY_SECONDS
            self._schedule_retry(str(error), max(1.0, min(float(wait), 60.0)))
            return
        remember = self.query_one("#login-remember", Checkbox).value
        self.app.login_succeeded(source, auth, url, key, remember)

    def _schedule_retry(self, message: str, seconds: float) -> None:
        self._seconds_left = int(round(seconds))
        self._last_problem = message

        def tick() -> None:
            self._seconds_left -= 1
            if self._seconds_left > 0:
                self.show_message(f"{self._last_problem}\nRetrying in {self._seconds_left}s…", "warning")

        self.show_message(f"{message}\nRetrying in {self._seconds_left}s…", "warning")
        self._countdown = self.set_interval(1.0, tick)
        self._retry = self.set_timer(seconds, self.connect)

    def _cancel_retry(self) -> None:
        for timer in (self._retry, self._countdown):
            if timer is not None:
                timer.stop()
        self._retry = self._countdown = None
