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
from sdk_support import collector_runs_at_next_allocation

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
    with collector_runs_at_next_allocation(Recorder, count=20):
        taken = store.take(3000)
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


def test_take_gives_a_large_ring_back_and_keeps_what_is_left():
    store, mirror = speedups.RowStore(), deque()
    for i in range(70_000):  # a ring of 131,072 slots
        row = ("GET", f"/{i}", 200, float(i), "anonymous", None, 1.0)
        store.append(row)
        mirror.append(row)
    assert store.take(62_000) == [mirror.popleft() for _ in range(62_000)]  # 8,000 left: shrinks
    for i in range(20_000):
        row = ("GET", f"/n{i}", 200, float(i), "anonymous", None, 1.0)
        store.append(row)
        mirror.append(row)
    assert list(store) == list(mirror) and store.take(10**9) == list(mirror)


def test_the_collector_frees_cycles_through_odd_rows_and_taken_rows():
    class Context:
        pass

    store = speedups.RowStore()  # a row kept as it is (a list) that refers back to the store
    context = Context()
    context.store = store
    store.append([context])
    alive = weakref.ref(context)
    del context, store
    gc.collect()
    assert alive() is None

    store = speedups.RowStore()  # a taken row in a cycle: it must be tracked
    context = Context()
    store.append(("GET", "/a", 200, 1.0, "c", context, 2.0))
    (row,) = store.take(1)
    context.row = row
    alive = weakref.ref(context)
    del context, row
    gc.collect()
    assert alive() is None


@pytest.mark.parametrize("meddle", ["clear", "fill"])
def test_code_run_by_a_scope_look_up_cannot_break_the_store_record_writes_to(meddle):
    """Looking "headers" up in the scope may run a colliding key's __eq__, which may
    change the store: record() must make room for its row only after that."""
    async def send(message):
        return None

    store = speedups.RowStore()
    route = object()
    snapshot = (store, 10**6, False, {id(route): (route, "/r")})

    class Key:
        armed = False

        def __hash__(self):
            return hash("headers")

        def __eq__(self, other):
            if Key.armed:
                Key.armed = False
                if meddle == "clear":
                    store.clear()
                else:  # the ring's room used up
                    while len(store) < 256:
                        store.append(("GET", "/filler", 200, 1.0, "anonymous", None, 2.0))
            return False

    scope = {Key(): "x"}  # met first on the probe chain of "headers"
    scope.update({"type": "http", "method": "GET", "route": route, "headers": [], "root_path": ""})
    for i in range(5):
        store.append(("GET", f"/old/{i}", 200, 1.0, "anonymous", None, 2.0))
    watch = speedups.watch(send, scope)
    watch({"type": "http.response.start", "status": 200}).close()
    watch({"type": "http.response.body", "body": b""}).close()
    Key.armed = True
    assert speedups.record(watch, scope, snapshot) is True
    assert not Key.armed, "the key's __eq__ did not run: the test proves nothing"
    endpoints = [row[1] for row in store.take(10**6)]
    if meddle == "clear":
        assert endpoints == ["/r"]
    else:
        assert endpoints[:5] == [f"/old/{i}" for i in range(5)] and endpoints[-1] == "/r"
        assert len(endpoints) == 257


