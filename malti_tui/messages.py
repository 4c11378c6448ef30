"""Messages widgets post to their screens."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message


@dataclass
class DrillDown(Message):
    """Open the detail view of one endpoint or consumer."""

    kind: str
    """``"endpoint"`` or ``"consumer"``."""
    value: str
    method: str | None = None
    service: str | None = None


@dataclass
class RangeChosen(Message):
    """A time range was clicked in the range bar."""

    name: str
