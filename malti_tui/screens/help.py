"""The help screen (``?``): the Markdown in ``help_screen.md`` plus a table of
every key, generated from ``bindings.py`` so it never goes stale."""

from __future__ import annotations

from importlib import resources

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

from .. import bindings as keys

_SECTIONS: tuple[tuple[str, list[Binding]], ...] = (
    ("Everywhere", keys.APP_BINDINGS + [Binding("ctrl+p", "command_palette", "Command palette")]),
    ("Time range", keys.RANGE_BINDINGS),
    ("Refresh", keys.REFRESH_BINDINGS),
    ("Filters", keys.FILTER_BINDINGS),
    ("Views", [b for b in keys.DASHBOARD_BINDINGS if b.action.startswith(("show_tab", "drill"))]),
    ("Tables", keys.TABLE_BINDINGS),
    ("Detail view", [keys.DRILLDOWN_BINDINGS[0]]),
)


def _key_name(binding: Binding) -> str:
    name = binding.key_display or binding.key
    return name.replace("|", "`, `")


def help_markdown() -> str:
    """The help text: the Markdown file, then one table of keys per section."""
    text = resources.files("malti_tui").joinpath("help_screen.md").read_text(encoding="utf-8")
    lines = [text.rstrip(), ""]
    for section, bindings in _SECTIONS:
        lines += [f"### {section}", "", "| key | action |", "|---|---|"]
        lines += [f"| `{_key_name(b)}` | {b.description} |" for b in bindings]
        lines.append("")
    return "\n".join(lines)


class HelpScreen(ModalScreen[None]):
    """Help text; Escape, ``q`` or ``?`` closes it."""

    BINDINGS = [
        *keys.MODAL_BINDINGS,
        Binding("q", "dismiss_modal", "Close", show=False),
        Binding("question_mark", "dismiss_modal", "Close", show=False),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Markdown(help_markdown(), id="help-text")

    def action_dismiss_modal(self) -> None:
        self.dismiss(None)