@pytest.mark.parametrize("operation", ["take", "popleft", "iter", "extendleft", "append"])
def test_a_failed_allocation_leaves_every_row_in_place(operation):
    """Out of memory part-way through an operation: MemoryError, and the store holds
    exactly the rows it held, each object's references as they were."""
    _testcapi = pytest.importorskip("_testcapi")
    if not hasattr(_testcapi, "set_nomemory"):
        pytest.skip("no allocation-failure hook in this build")
    import sys

    class Context:
        pass

    failures = 0
    hog = [(float(i), (i,) * 7) for i in range(100_000)]  # the float and tuple free lists emptied
    for nth in range(0, 400, 3):
        context = Context()
        rows = [[i, "odd"] if i % 5 == 4 else ("GET", f"/p{i}", 200, float(i), "anonymous", context, 2.0 + i)
                for i in range(300)]
        store = speedups.RowStore()
        for row in rows[:200]:
            store.append(row)
        store.take(150)  # the oldest row mid-ring, so later rows wrap around
        for row in rows[200:]:
            store.append(row)
        before = list(store)
        references = sys.getrefcount(context)
        _testcapi.set_nomemory(nth, nth + 1)
        try:
            if operation == "take":
                store.take(120)
            elif operation == "popleft":
                store.popleft()
            elif operation == "iter":
                iter(store)
            elif operation == "extendleft":
                store.extendleft([("X", "/x", 1, 1.0, "a", None, 1.0)] * 200)
            else:
                for _ in range(200):
                    store.append(("A", "/a", 1, 1.0, "a", None, 1.0))
        except MemoryError:
            failed = True
        else:
            failed = False
        finally:
            _testcapi.remove_mem_hooks()
        if not failed:
            continue
        failures += 1
        after = list(store)
        assert (after[: len(before)] if operation == "append" else after) == before
        del after
        assert sys.getrefcount(context) == references
    del hog
    assert failures, "no allocation failed inside the operation: the test proves nothing"


def test_the_buffer_takes_any_count_as_the_deque_path_does():
    system = TelemetrySystem(TelemetryConfig(api_key="k", malti_url="http://127.0.0.1:9", batch_interval=3600))
    buffer = system.batch_sender.buffer
    for i in range(3):
        system.record_request(method="GET", endpoint=f"/e/{i}", status=200, response_time=1.0, consumer="c")
    assert buffer.take(-(10**30)) == [] and len(buffer.take(2**64)) == 3


def test_a_long_chain_of_stores_is_freed_without_deep_recursion():
    """Each store holding a row that holds the previous one: freed like a deque chain,
    not one C stack frame per link (run in a thread with a small stack, in a child
    process, so a regression fails this test instead of crashing the run)."""
    import subprocess
    import sys

    code = (
        "import threading\n"
        "from malti_sdk._records import speedups\n"
        "threading.stack_size(512 * 1024)\n"
        "def chain():\n"
        "    head = speedups.RowStore()\n"
        "    for _ in range(100_000):\n"
        "        store = speedups.RowStore()\n"
        "        store.append(('GET', head, 200, 1.0, 'anonymous', None, 2.0))\n"
        "        head = store\n"
        "    del store, head\n"
        "thread = threading.Thread(target=chain)\n"
        "thread.start()\n"
        "thread.join()\n"
        "print('freed')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "freed", done.stderr[-2000:]


def test_the_collector_walks_the_store_only_while_a_row_holds_a_tracked_object():
    """Rows of strs, ints, bytes and None hold nothing a cycle can go through: a collection
    skips the ring then (gc.get_referents shows what it walks). One row with a container
    makes it walk the ring until that row leaves, however the other rows come and go."""

    class Context:
        pass

    store = speedups.RowStore()
    plain = [("GET", f"/p{i}", 200, 1.0, b"c" if i % 2 else "anonymous", None, 2.0) for i in range(10)]
    for row in plain:
        store.append(row)
    assert gc.get_referents(store) == []
    context = Context()
    context.store = store
    store.append(("GET", "/held", 200, 1.0, "anonymous", context, 2.0))
    assert context in gc.get_referents(store)
    store.take(5)  # plain rows leave: the held one still counts
    assert context in gc.get_referents(store)
    store.extendleft(reversed(store.take(10**6)))  # out and back in again
    assert context in gc.get_referents(store)
    alive = weakref.ref(context)
    del context
    gc.collect()
    assert alive() is not None  # held by the store's row
    rows = store.take(10**6)
    assert gc.get_referents(store) == [] and rows[-1][5] is alive()
    for row in plain:  # counted right through all of that: plain rows are skipped again
        store.append(row)
    assert gc.get_referents(store) == []
    rows[-1][5].store = store  # the cycle again, now through a taken row and back
    store.extendleft([rows[-1]])
    del rows, store
    gc.collect()
    assert alive() is None
