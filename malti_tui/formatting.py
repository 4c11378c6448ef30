"""Pure helpers that turn numbers and telemetry text into display text.

Everything that comes from telemetry data (endpoints, consumers, services,
contexts, nodes, status codes) goes through :func:`clean` or :func:`safe_text`
before it reaches the screen: control characters (escape sequences included),
bidi controls and zero-width characters are removed and the result is a
:class:`rich.text.Text`, which Textual never parses as markup. So an endpoint
called ``[bold red]x[/]`` shows exactly those characters.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Literal

from rich.text import Text

Level = Literal["success", "warning", "error", "neutral"]

WAITING = "waiting for data"
"""What a chart or box says before the first answer."""
NO_REQUESTS = "no requests in this range"
"""What it says when the server answered with no traffic (for the filters, if any)."""

# C0 and C1 control characters and DEL: a lone ESC starts a terminal escape
# sequence, so the whole range goes (tabs and newlines too: one record, one line).
# Invisible format characters go as well: bidi embeddings, overrides and isolates
# (U+202A-U+202E, U+2066-U+2069, U+200E/U+200F, U+061C) can reorder what the
# terminal shows; zero-width characters (U+200B-U+200D, U+2060-U+2064, U+FEFF,
# U+180E, soft hyphen) and tag characters hide text or make two names look alike;
# the Unicode line and paragraph separators (U+2028, U+2029) break lines.
_CONTROL = re.compile(
    "[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff"
    "\ufff9-\ufffb\U000e0000-\U000e007f]"
)


def clean(value: object, max_length: int = 200) -> str:
    """Return ``value`` as one printable line: no control, bidi or zero-width
    characters, at most ``max_length`` characters (cut with an ellipsis)."""
    if value is None:
        return ""
    text = _CONTROL.sub("", str(value))
    if len(text) > max_length:
        text = text[: max_length - 1] + "…"
    return text


def status_label(code: object) -> str:
    """A status-code key of the data (``"200"``) as at most three printable characters."""
    return clean(code)[:3]


def safe_text(value: object, style: str = "", max_length: int = 200, empty: str = "") -> Text:
    """Telemetry text as a literal :class:`Text` (never interpreted as markup)."""
    text = clean(value, max_length)
    return Text(text or empty, style=style, no_wrap=True, overflow="ellipsis")


def format_count(value: int | float | None) -> str:
    """``1234567`` -> ``"1,234,567"``; large values shortened (``12.3M``)."""
    if value is None:
        return "–"
    value = int(value)
    if abs(value) >= 10_000_000_000:
        return f"{value / 1e9:.1f}G"
    if abs(value) >= 100_000_000:
        return f"{value / 1e6:.1f}M"
    return f"{value:,}"


def format_rate(value: float | None) -> str:
    """Requests per minute: one decimal below 100, whole numbers above."""
    if value is None:
        return "–"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}"


def format_percent(value: float | None) -> str:
    """An error rate given in percent (0–100)."""
    if value is None:
        return "–"
    if value == 0:
        return "0%"
    if value < 0.01:
        return "<0.01%"
    return f"{value:.2f}%"


def format_latency(value: float | None) -> str:
    """Milliseconds as ``"0.73 ms"``, ``"12.5 ms"``, ``"340 ms"`` or ``"1.25 s"``."""
    if value is None:
        return "–"
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    if value >= 100:
        return f"{value:.0f} ms"
    if value >= 10:
        return f"{value:.1f} ms"
    return f"{value:.2f} ms"


def format_time(moment: datetime | None, with_date: bool = False) -> str:
    """A UTC timestamp as ``HH:MM:SS`` (or ``YYYY-MM-DD HH:MM:SS``)."""
    if moment is None:
        return "–"
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S")


def level_for(value: float | None, success_below: float, warning_below: float) -> Level:
    """Classify a figure by the server's thresholds: at or under ``success_below``
    is success, at or under ``warning_below`` is warning, above is error."""
    if value is None:
        return "neutral"
    if value <= success_below:
        return "success"
    if value <= warning_below:
        return "warning"
    return "error"


_LEVEL_ORDER = {"neutral": 0, "success": 1, "warning": 2, "error": 3}


def worst(*levels: Level) -> Level:
    """The most severe of ``levels``."""
    return max(levels, key=_LEVEL_ORDER.__getitem__, default="neutral")


def bar(value: float, maximum: float, width: int) -> str:
    """A horizontal bar of ``width`` cells filled in proportion ``value / maximum``
    (eighth-block precision)."""
    if width <= 0:
        return ""
    if maximum <= 0 or value <= 0:
        return " " * width
    eighths = round(min(value / maximum, 1.0) * width * 8)
    eighths = max(eighths, 1)
    full, rest = divmod(eighths, 8)
    partial = " ▏▎▍▌▋▊▉"[rest] if rest else ""
    return ("█" * full + partial).ljust(width)[:width]


def status_style(status: int) -> str:
    """Theme colour name for an HTTP status: 2xx success, 3xx accent, 4xx warning,
    5xx error (401 is not an error in Malti's semantics, but still a 4xx)."""
    if status >= 500:
        return "error"
    if status >= 400:
        return "warning"
    if status >= 300:
        return "accent"
    return "success"
