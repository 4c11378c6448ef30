"""Charts drawn with textual-plotext: latency over time, requests per bucket
with errors, top consumers.

Each chart keeps its data and redraws on resize; long series are thinned to
the chart's width first so a year of hourly buckets plots as fast as an hour.
With nothing to plot a chart says why: still loading, no requests in the range,
or no data because the server could not be asked.
Labels from telemetry data are cleaned of control characters (plotext output
is parsed for ANSI codes).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from rich.text import Text
from textual_plotext import PlotextPlot

from ..data import Bucket, ConsumerStat
from ..formatting import NO_REQUESTS, WAITING, clean, format_count

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
    """Positions and labels for about ``ticks`` x-axis ticks, no label twice.

    Times of day when the series spans under two days, else dates (no more ticks
    than days), with the year when the series runs into another year
    (``2025-12-01``)."""
    if not moments:
        return [], []
    span = (moments[-1] - moments[0]).total_seconds()
    if span < 2 * 86400:
        fmt = "%H:%M"
    else:
        fmt = "%Y-%m-%d" if moments[0].year != moments[-1].year else "%m-%d"
        ticks = min(ticks, int(span // 86400) + 1)
    ticks = max(2, min(ticks, len(moments)))
    step = max(1, (len(moments) - 1) // (ticks - 1)) if len(moments) > 1 else 1
    positions, labels = [], []
    for i in range(0, len(moments), step):
        label = moments[i].strftime(fmt)
        if label not in labels:  # buckets need not be evenly spaced: never repeat a label
            positions.append(i)
            labels.append(label)
    return positions, labels


def count_ticks(maximum: float, ticks: int) -> list[int]:
    """Whole-number tick values from 0 up to ``maximum`` in a round step (1, 2 or
    5 times a power of ten), at most ``ticks`` of them when a round step allows:
    request counts are never 201.2. The axis itself still ends at ``maximum``."""
    ticks = max(2, ticks)
    if maximum < 1:
        return [0, 1]  # an empty axis runs from 0 to 1
    steps = [m * 10**k for k in range(len(str(int(maximum)))) for m in (1, 2, 5)]
    fitting = [s for s in steps if s <= maximum]
    step = next((s for s in fitting if maximum // s + 1 <= ticks), fitting[-1])
    return list(range(0, int(maximum) + 1, step))


class _Chart(PlotextPlot):
    """A plot that redraws itself from stored data whenever its size changes."""

    def __init__(self, title: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.chart_title = title
        self._data: list = []
        self.placeholder = WAITING
        """What the chart says while it has nothing to plot."""
        self._version = 0
        self._cache_key: tuple | None = None
        self._cached: Text | None = None

    def _set_data(self, data: Sequence) -> None:
        self._data = list(data)
        self.placeholder = NO_REQUESTS  # an answer without data: no traffic
        self.redraw()

    def show_unavailable(self, reason: str) -> None:
        """Drop the data and say why there is none (e.g. the server is offline)."""
        self._data = []
        self.placeholder = reason
        self.redraw()

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
        """Whether there is anything to plot."""
        return bool(self._data)

    def render(self) -> Text:
        # Building a plotext figure takes tens of milliseconds: build once per
        # data, size and theme, not on every repaint (hover, focus, timers).
        key = (self._version, self.size, self.app.theme, self.theme)
        if key != self._cache_key or self._cached is None:
            if not self.has_data():
                self._cached = Text(f"{self.chart_title} – {self.placeholder}", style="dim", justify="center")
            else:
                self._cached = super().render()
            self._cache_key = key
        return self._cached

    def draw(self, plt) -> None:  # pragma: no cover - overridden
        """Draw the data on ``plt``."""

    def _points(self) -> int:
        return max(10, self.size.width - 10)

    def _count_ticks(self, maximum: float, ticks: int) -> tuple[list[int], list[str]]:
        values = count_ticks(maximum, ticks)
        return values, [format_count(value) for value in values]


class LatencyChart(_Chart):
    """min / avg / p95 / max latency per bucket."""

    def __init__(self, title: str = "Latency (ms, 2xx)", **kwargs) -> None:
        super().__init__(title, **kwargs)

    def set_series(self, buckets: Sequence[Bucket]) -> None:
        """Plot ``buckets``."""
        self._set_data(buckets)

    def draw(self, plt) -> None:
        buckets = thin(self._data, self._points())
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

    def set_series(self, buckets: Sequence[Bucket]) -> None:
        """Plot ``buckets``."""
        self._set_data(buckets)

    def draw(self, plt) -> None:
        buckets = thin(self._data, self._points())
        if not buckets:
            return
        xs = list(range(len(buckets)))
        plt.bar(xs, [b.total_requests for b in buckets], label="requests", color="blue", width=1, marker="hd")
        if any(b.error_count for b in buckets):
            plt.bar(xs, [b.error_count for b in buckets], label="errors", color="red", width=1, marker="hd")
        positions, labels = time_labels([b.bucket for b in buckets], max(2, self.size.width // 12))
        plt.xticks(positions, labels)
        largest = max(b.total_requests for b in buckets)
        plt.yticks(*self._count_ticks(largest, max(2, (self.size.height - 4) // 3)))
        plt.ylim(0, max(largest, 1))


class ConsumersChart(_Chart):
    """The heaviest consumers as horizontal bars."""

    def __init__(self, title: str = "Top consumers (requests)", top: int = 10, **kwargs) -> None:
        super().__init__(title, **kwargs)
        self.top = top

    def set_consumers(self, consumers: Sequence[ConsumerStat]) -> None:
        """Plot the first ``top`` of ``consumers``."""
        self._set_data(consumers)

    def draw(self, plt) -> None:
        rows = max(1, (self.size.height - 4) // 2) if self.size.height else self.top
        consumers = self._data[: min(self.top, rows)]
        if not consumers:
            return
        width = max(8, min(24, self.size.width // 4))
        names = [clean(c.consumer, width) or "(none)" for c in consumers][::-1]
        plt.bar(names, [c.total_requests for c in consumers][::-1], orientation="horizontal", width=0.3, color="cyan")
        largest = max(c.total_requests for c in consumers)
        plt.xticks(*self._count_ticks(largest, max(2, self.size.width // 12)))
        plt.xlim(0, max(largest, 1))
