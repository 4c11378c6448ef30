"""The buffer's compiled row store (``RowStore`` in malti_sdk/_speedups.c) against a deque.

The store keeps the usual row as plain fields and makes the tuple again when a row is
taken; it must hand back exactly what went in, in order, whatever the mix of operations,
and stay consistent when code runs in the middle of one (finalizers, a failing iterable).
"""

from __future__ import annotations

import gc
import random
import weakref
from collections import deque

import pytest

from malti_sdk import TelemetryConfig, TelemetrySystem, _buffer, _records

speedups = _records.speedups
pytestmark = pytest.mark.skipif(speedups is None, reason="malti_sdk._speedups is not built here")


def _row(rng: random.Random, number: int):
    kind = rng.random()
    if kind < 0.8:  # the request path's row: kept in parts
        consumer = rng.choice(["anonymous", b"bytes-consumer", "c" * rng.randint(1, 40)])
        context = rng.choice([None, None, "ctx", {"k": number}])
        return (rng.choice(["GET", "POST"]), f"/r/{number % 13}", rng.choice([200, 404, 503]),
                rng.random() * 1e3, consumer, context, 1.7e9 + number / 7)
    if kind < 0.9:  # a replaced clock's row: created is no float, kept as it is
        return ("GET", "/f", 200, 1.5, "anonymous", None, f"frozen-{number}")
    return rng.choice([[number, "a list"], (number,), ("GET", "/x", 200, 1, "int elapsed", None, 2.0)])


@pytest.mark.parametrize("seed", range(10))
def test_a_row_store_does_what_a_deque_does(seed):
    rng = random.Random(seed)
    store, mirror = speedups.RowStore(), deque()
    number = 0
    for _ in range(400):
        operation = rng.random()
        if operation < 0.45:
            for _ in range(rng.choice([1, 3, 100, 700, 5000])):  # grows through several sizes
                row = _row(rng, number)
                number += 1
                store.append(row)
                mirror.append(row)
        elif operation < 0.75:
            count = rng.choice([0, 1, 50, 500, 3000, 10**9])
            taken = store.take(count)
            expected = [mirror.popleft() for _ in range(min(count, len(mirror)))]
            assert taken == expected
            # rows of another shape come back as the very objects given
            assert all(a is b for a, b in zip(taken, expected) if type(b) is not tuple or len(b) != 7)
        elif operation < 0.85 and mirror:
            assert store.popleft() == mirror.popleft()
        elif operation < 0.95:
            back = [_row(rng, number + i) for i in range(rng.choice([1, 10, 600]))]
            number += len(back)
            store.extendleft(reversed(back))  # TelemetryBuffer.put_back: back to the front in order
            mirror.extendleft(reversed(back))
        elif operation < 0.97:
            store.clear()
            mirror.clear()
        assert len(store) == len(mirror) and bool(store) == bool(mirror)
    assert list(store) == list(mirror)
    assert len(store) == len(mirror)  # iterating copies: nothing taken


def test_a_row_store_keeps_the_exact_values():
    store = speedups.RowStore()
    created = 1_733_390_000.123456789
    store.append(("GET", "/a", 200, 0.1 + 0.2, b"c", None, created))
    (row,) = store.take(1)
    assert row == ("GET", "/a", 200, 0.1 + 0.2, b"c", None, created)
    assert row[3] == 0.30000000000000004 and row[6] == created  # the same doubles, bit for bit
    assert store.take(5) == [] and store.take(-1) == []
    with pytest.raises(IndexError):
        store.popleft()
    with pytest.raises(TypeError):
        store.take("1")
    with pytest.raises(TypeError):
        speedups.RowStore(10)


def test_a_failing_iterable_leaves_the_store_as_it_was():
    store = speedups.RowStore()
    store.append(("GET", "/a", 200, 1.0, "a", None, 2.0))

    def rows():
        yield ("GET", "/b", 200, 1.0, "a", None, 2.0)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        store.extendleft(rows())
    assert [r[1] for r in store] == ["/a"]


def test_finalizers_that_record_during_take_and_clear_find_the_store_consistent():
    """Making a taken row's tuple may run the collector, and dropping a cleared row's
    context may run its finalizer; either may record a request into the same store."""
    store = speedups.RowStore()
    ran = []

    class Recorder:
        def __del__(self):
            ran.append(1)
            store.append(("GET", "/from-finalizer", 200, 1.0, "anonymous", None, 3.0))

    for i in range(3000):
        store.append(("GET", f"/r/{i % 5}", 200, float(i), "anonymous", None, 2.0))
    threshold = gc.get_threshold()
    gc.collect()
    gc.disable()
    for _ in range(20):  # cyclic garbage with finalizers, left for the collector
        recorder = Recorder()
        recorder.cycle = recorder
        del recorder
    gc.set_threshold(1)
    gc.enable()
    try:
        taken = store.take(3000)
    finally:
        gc.set_threshold(*threshold)
    assert ran, "no finalizer ran during take(): the test proves nothing"
    assert [r[3] for r in taken] == [float(i) for i in range(3000)]
    assert [r[1] for r in store] == ["/from-finalizer"] * len(ran)

    ran.clear()
    store.append(("GET", "/held", 200, 1.0, "anonymous", Recorder(), 2.0))  # freed by clear()
    store.clear()
    assert ran == [1] and [r[1] for r in store] == ["/from-finalizer"]


def test_the_collector_sees_through_the_store():
    """A row's context that refers back to the store forms a cycle the collector frees."""

    class Context:
        pass

    store = speedups.RowStore()
    context = Context()
    context.store = store
    store.append(("GET", "/a", 200, 1.0, "anonymous", context, 2.0))
    alive = weakref.ref(context)
    del context, store
    gc.collect()
    assert alive() is None


def test_the_buffer_holds_a_row_store_and_takes_from_it():
    system = TelemetrySystem(TelemetryConfig(api_key="k", malti_url="http://127.0.0.1:9", batch_interval=3600))
    buffer = system.batch_sender.buffer
    assert type(buffer.rows) is speedups.RowStore and _buffer._Rows is speedups.RowStore
    for i in range(5):
        system.record_request(method="GET", endpoint=f"/e/{i}", status=200, response_time=1.25, consumer="c")
    assert buffer.get_stats()["current_size"] == 5
    taken = buffer.take(3)
    assert [row[1] for row in taken] == ["/e/0", "/e/1", "/e/2"]
    buffer.put_back(taken)
    assert [row[1] for row in buffer.rows] == [f"/e/{i}" for i in range(5)]
    assert buffer.get_stats()["total_added"] == 5
    records = buffer.get_batch(10)  # the original package's interface reads the same rows
    assert [r.endpoint for r in records] == [f"/e/{i}" for i in range(5)] and buffer.is_empty()
