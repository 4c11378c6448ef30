"""The compiled request path (malti_sdk/_speedups.c) against the pure-Python one.

The Python path owns the rules; the compiled one must record exactly what it records
(timings aside) and count exactly what it counts, for any request, and hand everything
it does not understand back to it.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import sysconfig
import zlib
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route

from sdk_support import collector_runs_at_next_allocation

from malti_sdk import MaltiMiddleware, TelemetryConfig, TelemetrySystem
from malti_sdk import _middleware, _records


def test_the_extension_is_built_where_a_compiler_is():
    headers = Path(sysconfig.get_paths()["include"], "Python.h")
    if os.name != "posix" or not (shutil.which("cc") or shutil.which("gcc")) or not headers.exists():
        pytest.skip("no C compiler or Python headers: the SDK runs its pure-Python request path")
    if _records._load_speedups() is None and os.environ.get("MALTI_SPEEDUPS") is not None:
        pytest.skip("switched off by MALTI_SPEEDUPS")
    assert _middleware._speedups is not None, "pip install -e . should have built malti_sdk._speedups"
    assert isinstance(vars(MaltiMiddleware)["__call__"], _middleware._speedups.CallMethod)
    assert _records._encode is not None


def test_the_switch_and_a_stale_build_fall_back_to_python(monkeypatch, caplog):
    if _middleware._speedups is None:
        pytest.skip("malti_sdk._speedups is not built here")
    for off in ("0", "false", "OFF", "nonsense"):  # read like every MALTI_* switch
        monkeypatch.setenv("MALTI_SPEEDUPS", off)
        assert _records._load_speedups() is None
    monkeypatch.setenv("MALTI_SPEEDUPS", "yes")
    assert _records._load_speedups() is _middleware._speedups
    monkeypatch.delenv("MALTI_SPEEDUPS")
    # built from another version of the C source: not used, and said so
    monkeypatch.setattr(_records, "SPEEDUPS_VERSION", _records.SPEEDUPS_VERSION + 1)
    assert _records._load_speedups() is None
    assert "another version" in caplog.text


def _app(system: TelemetrySystem) -> Starlette:
    async def ok(request):
        return PlainTextResponse("ok")

    async def status(request):
        return Response(status_code=int(request.path_params["code"]))

    async def stated(request):
        kind = request.path_params["kind"]
        if kind == "consumer":
            request.state.malti_consumer = "from-state"
        elif kind == "context":
            request.state.context = "ctx"
        elif kind == "empty":
            request.state.malti_consumer = ""
        return PlainTextResponse("ok")

    async def stream(request):
        async def body():
            for piece in (b"a", b"b", b"c"):
                yield piece

        return StreamingResponse(body())

    async def nothing(scope, receive, send):  # returns without a response: recorded as 500
        return None

    app = Starlette(
        routes=[
            Route("/ok", ok, methods=["GET", "POST", "PATCH", "M1!", "get", "FOO"]),
            Route("/status/{code:int}", status),
            Route("/state/{kind}", stated),
            Route("/stream", stream),
            Mount("/api/v2", routes=[Route("/posts/{post_id}", ok)]),
            Mount("/raw", app=nothing),
        ]
    )
    app.add_middleware(MaltiMiddleware, telemetry_system=system)
    return app


NAMES = [b"x-consumer-id", b"x-user-id", b"consumer-id", b"user-id", b"x-forwarded-for", b"host", b"accept"]
VALUES = [b"", b"alice", b"bob", b"10.0.0.1"]
PATHS = ["/ok", "/status/200", "/status/201", "/status/401", "/status/404", "/status/503", "/status/599",
         "/state/consumer", "/state/context", "/state/empty", "/state/none", "/stream", "/api/v2/posts/7",
         "/nowhere", "/raw"]
METHODS = ["GET", "GET", "POST", "PATCH", "M1!", "get", "FOO"]


def _requests(seed: int, count: int) -> list[tuple[str, str, list]]:
    rng = random.Random(seed)
    result = []
    for _ in range(count):
        headers = [(rng.choice(NAMES), rng.choice(VALUES)) for _ in range(rng.randint(0, 5))]
        if rng.random() < 0.05:
            headers = [list(h) for h in headers]  # lists, not tuples: the Python path's job
        result.append((rng.choice(METHODS), rng.choice(PATHS), headers))
    return result


async def _run(requests, clean_mode: bool) -> tuple[list, dict]:
    system = TelemetrySystem(TelemetryConfig(
        api_key="k", service_name="s", malti_url="http://127.0.0.1:9", batch_interval=3600,
        shutdown_timeout=0, clean_mode=clean_mode))
    app = _app(system)
    try:
        for method, path, headers in requests:
            scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                     "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
                     "query_string": b"", "headers": headers, "client": ("127.0.0.1", 5), "server": ("t", 80)}
            sent = []
            received = []

            async def receive():
                if received:  # after the body: nothing more until the response is done
                    await asyncio.Future()
                received.append(1)
                return {"type": "http.request", "body": b"", "more_body": False}

            async def send(message):
                sent.append(message)

            await app(scope, receive, send)
        rows = [(m, e, s, c, ctx) for m, e, s, rt, c, ctx, created in system.batch_sender.buffer.rows]
        times = [rt for _, _, _, rt, _, _, _ in system.batch_sender.buffer.rows]
        assert all(isinstance(t, float) and 0 <= t < 10_000 for t in times)
        stats = system.get_stats()
        return rows, {"dropped": stats["dropped"], "total_added": stats["total_added"]}
    finally:
        await system.stop()


@pytest.mark.parametrize("seed", range(6))
async def test_compiled_and_python_paths_record_the_same(seed):
    if _middleware._speedups is None:
        pytest.skip("malti_sdk._speedups is not built here")
    requests = _requests(seed, 400)
    clean_mode = seed % 2 == 0
    try:
        _middleware._use_speedups(None)
        expected = await _run(requests, clean_mode)
        _middleware._use_speedups(_middleware._speedups)
        handed_back = []  # requests the compiled common case left to Python
        completed = MaltiMiddleware._completed

        def counting(self, scope, watch):
            handed_back.append(scope)
            return completed(self, scope, watch)

        MaltiMiddleware._completed = counting
        try:
            got = await _run(requests, clean_mode)
        finally:
            MaltiMiddleware._completed = completed
    finally:
        _middleware._use_speedups(_middleware._speedups)
    assert got == expected
    assert len(expected[0]) > 200
    assert len(requests) - len(handed_back) > 100  # the compiled common case really ran


def test_compiled_record_refuses_what_it_does_not_understand():
    if _middleware._speedups is None:
        pytest.skip("malti_sdk._speedups is not built here")
    from collections import deque

    speedups = _middleware._speedups

    async def send(message):
        return None

    route = object()
    rows: deque = deque()
    snapshot = (rows, 10, True, {id(route): (route, "/r")})
    base = {"type": "http", "method": "GET", "route": route, "headers": [(b"x-user-id", b"u")], "root_path": ""}

    def finished(scope, status=200):
        watch = speedups.watch(send, scope)
        watch(  # a coroutine-less send: the inner send's awaitable comes back
            {"type": "http.response.start", "status": status}).close()
        watch({"type": "http.response.body", "body": b""}).close()
        return watch

    assert speedups.record(finished(base), base, snapshot) is True
    assert rows[-1][:3] == ("GET", "/r", 200) and rows[-1][4] == b"u" and rows[-1][5] is None
    for scope, status in [
        ({**base, "state": {"malti_consumer": "x"}}, 200),
        ({**base, "state": {"context": "x"}}, 200),
        ({**base, "method": "BREW"}, 200),  # not a known method yet: normalised by Python
        ({**base, "route": object()}, 200),
        ({**base, "headers": [[b"x-user-id", b"u"]]}, 200),
        ({**base, "headers": [(b"x-user-id", "text")]}, 200),
        ({**base, "headers": ((b"a", b"b") for _ in range(1))}, 200),
        ({**base, "root_path": "/mounted", "app_root_path": ""}, 200),
        (base, 600),
        (base, True),
    ]:
        before = len(rows)
        assert speedups.record(finished(scope, status), scope, snapshot) is False, scope
        assert len(rows) == before
    unfinished = speedups.watch(send, base)
    assert speedups.record(unfinished, base, snapshot) is False
    # clean mode: 404 and 401 are handled (ignored) without a row
    before = len(rows)
    assert speedups.record(finished(base, 404), base, snapshot) is True
    assert len(rows) == before
    # a full buffer is the Python path's (it counts the overflow)
    full = (deque(range(10)), 10, True, snapshot[3])
    assert speedups.record(finished(base), base, full) is False
    with pytest.raises(TypeError):
        speedups.record(object(), base, snapshot)


def _adversarial_rows(seed: int, count: int) -> list[tuple]:
    rng = random.Random(seed)
    times = [0.0, -0.0, 0.0005, 0.0015, 0.0025, 1.0005, 2.5e-4, 999.9995, 123.4565, 1e9 - 0.0005, 1e9, 1e9 + 0.5,
             5e11, 1e12, 1e300, -1.0, -0.0004, float("inf"), float("-inf"), float("nan"), 1e-300, 0.1 + 0.2]
    createds = [1_764_900_000.0, 1_764_900_000.9999995, 1_764_900_000.999999, 0.0, -0.5, -1.25, 1e-7,
                253402300799.999999, 1_764_900_001.0000004]
    rows = []
    for i in range(count):
        response_time = rng.choice(times) if rng.random() < 0.4 else rng.random() * 10 ** rng.randint(-4, 10)
        created = rng.choice(createds) if rng.random() < 0.3 else 1_764_900_000 + rng.random() * 5
        rows.append((
            rng.choice(["GET", "POST", "OTHER"]),
            rng.choice(["/a", '/q"u\u00e9%s/{x}', "/100%", "/a\\b", "/\u2603"]),
            rng.choice([200, 404, 500, True]),
            response_time,
            rng.choice(["anonymous", b"web%d", b"\xe9t\xe9", "", "\x00nul"]),
            rng.choice([None, "ctx%", 'with "quotes"']),
            created,
        ))
    return rows


@pytest.mark.parametrize("seed", range(8))
def test_compiled_encoder_writes_the_same_bytes(seed, monkeypatch):
    from malti_sdk import _records

    if _records._encode is None:
        pytest.skip("malti_sdk._speedups is not built here")
    rows = _adversarial_rows(seed, 3000)
    compiled = _records.RecordEncoder()
    python = _records.RecordEncoder()
    for size in (1, 2, 7, 100, 101, 1000):
        for start in range(0, len(rows), size):
            chunk = rows[start : start + size]
            got = compiled.encode_rows(chunk, "svc%d", "node")
            with monkeypatch.context() as patch:
                patch.setattr(_records, "_encode", None)
                expected = python.encode_rows(chunk, "svc%d", "node")
            assert got == expected, chunk


def test_compiled_encoder_leaves_odd_rows_to_python():
    from malti_sdk import _records

    if _records._encode is None:
        pytest.skip("malti_sdk._speedups is not built here")
    encoder = _records.RecordEncoder()
    good = ("GET", "/a", 200, 1.5, "anonymous", None, 1_764_900_000.25)
    for odd in [
        ("GET", "/a", 200, 2, "anonymous", None, 1_764_900_000.25),  # an int response time
        ("GET", "/a", 200, 1.5, "anonymous", None, 1_764_900_000),  # an int timestamp
        ["GET", "/a", 200, 1.5, "anonymous", None, 1_764_900_000.25],  # a list
        ("GET", "/a", 200, 1.5, "anonymous", None, 1e16),  # beyond what C converts exactly
    ]:
        assert _records._encode([good, odd], encoder._prefixes, encoder._prefix, encoder._stamp) is None
        text = encoder.encode_rows([good, odd], "s", None)  # Python encodes it
        assert text.count('"created_at"') == 2
    assert _records._encode((good,), {}, encoder._prefix, encoder._stamp).startswith('{"service":"s"')
    assert _records._encode([], {}, encoder._prefix, encoder._stamp) == ""
    assert _records._encode(iter([good]), {}, encoder._prefix, encoder._stamp) is None
    with pytest.raises(ValueError):  # int(nan), as in Python
        encoder.encode_rows([("GET", "/a", 200, 1.5, "anonymous", None, float("nan"))], "s", None)


def _varied_rows(seed: int, count: int) -> list[tuple]:
    """Rows of 150 keys, each seen again and again at every distance: more than the memo's
    and the writer's slots, prefixes of every length from about 130 to 530 bytes (gzip
    back-references of every length, longer than one too), consumers equal in value but
    not the same object, seconds that change and go back; and the adversarial rows above."""
    rng = random.Random(seed)
    endpoints = [f"/e{i}/{{x}}" for i in range(40)] + ["/" + "l" * k for k in range(400)]
    consumers = ["anonymous", b"web", b"wob", "w\u00e9b", b"", b"\x00", b"\x00\x00"]
    keys = [
        (rng.choice(["GET", "POST"]), rng.choice(endpoints), rng.choice([200, 201, 404]), rng.choice(consumers),
         rng.choice([None, "ctx", "c" * 300]))
        for _ in range(150)
    ]
    adversarial = _adversarial_rows(seed, count)
    rows = []
    clock = 1_764_900_000.0
    for i in range(count):
        if rng.random() < 0.1:
            rows.append(adversarial[i])
            continue
        clock += rng.choice([0.0001, 0.001, 0.3, 1.2, -2.0])
        method, endpoint, status, consumer, context = rng.choice(keys)
        if isinstance(consumer, bytes):
            consumer = bytes(bytearray(consumer))  # as a header's value: a new object each time
        rows.append((method, endpoint, status, rng.random() * 10 ** rng.randint(-3, 4), consumer, context, clock))
    return rows


def _python_body(rows, monkeypatch) -> bytes:
    with monkeypatch.context() as patch:
        patch.setattr(_records, "_encode", None)
        return _records.RecordEncoder().encode_body(rows, "svc", "node")


def _inflate(body: bytes) -> bytes:
    """The text of a gzip member, strictly: one complete member, nothing after it."""
    import zlib

    inflater = zlib.decompressobj(31)
    text = inflater.decompress(body)
    assert inflater.eof and not inflater.unused_data
    return text


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("count", [101, 2_000, 7_000])
def test_gzip_writer_bodies_inflate_to_the_python_text(seed, count, monkeypatch):
    if _records._GzipWriter is None:
        pytest.skip("malti_sdk._speedups is not built here")
    rows = _varied_rows(seed, count)
    encoder = _records.RecordEncoder()
    body, gzipped = asyncio.run(encoder.encode_body_async(rows, "svc", "node", True))
    assert gzipped
    assert _inflate(body) == _python_body(rows, monkeypatch)
    # prefixes dropped and made again mid-batch: the writer's remembered places are hints only
    monkeypatch.setattr(encoder, "_PREFIX_LIMIT", 7)
    body, _ = asyncio.run(encoder.encode_body_async(rows, "svc", "node", True))
    assert _inflate(body) == _python_body(rows, monkeypatch)


def test_gzip_writer_takes_chunks_the_compiled_encoder_leaves_to_python(monkeypatch):
    if _records._GzipWriter is None:
        pytest.skip("malti_sdk._speedups is not built here")
    rows = [("GET", "/a", 200, i / 3, "anonymous", None, 1_764_900_000 + i / 100) for i in range(350)]
    rows[150] = ("GET", "/a", 200, 2, "anonymous", None, 1_764_900_001.5)  # an int response time: chunk 2
    rows[0] = ("GET", "/a", 200, 2, "anonymous", None, 1_764_900_000.5)  # and chunk 1
    body, gzipped = asyncio.run(_records.RecordEncoder().encode_body_async(rows, "svc", "node", True))
    assert gzipped and _inflate(body) == _python_body(rows, monkeypatch)


def test_gzip_writer_back_references_reach_exactly_the_window():
    """A repeat 32,768 bytes back is a back-reference, 32,769 back is written out."""
    if _records._GzipWriter is None:
        pytest.skip("malti_sdk._speedups is not built here")
    encoder = _records.RecordEncoder()
    encoder._use_head("svc", None)
    row = ("GET", "/p" + "q" * 300, 200, 1.0, "anonymous", None, 1_764_900_000.25)
    one = encoder.encode_rows([row], "svc", None)
    sizes = {}
    for distance in (32_767, 32_768, 32_769):
        writer = _records._GzipWriter()
        assert writer.write_rows([row], encoder._prefixes, encoder._prefix, encoder._stamp, False)
        pad = distance - len(one) - 1  # the next prefix starts after the padding and ","
        writer.write(b"z" * pad)
        assert writer.write_rows([row], encoder._prefixes, encoder._prefix, encoder._stamp, True)
        body = writer.finish()
        assert _inflate(body) == (one + "z" * pad + "," + one).encode()
        sizes[distance] = len(body) - pad  # a literal "z" is 8 bits: the padding weighs its length
    assert sizes[32_769] > sizes[32_768] + 100  # the second prefix written out, not referenced


@pytest.mark.parametrize("simd", [True, False], ids=["carry-less-multiply", "table"])
def test_gzip_crc32_is_zlibs_at_every_length_and_offset(simd):
    if _records._GzipWriter is None:
        pytest.skip("malti_sdk._speedups is not built here")
    from malti_sdk import _speedups

    rng = random.Random(7)
    data = bytes(rng.getrandbits(8) for _ in range(70_000))
    lengths = [*range(0, 260), 1023, 4096, 65_536, 69_990]
    for length in lengths:
        offset = rng.randrange(16)  # unaligned starts as well
        view = memoryview(data)[offset : offset + length]
        for value in (0, 1, 0x9E3779B9, 0xFFFFFFFF):
            assert _speedups.crc32(view, value, simd) == zlib.crc32(view, value), (length, offset, value)
    # chained over pieces, as the writer adds each chunk's text
    crc = 0
    for start in range(0, len(data), 777):
        crc = _speedups.crc32(data[start : start + 777], crc, simd)
    assert crc == zlib.crc32(data)


def test_gzip_writer_refuses_calls_from_its_own_callbacks():
    if _records._GzipWriter is None:
        pytest.skip("malti_sdk._speedups is not built here")
    encoder = _records.RecordEncoder()
    encoder._use_head("svc", None)
    writer = _records._GzipWriter()
    rows = [("GET", "/a", 200, 1.5, "anonymous", None, 1_764_900_000.25)]

    def reentrant(key):
        writer.write(b"y" * 100_000)  # would trim the window under write_rows

    with pytest.raises(RuntimeError):
        writer.write_rows(rows, {}, reentrant, encoder._stamp, False)
    assert writer.size == 0
    assert writer.write_rows(rows, encoder._prefixes, encoder._prefix, encoder._stamp, False)
    assert _inflate(writer.finish()) == encoder.encode_rows(rows, "svc", None).encode()


def test_gzip_writer_output_is_read_by_gzip_1(tmp_path, monkeypatch):
    import subprocess

    if _records._GzipWriter is None or shutil.which("gzip") is None:
        pytest.skip("needs malti_sdk._speedups and gzip(1)")
    rows = _varied_rows(11, 5_000)
    body, _ = asyncio.run(_records.RecordEncoder().encode_body_async(rows, "svc", "node", True))
    Path(tmp_path, "body.gz").write_bytes(body)
    # another inflater than zlib's, which also checks the CRC-32 and the length
    text = subprocess.run(["gzip", "-dc", str(tmp_path / "body.gz")], check=True, capture_output=True).stdout
    assert text == _python_body(rows, monkeypatch)


def test_gzip_writer_compresses_repeats_and_keeps_odd_chunks_out():
    if _records._GzipWriter is None:
        pytest.skip("malti_sdk._speedups is not built here")
    encoder = _records.RecordEncoder()
    encoder._use_head("svc", None)
    rows = [("GET", "/users/{id}", 200, i / 7, b"bench", None, 1_764_900_000 + i / 1000) for i in range(1000)]
    writer = _records._GzipWriter()
    writer.write(b"[")
    assert writer.write_rows(rows[:500], encoder._prefixes, encoder._prefix, encoder._stamp, False) is True
    # a chunk with an odd row (an int response time) is refused whole, nothing of it written
    size = writer.size
    odd = ("GET", "/a", 200, 2, "anonymous", None, 1_764_900_000.25)
    assert writer.write_rows([rows[0], odd], encoder._prefixes, encoder._prefix, encoder._stamp, True) is False
    assert writer.size == size
    assert writer.write_rows(iter(rows), encoder._prefixes, encoder._prefix, encoder._stamp, True) is False
    with pytest.raises(ZeroDivisionError):  # a failing callback: raised, nothing written
        writer.write_rows(rows[:5], {}, lambda key: 1 / 0, encoder._stamp, True)
    assert writer.size == size
    assert writer.write_rows(rows[500:], encoder._prefixes, encoder._prefix, encoder._stamp, True) is True
    writer.write(memoryview(b"]"))
    body = writer.finish()
    text = _inflate(body)
    assert len(text) == writer.size
    assert text == ("[" + encoder.encode_rows(rows, "svc", None) + "]").encode()
    assert len(body) < len(text) / 5  # the prefixes and seconds went as back-references
    for call in (writer.finish, lambda: writer.write(b"x")):
        with pytest.raises(ValueError):
            call()
    with pytest.raises(TypeError):
        _records._GzipWriter(1)
    assert _inflate(_records._GzipWriter().finish()) == b""


class _Raw:
    """A raw ASGI endpoint for Route (a plain function would be a request/response one)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        await self.app(scope, receive, send)


