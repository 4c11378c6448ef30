"""The bounded buffer between request handling and the sender.

Its rows are a ``RowStore`` (malti_sdk/_speedups.c: compact slots, no Python objects per
buffered request) or, without the compiled module, a ``collections.deque`` of tuples.
Both are changed atomically under the GIL, so any thread or event loop may add records
without a lock. It never drops silently: when full, a new record is refused and counted
under ``dropped["overflow"]``.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from ._records import Row, TelemetryRecord, speedups

#: the rows' container: the compiled one when the module is used
_Rows: Any = speedups.RowStore if speedups is not None else deque


#: drop reasons of records that never entered the buffer (they still count as added).
REFUSED_BEFORE_BUFFERING = ("overflow", "invalid", "error")


class TelemetryBuffer:
    """Thread-safe bounded buffer of telemetry records (the original package's name and methods)."""

    def __init__(self, max_size: int = 10_000) -> None:
        if max_size < 1:
            raise ValueError("max_size must be >= 1")
        self.rows: Any = _Rows()  # append, popleft, extendleft, clear, len, iteration
        self._capacity = max_size
        self.on_change: Any = None  # called when the capacity changes (the sender's snapshot hook)
        self.labels: Any = None  # () -> (service, node) of the sender that owns the buffer
        self._lock = threading.Lock()  # only for the rare counters; appends need none
        self.taken = 0  # rows handed to the sender so far (only the sender takes)
        self.total_sent = 0
        self.dropped: dict[str, int] = {}

    @property
    def capacity(self) -> int:
        """How many rows the buffer holds at most."""
        return self._capacity

    @capacity.setter
    def capacity(self, value: int) -> None:
        self._capacity = value
        if self.on_change is not None:
            self.on_change()

    # -- request side ---------------------------------------------------------
    def offer(self, row: Row) -> bool:
        """Add a row; False (and counted as overflow) when the buffer is full."""
        rows = self.rows
        if len(rows) < self.capacity:
            rows.append(row)
            return True
        self.count_dropped("overflow", 1)
        return False

    def add(self, record: TelemetryRecord | Row) -> None:
        """Add a record (a :class:`TelemetryRecord` or a buffered row)."""
        self.offer(record.to_row() if isinstance(record, TelemetryRecord) else tuple(record))

    # -- sender side ----------------------------------------------------------
    def take(self, count: int) -> list[Row]:
        """Remove and return up to ``count`` of the oldest rows."""
        rows = self.rows
        if type(rows) is not deque and hasattr(rows, "take"):  # the RowStore: all at once
            batch = rows.take(count)
            self.taken += len(batch)
            return batch
        popleft = rows.popleft
        batch = []
        append = batch.append
        for _ in range(min(count, len(rows))):
            try:
                append(popleft())
            except IndexError:  # another consumer emptied it meanwhile
                break
        self.taken += len(batch)
        return batch

    def put_back(self, batch: list[Row]) -> None:
        """Return rows to the front, oldest first (used when a stopped sender hands over)."""
        self.rows.extendleft(reversed(batch))
        self.taken -= len(batch)

    def count_dropped(self, reason: str, count: int) -> None:
        if count <= 0:
            return
        with self._lock:
            self.dropped[reason] = self.dropped.get(reason, 0) + count

    def count_sent(self, count: int) -> None:
        with self._lock:
            self.total_sent += count

    # -- the original package's interface -------------------------------------
    def get_batch(self, batch_size: int) -> list[TelemetryRecord]:
        """Remove and return up to ``batch_size`` records, with the owning sender's service and node."""
        service, node = self.labels() if self.labels is not None else ("", None)
        return [TelemetryRecord.from_row(row, service, node) for row in self.take(batch_size)]

    def size(self) -> int:
        return len(self.rows)

    def is_empty(self) -> bool:
        return not self.rows

    @property
    def maxlen(self) -> int:
        return self.capacity

    def update_stats(self, sent: int = 0, failed: int = 0) -> None:
        if sent:
            self.count_sent(sent)
        if failed:
            self.count_dropped("failed", failed)

    def get_stats(self) -> dict[str, Any]:
        with self._lock:
            dropped = dict(self.dropped)
            sent = self.total_sent
        size = len(self.rows)
        refused = sum(dropped.get(reason, 0) for reason in REFUSED_BEFORE_BUFFERING)
        failed = sum(dropped.values())
        return {
            "total_added": self.taken + size + refused,
            "total_sent": sent,
            "total_failed": failed,
            "current_size": size,
            "max_size": self.capacity,
            "total_dropped": failed,
            "dropped": dropped,
        }
