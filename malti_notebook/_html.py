"""HTML fragments of the dashboard: metric cards and the top-endpoints table.

Every value that comes from telemetry data (service names, endpoints, consumers, error
details) goes through ``html.escape``: a recorded route like ``/<script>`` must show as text.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

from malti_sdk import EndpointStats, MetricsSummary, Thresholds

GOOD, WARN, BAD, NEUTRAL = "#1a9850", "#e08214", "#d7301f", "#4d4d4d"


def _number(value: float | int | None, unit: str = "", digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 1000:
        return f"{int(value):,}{unit}"
    return f"{value:,.{digits}f}{unit}"


def _grade(value: float | None, good: float, warn: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NEUTRAL
    if value <= good:
        return GOOD
    if value <= warn:
        return WARN
    return BAD


def _card(label: str, value: str, colour: str = NEUTRAL) -> str:
    return (
        "<div style='display:inline-block;min-width:110px;margin:4px 8px 4px 0;padding:6px 10px;"
        f"border-left:4px solid {colour};background:rgba(127,127,127,0.08)'>"
        f"<div style='font-size:11px;opacity:0.7'>{html.escape(label)}</div>"
        f"<div style='font-size:20px;font-weight:600;color:{colour}'>{html.escape(value)}</div></div>"
    )


def cards_html(summary: MetricsSummary, thresholds: Thresholds) -> str:
    """Headline figures as coloured cards (colours from the server's thresholds)."""
    error_colour = _grade(
        summary.error_rate if summary.total_requests else None,
        thresholds.error_rate_success_threshold,
        thresholds.error_rate_warning_threshold,
    )

    def latency(value: float | None) -> str:
        return _grade(value, thresholds.latency_success_threshold, thresholds.latency_warning_threshold)

    cards = [
        _card("requests", _number(summary.total_requests)),
        _card("requests / min", _number(summary.requests_per_minute, digits=2)),
        _card("errors", _number(summary.error_count), error_colour),
        _card("error rate", _number(summary.error_rate, " %", 2), error_colour),
        _card("p50 latency", _number(summary.p50_latency, " ms"), latency(summary.p50_latency)),
        _card("p95 latency", _number(summary.p95_latency, " ms"), latency(summary.p95_latency)),
        _card("p99 latency", _number(summary.p99_latency, " ms"), latency(summary.p99_latency)),
    ]
    return "<div>" + "".join(cards) + "</div>"


def endpoints_html(endpoints: Sequence[EndpointStats], limit: int = 10) -> str:
    """The busiest endpoints as an HTML table."""
    if not endpoints:
        return "<div style='opacity:0.6'>No endpoint traffic in this range.</div>"
    head = "".join(
        f"<th style='text-align:{align};padding:2px 8px'>{name}</th>"
        for name, align in (("service", "left"), ("method", "left"), ("endpoint", "left"), ("requests", "right"),
                            ("errors", "right"), ("error rate", "right"), ("p50", "right"), ("p95", "right"),
                            ("p99", "right"))
    )  # fmt: skip
    rows = []
    for item in endpoints[:limit]:
        cells = [
            (item.service or "", "left"),
            (item.method, "left"),
            (item.endpoint, "left"),
            (_number(item.total_requests), "right"),
            (_number(item.error_count), "right"),
            (_number(item.error_rate, " %", 2), "right"),
            (_number(item.p50_latency, " ms"), "right"),
            (_number(item.p95_latency, " ms"), "right"),
            (_number(item.p99_latency, " ms"), "right"),
        ]
        rows.append(
            "<tr>" + "".join(f"<td style='text-align:{a};padding:2px 8px'>{html.escape(v)}</td>" for v, a in cells) + "</tr>"
        )
    return (
        "<div><div style='font-weight:600;margin:6px 0 2px'>Top endpoints</div>"
        f"<table style='border-collapse:collapse'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def status_html(text: str, error: bool = False) -> str:
    """The dashboard's status line (last update, or the error that stopped it)."""
    colour = BAD if error else NEUTRAL
    return f"<span style='font-size:12px;color:{colour}'>{html.escape(text)}</span>"