def _finished_watch(speedups, scope, status=200):
    async def send(message):
        return None

    watch = speedups.watch(send, scope)
    watch({"type": "http.response.start", "status": status}).close()
    watch({"type": "http.response.body", "body": b""}).close()
    return watch


def test_compiled_record_follows_a_rebuilt_index_and_the_consumer_header_ranks():
    """The C path remembers look-ups in the route index by route: a new index (a rebuild
    replaces the dict) must be looked up again, and a route not in it is not recorded."""
    if _middleware._speedups is None:
        pytest.skip("malti_sdk._speedups is not built here")
    from collections import deque

    speedups = _middleware._speedups
    routes = [object() for _ in range(20)]  # more than the remembered slots
    rows: deque = deque()
    first = {id(r): (r, f"/old/{i}") for i, r in enumerate(routes)}
    rebuilt = {id(r): (r, f"/new/{i}") for i, r in enumerate(routes[:10])}
    headers = [(b"host", b"x"), (b"user", b"no"), (b"user-id", b"d"), (b"x-user-ix", b"no"), (b"consumer-id", b"c"),
               (b"x-user", b"no"), (b"x-user-id", b"b"), (b"user-id", b"e"), (b"x-consumer-ix", b"no"),
               (b"x-consumer-id-2", b"no")]
    for index, expected in [(first, "/old/"), (rebuilt, "/new/"), (first, "/old/")]:
        for round_ in range(2):  # the second round finds what the first remembered
            for i, route in enumerate(routes):
                scope = {"type": "http", "method": "GET", "route": route, "headers": headers, "root_path": ""}
                handled = speedups.record(_finished_watch(speedups, scope), scope, (rows, 10**6, False, index))
                assert handled is (id(route) in index)
                if handled:
                    # the best-ranked consumer header (x-user-id), wherever it comes
                    assert rows[-1][1] == f"{expected}{i}" and rows[-1][4] == b"b"
    scope = {"type": "http", "method": "GET", "route": routes[0], "headers": [(b"user-id", b"")], "root_path": ""}
    assert speedups.record(_finished_watch(speedups, scope), scope, (rows, 10**6, False, first)) is True
    assert rows[-1][4] == "anonymous"  # an empty header is no consumer
    # one route, recorded twice in a row (remembered for sure), then under new indexes
    route = object()
    scope = {"type": "http", "method": "GET", "route": route, "headers": [], "root_path": ""}
    for index, expected in [({id(route): (route, "/a")}, "/a"), ({id(route): (route, "/b")}, "/b"), ({}, None)]:
        for _ in range(2):
            handled = speedups.record(_finished_watch(speedups, scope), scope, (rows, 10**6, False, index))
            assert handled is (expected is not None)
            if handled:
                assert rows[-1][1] == expected


