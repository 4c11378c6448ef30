"""Settings of the TUI and the remembered connection.

Where the URL and key come from, first match wins: command-line options,
the ``MALTI_URL`` / ``MALTI_USER_KEY`` environment variables, the file the
login screen saved (``<config dir>/malti/tui.json``, mode 0600), else the
login screen asks.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8000"
"""The server ``malti-server`` listens on by default."""

REQUEST_TIMEOUT = 10.0
"""Seconds before a metrics query counts as failed."""

RETRY_SECONDS = 5.0
"""Wait before retrying after the server could not be reached."""

LOG_LIMIT = 100
"""Records fetched per poll of the recent-requests log."""

LOG_MAX_ROWS = 500
"""Rows the recent-requests log keeps before dropping the oldest."""

CONFIG_FILE_NAME = "tui.json"


@dataclass(slots=True)
class Settings:
    """Everything the app needs to start."""

    url: str | None = None
    api_key: str | None = None
    time_range: str = "1h"
    theme: str = "malti-dark"
    auto_refresh: bool = True
    remember: bool = True
    """Save URL and key after a successful login."""
    config_dir: Path = field(default_factory=lambda: config_dir())


def config_dir() -> Path:
    """The per-user config folder: ``$MALTI_TUI_CONFIG_DIR``, else
    ``$XDG_CONFIG_HOME/malti`` (``%APPDATA%\\malti`` on Windows,
    ``~/.config/malti`` otherwise)."""
    override = os.environ.get("MALTI_TUI_CONFIG_DIR")
    if override:
        return Path(override)
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "malti"


def load_saved(directory: Path) -> tuple[str | None, str | None]:
    """The URL and key the login screen saved, or ``(None, None)``.

    A missing, unreadable or malformed file is treated as absent: the login
    screen then asks again.
    """
    try:
        data = json.loads((directory / CONFIG_FILE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None
    if not isinstance(data, dict):
        return None, None
    url, key = data.get("url"), data.get("api_key")
    return (url if isinstance(url, str) and url else None, key if isinstance(key, str) and key else None)


def save_credentials(directory: Path, url: str, api_key: str) -> Path:
    """Write URL and key to ``directory/tui.json`` readable by the owner only (0600).

    The file is created with mode 0600 before any secret is written to it, and an
    existing file is tightened to 0600 as well.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CONFIG_FILE_NAME
    payload = json.dumps({"url": url, "api_key": api_key}, indent=2) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o600)
        os.write(fd, payload.encode("utf-8"))
    finally:
        os.close(fd)
    return path


def forget_credentials(directory: Path) -> None:
    """Delete the saved URL and key, if any."""
    try:
        (directory / CONFIG_FILE_NAME).unlink()
    except FileNotFoundError:
        pass


def normalise_url(url: str) -> str:
    """``localhost:8000`` -> ``http://localhost:8000``; trailing slashes removed."""
    url = url.strip()
    if url and "://" not in url:
        url = "http://" + url
    return url.rstrip("/")
