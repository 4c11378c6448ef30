"""A modal list to pick one value (a filter value, a filter to set, an endpoint
to open), with type-to-search. Values from the data are shown literally."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from ..bindings import MODAL_BINDINGS


@dataclass(frozen=True, slots=True)
class Choice:
    """One entry of a picker: what is shown and what is returned."""

    label: Text
    value: Any


@dataclass(frozen=True, slots=True)
class Picked:
    """The picker's answer (``None`` from the screen means cancelled)."""

    value: Any


class PickerScreen(ModalScreen[Picked | None]):
    """Choose one of ``choices``; Escape cancels."""

    BINDINGS = MODAL_BINDINGS

    def __init__(self, title: str, choices: Sequence[Choice], current: Any = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.title_text = title
        self.choices = list(choices)
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(id="picker"):
            yield Static(Text(self.title_text, style="bold"), id="picker-title")
            yield Input(placeholder="type to search", id="picker-search")
            yield OptionList(id="picker-options")

    def on_mount(self) -> None:
        self._fill("")
        self.query_one(Input).focus()

    def _visible(self, needle: str) -> list[int]:
        needle = needle.lower()
        return [i for i, choice in enumerate(self.choices) if needle in choice.label.plain.lower()]

    def _fill(self, needle: str) -> None:
        options = self.query_one(OptionList)
        options.clear_options()
        visible = self._visible(needle)
        options.add_options([Option(self.choices[i].label, id=str(i)) for i in visible])
        highlighted = 0
        for position, i in enumerate(visible):
            if self.choices[i].value == self.current:
                highlighted = position
        if visible:
            options.highlighted = highlighted

    def on_input_changed(self, event: Input.Changed) -> None:
        self._fill(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        options = self.query_one(OptionList)
        if options.highlighted is not None and options.option_count:
            self._choose(options.get_option_at_index(options.highlighted).id)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self._choose(event.option.id)

    def on_key(self, event) -> None:
        # Arrow keys move through the list while typing in the search box.
        options = self.query_one(OptionList)
        if event.key == "down":
            options.action_cursor_down()
            event.stop()
        elif event.key == "up":
            options.action_cursor_up()
            event.stop()

    def _choose(self, option_id: str | None) -> None:
        if option_id is not None:
            self.dismiss(Picked(self.choices[int(option_id)].value))

    def action_dismiss_modal(self) -> None:
        self.dismiss(None)