def test_a_collection_during_record_cannot_free_what_the_row_takes():
    """On 3.11 allocating the row may run finalizers; one that empties the headers must not
    leave the row holding a freed consumer (it reads the headers after the allocation)."""
    from collections import deque

    speedups = _middleware._speedups
    if speedups is None:
        pytest.skip("malti_sdk._speedups is not built here")
    route = object()
    rows: deque = deque()
    snapshot = (rows, 10**6, False, {id(route): (route, "/r")})
    width = len(b"x" * 40)  # not a constant: the header value is freed with the header list
    headers = [(b"x-user-id", b"consumer-" + b"x" * width)]
    scope = {"type": "http", "method": "GET", "route": route, "headers": headers, "root_path": ""}
    watch = _finished_watch(speedups, scope)
    kept = []

    class Trap:
        def __del__(self):
            scope["headers"].clear()
            size = len(b"consumer-")  # not a constant: fresh objects that reuse the freed memory
            kept.append([b"Z" * size + b"y" * 40 for _ in range(50)])

    drain = [tuple([i] * 7) for i in range(5000)]  # no free 7-tuples: the row is a fresh allocation
    with collector_runs_at_next_allocation(Trap):
        assert speedups.record(watch, scope, snapshot) is True
    assert kept, "the finalizer did not run during record(): the test proves nothing"
    assert rows[-1][4] in ("anonymous", b"consumer-" + b"x" * width)
    del drain


