"""Malti's own dark and light themes, and the colours telemetry text is drawn in.

Every other Textual theme works too (command palette → "Theme"); ``d`` flips
between the two below.
"""

from __future__ import annotations

from textual.app import App
from textual.theme import Theme

MALTI_DARK = Theme(
    name="malti-dark",
    primary="#4EA8DE",
    secondary="#7B8CDE",
    accent="#F2A65A",
    foreground="#E0E4EA",
    background="#10151C",
    surface="#18202A",
    panel="#222C38",
    success="#5BC88A",
    warning="#E9C46A",
    error="#EF6F6C",
    dark=True,
)

MALTI_LIGHT = Theme(
    name="malti-light",
    primary="#1D6FA5",
    secondary="#4A5AB0",
    accent="#B85C00",
    foreground="#1C2430",
    background="#F6F8FA",
    surface="#FFFFFF",
    panel="#E4E9EF",
    success="#1E8A4C",
    warning="#A86B00",
    error="#C62828",
    dark=False,
)

THEMES = (MALTI_DARK, MALTI_LIGHT)
DARK_THEME = MALTI_DARK.name
LIGHT_THEME = MALTI_LIGHT.name

_FALLBACK = {"success": "green", "warning": "yellow", "error": "red", "accent": "cyan", "neutral": "default"}


def level_color(app: App, level: str) -> str:
    """The current theme's colour for a level (``success``, ``warning``, ``error``,
    ``accent``, ``neutral``) as a Rich colour string."""
    if level == "neutral":
        return app.theme_variables.get("foreground", "default")
    return app.theme_variables.get(level) or _FALLBACK.get(level, "default")
