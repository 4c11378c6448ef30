"""Charts drawn with textual-plotext: latency over time, requests per bucket
with errors, top consumers.

Each chart keeps its data and redraws on resize; long series are thinned to
the chart's width first so a year of hourly buckets plots as fast as an hour.
Labels from telemetry data are cleaned of control characters (plotext output
is parsed for ANSI codes).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from rich.text import Text
from textual_plotext import PlotextPlot

from ..data import Bucket, ConsumerStat
from ..formatting import clean

LATENCY_SERIES: tuple[tuple[str, str, str], ...] = (
    ("max_latency", "max", "red"),
    ("p95_latency", "p95", "orange"),
    ("avg_latency", "avg", "cyan"),
    ("min_latency", "min", "green"),
)


def thin(buckets: Sequence[Bucket], points: int) -> list[Bucket]:
    """At most ``points`` buckets: groups of neighbours merged (counts summed,
    min of mins, max of maxes, other latencies request-weighted)."""
    if points <= 0 or len(buckets) <= points:
        return list(buckets)
    size = -(-len(buckets) // points)
    merged = []
    for start in range(0, len(buckets), size):
        group = buckets[start : start + size]
        total = sum(b.total_requests for b in group)

        def weighted(name: str) -> float | None:
            pairs = [(getattr(b, name), b.total_requests or 1) for b in group if getattr(b, name) is not None]
            if not pairs:
                return None
            weight = sum(w for _, w in pairs)
            return sum(v * w for v, w in pairs) / weight

        mins = [b.min_latency for b in group if b.min_latency is not None]
        maxs = [b.max_latency for b in group if b.max_latency is not None]
        p95s = [b.p95_latency for b in group if b.p95_latency is not None]
        p99s = [b.p99_latency for b in group if b.p99_latency is not None]
        merged.append(
            Bucket(
                bucket=group[0].bucket,
                total_requests=total,
                error_count=sum(b.error_count for b in group),
                min_latency=min(mins) if mins else None,
                avg_latency=weighted("avg_latency"),
                p50_latency=weighted("p50_latency"),
                # A merged percentile is not recoverable from parts; the largest
                # part is the conservative reading for a chart.
                p95_latency=max(p95s) if p95s else None,
                p99_latency=max(p99s) if p99s else None,
                max_latency=max(maxs) if maxs else None,
            )
        )
    return merged


def time_labels(moments: Sequence[datetime], ticks: int) -> tuple[list[int], list[str]]:
    """Positions and labels for about ``ticks`` x-axis ticks: times of day when the
    series spans under two days, dates otherwise."""
    if not moments:
        return [], []
    span = (moments[-1] - moments[0]).total_seconds()
    fmt = "%H:%M" if span < 2 * 86400 else "%m-%d"
    ticks = max(2, min(ticks, len(moments)))
    step = max(1, (len(moments) - 1) // (ticks - 1)) if len(moments) > 1 else 1
    positions = list(range(0, len(moments), step))
    return positions, [moments[i].strftime(fmt) for i in positions]


class _Chart(PlotextPlot):
    """A plot that redraws itself from stored data whenever its size changes."""

    def __init__(self, title: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.chart_title = title
        self._version = 0
        self._cache_key: tuple | None = None
        self._cached: Text | None = None

    def on_resize(self) -> None:
        self.redraw()

    def redraw(self) -> None:
        """Draw the stored data again and repaint."""
        plt = self.plt
        plt.clear_figure()
        plt.title(self.chart_title)
        self.draw(plt)
        self._version += 1
        self.refresh()

    def has_data(self) -> bool:
        """Whether there is anything to plot yet."""
        return True

    def render(self) -> Text:
        # Building a plotext figure takes tens of milliseconds: build once per
        # data, size and theme, not on every repaint (hover, focus, timers).
        key = (self._version, self.size, self.app.theme, self.theme)
        if key != self._cache_key or self._cached is None:
            if not self.has_data():
                self._cached = Text(self.chart_title + " – waiting for data", style="dim", justify="center")
            else:
                self._cached = super().render()
            self._cache_key = key
        return self._cached

    def draw(self, plt) -> None:  # pragma: no cover - overridden
        """Draw the data on ``plt``."""

    def _points(self) -> int:
        return max(10, self.size.width - 10)


class LatencyChart(_Chart):
    """min / avg / p95 / max latency per bucket."""

    def __init__(self, title: str = "Latency (ms, 2xx)", **kwargs) -> None:
        super().__init__(title, **kwargs)
        self._buckets: list[Bucket] = []

    def set_series(self, buckets: Sequence[Bucket]) -> None:
        """Plot ``buckets``."""
        self._buckets = list(buckets)
        self.redraw()

    def has_data(self) -> bool:
        return bool(self._buckets)

    def draw(self, plt) -> None:
        buckets = thin(self._buckets, self._points())
        if not buckets:
            return
        drawn = False
        for name, label, color in LATENCY_SERIES:
            xs = [i for i, b in enumerate(buckets) if getattr(b, name) is not None]
            ys = [getattr(buckets[i], name) for i in xs]
            if xs:
                plt.plot(xs, ys, label=label, color=color, marker="braille")
                drawn = True
        positions, labels = time_labels([b.bucket for b in buckets], max(2, self.size.width // 12))
        plt.xticks(positions, labels)
        plt.xlim(0, max(1, len(buckets) - 1))
        if not drawn:
            plt.ylim(0, 1)


class RequestsChart(_Chart):
    """Requests per bucket, errors drawn over them."""

    def __init__(self, title: str = "Requests / errors per bucket", **kwargs) -> None:
        super().__init__(title, **kwargs)
        self._buckets: list[Bucket] = []

    def set_series(self, buckets: Sequence[Bucket]) -> None:
        """Plot ``buckets``."""
        self._buckets = list(buckets)
        self.redraw()

    def has_data(self) -> bool:
        return bool(self._buckets)

    def draw(self, plt) -> None:
        buckets = thin(self._buckets, self._points())
        if not buckets:
            return
        xs = list(range(len(buckets)))
        plt.bar(xs, [b.total_requests for b in buckets], label="requests", color="blue", width=1, marker="hd")
        if any(b.error_count for b in buckets):
            plt.bar(xs, [b.error_count for b in buckets], label="errors", color="red", width=1, marker="hd")
        positions, labels = time_labels([b.bucket for b in buckets], max(2, self.size.width // 12))
        plt.xticks(positions, labels)
        if not any(b.total_requests for b in buckets):
            plt.ylim(0, 1)


class ConsumersChart(_Chart):
    """The heaviest consumers as horizontal bars."""

    def __init__(self, title: str = "Top consumers (requests)", top: int = 10, **kwargs) -> None:
        super().__init__(title, **kwargs)
        self._consumers: list[ConsumerStat] = []
        self.top = top

    def set_consumers(self, consumers: Sequence[ConsumerStat]) -> None:
        """Plot the first ``top`` of ``consumers``."""
        self._consumers = list(consumers)
        self.redraw()

    def has_data(self) -> bool:
        return bool(self._consumers)

    def draw(self, plt) -> None:
        rows = max(1, (self.size.height - 4) // 2) if self.size.height else self.top
        consumers = self._consumers[: min(self.top, rows)]
        if not consumers:
            return
        width = max(8, min(24, self.size.width // 4))
        names = [clean(c.consumer, width) or "(none)" for c in consumers][::-1]
        plt.bar(names, [c.total_requests for c in consumers][::-1], orientation="horizontal", width=0.3, color="cyan")
