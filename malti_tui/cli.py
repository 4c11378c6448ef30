"""``malti-tui``: the command line entry point."""

from __future__ import annotations

import argparse
import os
import sys

from .config import Settings, normalise_url
from .timeranges import DEFAULT_RANGE, TIME_RANGES


def build_parser() -> argparse.ArgumentParser:
    """The ``malti-tui`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="malti-tui",
        description="Terminal dashboard for a Malti telemetry server.",
        epilog="URL and key fall back to MALTI_URL and MALTI_USER_KEY, then to the saved login, "
        "then to a login screen. Press ? in the app for help.",
    )
    parser.add_argument("--url", help="server URL, e.g. http://127.0.0.1:8000 (env MALTI_URL)")
    parser.add_argument("--api-key", help="a user key from the server's config (env MALTI_USER_KEY)")
    parser.add_argument("--range", dest="time_range", default=DEFAULT_RANGE,
                        choices=[r.name for r in TIME_RANGES], help="time range to start with (default: 1h)")
    parser.add_argument("--light", action="store_true", help="start with the light theme")
    parser.add_argument("--no-refresh", action="store_true", help="start with auto-refresh paused")
    parser.add_argument("--no-remember", action="store_true", help="do not save the login")
    return parser


def settings_from_args(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Settings from command-line options, then the environment."""
    args = build_parser().parse_args(argv)
    env = os.environ if environ is None else environ
    url = args.url or env.get("MALTI_URL") or None
    key = args.api_key or env.get("MALTI_USER_KEY") or None
    return Settings(
        url=normalise_url(url) if url else None,
        api_key=key.strip() if key else None,
        time_range=args.time_range,
        theme="malti-light" if args.light else "malti-dark",
        auto_refresh=not args.no_refresh,
        remember=not args.no_remember,
    )


# the packages of the [tui] extra (pyproject.toml)
_TUI_EXTRA = {"textual", "textual_plotext", "plotext"}


def main(argv: list[str] | None = None) -> int:
    """Run the TUI; returns the exit status."""
    settings = settings_from_args(argv)
    try:
        from .app import MaltiApp  # import Textual only once the arguments are valid
    except ImportError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing not in _TUI_EXTRA:
            raise
        print(
            f"malti-tui needs the [tui] extra ({missing} is missing): "
            "pip install -e '.[tui]' in the Malti clone (or pip install '/path/to/malti[tui]')",
            file=sys.stderr,
        )
        return 2

    app = MaltiApp(settings)
    app.run()
    return app.return_code or 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
