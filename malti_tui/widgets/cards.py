"""The metric cards: total requests, requests/min, error rate, avg/p95/p99 latency.

Error rate and latencies are coloured by the server's thresholds (success,
warning, error classes styled in ``app.tcss``).
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Static

from ..data import Summary, Thresholds
from ..formatting import Level, format_count, format_latency, format_percent, format_rate, level_for

LEVEL_CLASSES = ("-success", "-warning", "-error", "-neutral")


class MetricCard(Static):
    """One figure with a label in its border."""

    def __init__(self, label: str, **kwargs) -> None:
        super().__init__(Text("–"), **kwargs)
        self.border_title = label
        self.value = "–"
        self.level: Level = "neutral"

    def set_value(self, value: str, level: Level = "neutral") -> None:
        """Show ``value`` coloured for ``level``."""
        self.value = value
        self.level = level
        self.update(Text(value, style="bold", no_wrap=True, overflow="ellipsis"))
        for name in LEVEL_CLASSES:
            self.remove_class(name)
        self.add_class(f"-{level}")


CARDS: tuple[tuple[str, str], ...] = (
    ("total", "Total"),
    ("rpm", "Req/min"),
    ("error-rate", "Errors"),
    ("avg", "Avg"),
    ("p95", "P95"),
    ("p99", "P99"),
)


class MetricCards(Horizontal):
    """The row of cards."""

    def compose(self) -> ComposeResult:
        for card_id, label in CARDS:
            yield MetricCard(label, id=f"card-{card_id}")

    def card(self, card_id: str) -> MetricCard:
        """The card called ``card_id`` (``total``, ``rpm``, ``error-rate``, ``avg``, ``p95``, ``p99``)."""
        return self.query_one(f"#card-{card_id}", MetricCard)

    def show(self, summary: Summary, thresholds: Thresholds) -> None:
        """Fill the cards from ``summary``."""
        t = thresholds
        self.card("total").set_value(format_count(summary.total_requests))
        self.card("rpm").set_value(format_rate(summary.requests_per_minute))
        self.card("error-rate").set_value(
            format_percent(summary.error_rate),
            level_for(summary.error_rate, t.error_rate_success, t.error_rate_warning)
            if summary.total_requests else "neutral",
        )
        for card_id, value in (("avg", summary.avg_latency), ("p95", summary.p95_latency), ("p99", summary.p99_latency)):
            self.card(card_id).set_value(
                format_latency(value), level_for(value, t.latency_success, t.latency_warning)
            )

    def clear(self) -> None:
        """Show ``–`` on every card (no figures for the current selection)."""
        for card_id, _ in CARDS:
            self.card(card_id).set_value("–")


def system_level(summary: Summary, thresholds: Thresholds) -> Level:
    """The system status: the worse of the error-rate and average-latency levels
    (``neutral`` when there is no traffic)."""
    if summary.total_requests == 0:
        return "neutral"
    from ..formatting import worst

    return worst(
        level_for(summary.error_rate, thresholds.error_rate_success, thresholds.error_rate_warning),
        level_for(summary.avg_latency, thresholds.latency_success, thresholds.latency_warning),
    )