def test_app_code_run_by_the_state_test_cannot_change_the_checked_status():
    from collections import deque

    speedups = _middleware._speedups
    if speedups is None:
        pytest.skip("malti_sdk._speedups is not built here")
    route = object()
    rows: deque = deque()
    snapshot = (rows, 100, False, {id(route): (route, "/r")})
    holder = {}

    class State:
        def __bool__(self):
            return True

        def __contains__(self, key):
            holder["watch"]({"type": "http.response.start", "status": "not-a-status"}).close()
            holder["watch"]({"type": "http.response.body", "body": b"", "more_body": True}).close()
            return False

    scope = {"type": "http", "method": "GET", "route": route, "headers": [], "root_path": "", "state": State()}
    watch = holder["watch"] = _finished_watch(speedups, scope)
    assert speedups.record(watch, scope, snapshot) is True
    assert rows[-1][2] == 200 and rows[-1][3] >= 0


@pytest.mark.usefixtures("request_path")
async def test_send_by_keyword_and_a_frozen_clock(monkeypatch):
    """``send(message=...)`` works as with the server's own send, and a replaced
    ``_middleware.time`` (freezegun, a test's clock) dates the records on both paths."""
    system = TelemetrySystem(TelemetryConfig(api_key="k", malti_url="http://127.0.0.1:9", batch_interval=3600,
                                             shutdown_timeout=0))

    async def app(scope, receive, send):
        await send(message={"type": "http.response.start", "status": 201, "headers": []})
        await send(message={"type": "http.response.body", "body": b"ok"})

    starlette = Starlette(routes=[Route("/k", _Raw(app))])
    starlette.add_middleware(MaltiMiddleware, telemetry_system=system)
    monkeypatch.setattr("malti_sdk._middleware.time", lambda: 1_600_000_000.5)
    try:
        for _ in range(3):  # the first takes the slow path, the others the common case
            scope = {"type": "http", "method": "GET", "path": "/k", "root_path": "", "query_string": b"",
                     "headers": [], "http_version": "1.1", "scheme": "http", "server": ("t", 80)}

            async def receive():
                return {"type": "http.request", "body": b""}

            sent = []

            async def send(message):
                sent.append(message)

            await starlette(scope, receive, send)
            assert sent[0]["status"] == 201
        rows = list(system.batch_sender.buffer.rows)
        assert [(r[1], r[2], r[6]) for r in rows] == [("/k", 201, 1_600_000_000.5)] * 3
    finally:
        await system.stop()


@pytest.mark.usefixtures("request_path")
@pytest.mark.parametrize("status", [None, "200", 200.0])
async def test_an_odd_status_never_reaches_the_app(status):
    system = TelemetrySystem(TelemetryConfig(api_key="k", malti_url="http://127.0.0.1:9", batch_interval=3600,
                                             shutdown_timeout=0))

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    starlette = Starlette(routes=[Route("/odd", _Raw(app)), Route("/ok", lambda r: PlainTextResponse("ok"))])
    starlette.add_middleware(MaltiMiddleware, telemetry_system=system)
    try:
        for path in ("/ok", "/ok", "/odd", "/odd"):  # the snapshot exists before the odd ones
            scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "query_string": b"",
                     "headers": [], "http_version": "1.1", "scheme": "http", "server": ("t", 80)}

            async def receive():
                return {"type": "http.request", "body": b""}

            async def send(message):
                return None

            await starlette(scope, receive, send)
        stats = system.get_stats()
        assert stats["total_added"] == 4
        recorded = [r[2] for r in system.batch_sender.buffer.rows]
        assert recorded[:2] == [200, 200]
        # None: no response started, a 500 (as for any app that sends none); "200": counted, not
        # sent (the server would refuse the batch); 200.0: a number, sent as 200
        expected = {None: ([500, 500], {}), "200": ([], {"error": 2}), 200.0: ([200.0, 200.0], {})}[status]
        assert (recorded[2:], stats["dropped"]) == expected
    finally:
        await system.stop()
