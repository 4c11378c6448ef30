"""How much the Malti middleware costs an app, side by side with its peers.

Run:  .venv/bin/python benchmarks/sdk_overhead.py            (all parts, ~21 minutes)
      .venv/bin/python benchmarks/sdk_overhead.py inprocess  (one part: inprocess, delivery, uvicorn,
                                                              uvicorn-plain, uvicorn-fastapi,
                                                              uvicorn-fastapi-plain, uvicorn-breakdown,
                                                              uvicorn-fastapi-breakdown, stall, memory)

Benchmark-only dependencies (not needed by Malti itself):
    pip install malti-telemetry==1.0.4 starlette-exporter prometheus-fastapi-instrumentator \
        opentelemetry-instrumentation-asgi opentelemetry-sdk

Parts:
1. inprocess: a minimal Starlette app called through raw ASGI (no network), bare and
   wrapped by each middleware, interleaved in rounds; µs per request, overhead over
   bare, our overhead as a fraction of each peer's. Each wrapped run is checked to have
   recorded every request.
2. delivery: process CPU per request of the app with our middleware while the records
   are really delivered (to a stub ingest server), against the bare app.
3. uvicorn: the bare app and the app with our middleware (and malti-telemetry) under
   uvicorn, 8 requests in flight from a lean keep-alive client (asyncio protocols on
   uvloop, ~10 µs of CPU per request); ratio of requests/s, and the app process's CPU
   per request (its capacity ratio). The app server and the client are pinned to one
   core, the stub ingest server that receives the middleware's records to the other
   (on this VM, 8 requests ping-ponging between two cores leave both mostly idle: the
   figure would be wake-up latency). Every record must reach the stub: it prints
   records received against requests served, per variant. `uvicorn` runs uvicorn's fast
   stack (httptools + uvloop, as `uvicorn[standard]` and Malti's [server] extra install);
   `uvicorn-plain` the same on the pure-Python stack of a plain `pip install uvicorn`
   (h11 + asyncio), where a request costs the server several times more; `uvicorn-fastapi`
   and `uvicorn-fastapi-plain` the same with a minimal FastAPI app (a JSON answer). Two
   reference middlewares run beside ours, to show the floor on each stack: `pass-through`
   (an empty pure-ASGI layer) and `observer` (a layer that only wraps send to see the
   status and the end of the response, as any request telemetry must).
   `uvicorn-breakdown` measures where our cost goes inside one uvicorn process that
   serves, in turn, the bare app, the observer, ours with telemetry off, ours recording
   (rows discarded instead of sent) and ours delivering to the stub: separate processes
   differ by a few percent on their own, as much as the stages measured.
4. stall: the longest gap of a 1 ms ticker while 20,000 buffered records are sent
   (ours and malti-telemetry's).
5. memory: bytes per buffered record (tracemalloc), records made by real requests.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ROUNDS = 7
REQUESTS_PER_ROUND = 5_000

# ---------------------------------------------------------------------------- apps


def make_app():
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def user(request):
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/users/{user_id}", user)])


def scope_for(i: int) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": f"/users/{i % 1000}",
        "raw_path": f"/users/{i % 1000}".encode(),
        "query_string": b"",
        "root_path": "",
        # fresh bytes per request, as a server creates them
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"user-agent", b"bench/1.0"),
            (b"accept", b"*/*"),
            (b"x-consumer-id", b"web-app".replace(b"w", b"w")),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def _receive():
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message):
    pass


async def run_requests(app, count: int, offset: int = 0) -> float:
    """Seconds for ``count`` sequential requests through ``app``."""
    scopes = [scope_for(offset + i) for i in range(count)]
    start = time.perf_counter()
    for scope in scopes:
        await app(scope, _receive, _send)
    return time.perf_counter() - start


class Variant:
    def __init__(self, name, app, recorded, reset=lambda: None):
        self.name = name
        self.app = app
        self.recorded = recorded  # () -> number of requests the tool recorded
        self.reset = reset
        self.times: list[float] = []
        self.expected = 0


def drained_counter(rows):
    """(recorded, reset) for a tool that buffers records in ``rows``: reset empties it between rounds."""
    drained = [0]

    def recorded():
        return drained[0] + len(rows)

    def reset():
        drained[0] += len(rows)
        rows.clear()

    return recorded, reset


def build_variants():
    variants = [Variant("bare starlette", make_app(), lambda: None)]

    # ours
    from malti_sdk import MaltiMiddleware, TelemetryConfig, TelemetrySystem

    ours_system = TelemetrySystem(
        TelemetryConfig(
            api_key="bench",
            malti_url="http://127.0.0.1:9",
            batch_size=10**9,
            batch_interval=10**6,
            buffer_size=10**7,
            shutdown_timeout=0,
        )
    )
    app = make_app()
    app.add_middleware(MaltiMiddleware, telemetry_system=ours_system)
    variants.append(Variant("malti_sdk (ours)", app, *drained_counter(ours_system.batch_sender.buffer.rows)))

    # malti-telemetry 1.0.4
    try:
        os.environ.update(MALTI_API_KEY="bench", MALTI_URL="http://127.0.0.1:9", MALTI_BATCH_INTERVAL="1000000")
        root_handlers = list(logging.getLogger().handlers)
        import malti_telemetry
        from malti_telemetry import get_telemetry_system as original_system

        logging.getLogger().handlers[:] = root_handlers  # undo its logging.basicConfig
        logging.getLogger("malti_telemetry").setLevel(logging.WARNING)
        app = make_app()
        app.add_middleware(malti_telemetry.MaltiMiddleware)
        system = original_system()
        variants.append(Variant("malti-telemetry 1.0.4", app, *drained_counter(system.batch_sender.buffer._buffer)))
    except ImportError:
        print("  (malti-telemetry not installed: skipped)")
    finally:
        for key in ("MALTI_API_KEY", "MALTI_URL", "MALTI_BATCH_INTERVAL"):
            os.environ.pop(key, None)

    # prometheus-fastapi-instrumentator
    try:
        from prometheus_client import CollectorRegistry
        from prometheus_fastapi_instrumentator import Instrumentator

        registry = CollectorRegistry()
        app = make_app()
        Instrumentator(registry=registry).instrument(app)

        def pfi_count():
            total = 0.0
            for metric in registry.collect():
                if metric.name == "http_requests":
                    total += sum(s.value for s in metric.samples if s.name == "http_requests_total")
            return int(total)

        variants.append(Variant("prometheus-fastapi-instrumentator", app, pfi_count))
    except ImportError:
        print("  (prometheus-fastapi-instrumentator not installed: skipped)")

    # starlette-exporter
    try:
        from prometheus_client import REGISTRY
        from starlette_exporter import PrometheusMiddleware

        app = make_app()
        app.add_middleware(PrometheusMiddleware, app_name="bench", group_paths=True, prefix="bench_se")

        def se_count():
            total = 0.0
            for metric in REGISTRY.collect():
                if metric.name == "bench_se_requests":
                    total += sum(s.value for s in metric.samples if s.name == "bench_se_requests_total")
            return int(total)

        variants.append(Variant("starlette-exporter", app, se_count))
    except ImportError:
        print("  (starlette-exporter not installed: skipped)")

    # OpenTelemetry ASGI
    try:
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

        class CountingExporter(SpanExporter):
            count = 0

            def export(self, spans):
                type(self).count += sum(1 for s in spans if s.kind.name == "SERVER")
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        processor = BatchSpanProcessor(CountingExporter(), max_queue_size=100_000, schedule_delay_millis=200)
        provider.add_span_processor(processor)
        app = make_app()
        app.add_middleware(OpenTelemetryMiddleware, tracer_provider=provider)

        def otel_count():
            processor.force_flush()
            return CountingExporter.count

        variants.append(Variant("opentelemetry asgi", app, otel_count))
    except ImportError:
        print("  (opentelemetry-instrumentation-asgi not installed: skipped)")
    return variants


def part_inprocess() -> dict:
    print(f"\n== in-process: minimal Starlette app, raw ASGI calls, {ROUNDS} rounds x {REQUESTS_PER_ROUND} requests")
    variants = build_variants()

    async def main():
        for variant in variants:  # warm up (route index, caches, imports)
            await run_requests(variant.app, 500)
            variant.expected += 500
        for round_no in range(ROUNDS):
            order = variants if round_no % 2 == 0 else list(reversed(variants))
            for variant in order:
                variant.reset()  # buffering tools start each round empty
                gc.collect()
                variant.times.append(await run_requests(variant.app, REQUESTS_PER_ROUND, round_no * REQUESTS_PER_ROUND))
                variant.expected += REQUESTS_PER_ROUND
        for variant in variants:
            variant.got = variant.recorded()
            variant.reset()

    asyncio.run(main())
    bare = variants[0]
    per_request = {v.name: statistics.median(v.times) / REQUESTS_PER_ROUND * 1e6 for v in variants}
    best = {v.name: min(v.times) / REQUESTS_PER_ROUND * 1e6 for v in variants}
    base = per_request[bare.name]
    print(f"  {'variant':36} {'µs/req':>8} {'best':>8} {'overhead':>9}  recorded")
    overhead = {}
    for v in variants:
        ov = per_request[v.name] - base
        overhead[v.name] = ov
        check = "-" if v is bare else ("ok" if v.got == v.expected else f"MISMATCH {v.got}/{v.expected}")
        print(f"  {v.name:36} {per_request[v.name]:8.2f} {best[v.name]:8.2f} {ov:+9.2f}  {check}")
    ours = overhead.get("malti_sdk (ours)")
    if ours is not None:
        print("  our overhead as a fraction of each peer's:")
        for v in variants[2:]:
            peer = overhead[v.name]
            ratio = ours / peer if peer > 0 else float("nan")
            print(f"    vs {v.name:34} {ratio:6.1%}   ({ours:.2f} µs vs {peer:.2f} µs)")
    return overhead


# ------------------------------------------------------------------ uvicorn parts

STUB_INGEST = textwrap.dedent(
    """
    import json
    count = 0
    async def app(scope, receive, send):
        global count
        if scope["type"] == "lifespan":
            while True:
                m = await receive()
                if m["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"}); return
        body = b""
        while True:
            m = await receive()
            body += m.get("body", b"")
            if not m.get("more_body"):
                break
        if scope["path"] == "/count":
            out = str(count).encode()
        else:
            import gzip as g
            if (dict(scope["headers"]).get(b"content-encoding") == b"gzip"):
                body = g.decompress(body)
            n = body.count(b'"service":')  # cheap: this stub shares the 2 cores with the app
            count += n
            out = json.dumps({"message": "ok", "count": n, "service": "bench"}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": out})
    """
)

APP_MODULE = textwrap.dedent(
    """
    import os, logging
    from time import perf_counter
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    if os.environ.get("BENCH_APP") == "fastapi":
        from fastapi import FastAPI

        app = FastAPI()

        @app.get("/users/{user_id}")
        async def get_user(user_id: int):
            return {"id": user_id, "name": "user"}
    else:
        async def user(request):
            return PlainTextResponse("ok")

        app = Starlette(routes=[Route("/users/{user_id}", user)])


    class PassThrough:
        # reference: the cheapest pure-ASGI middleware there is (calls the app, nothing else)
        def __init__(self, app):
            self.app = app

        async def __call__(self, scope, receive, send):
            await self.app(scope, receive, send)


    class SendObserver:
        # reference: the least any request-telemetry middleware must do (see the status and
        # the end of the response through a wrapped send), recording and shipping nothing
        def __init__(self, app):
            self.app = app

        async def __call__(self, scope, receive, send):
            if scope["type"] != "http":
                return await self.app(scope, receive, send)
            start = perf_counter()
            status = 0
            end = 0.0

            def observe(message):
                nonlocal status, end
                if message["type"] == "http.response.start":
                    status = message["status"]
                elif not message.get("more_body"):
                    end = perf_counter()
                return send(message)

            await self.app(scope, receive, observe)
            return status, end - start


    variant = os.environ.get("BENCH_VARIANT", "")
    if variant.startswith("ours"):
        from malti_sdk import MaltiMiddleware
        app.add_middleware(MaltiMiddleware)
    elif variant == "original":
        import malti_telemetry
        logging.getLogger().setLevel(logging.WARNING)
        app.add_middleware(malti_telemetry.MaltiMiddleware)
    elif variant == "pass-through":
        app.add_middleware(PassThrough)
    elif variant == "observer":
        app.add_middleware(SendObserver)
    """
)

LEAN_CLIENT = textwrap.dedent(
    """
    # 8 keep-alive connections, one request in flight on each; asyncio protocols (on uvloop
    # when installed): about 10 µs of CPU per request, a third of the app's.
    import asyncio, sys, time
    try:
        import uvloop
    except ImportError:
        uvloop = None
    port, seconds, inflight = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    REQUESTS = [
        f"GET /users/{i} HTTP/1.1\\r\\nhost: x\\r\\nx-consumer-id: bench\\r\\n\\r\\n".encode() for i in range(1000)
    ]

    class Connection(asyncio.Protocol):
        def __init__(self, stop_at, done):
            self.stop_at, self.done = stop_at, done
            self.buffer, self.need, self.count, self.not_ok = b"", -1, 0, 0

        def connection_made(self, transport):
            self.transport = transport
            transport.write(REQUESTS[0])

        def data_received(self, data):
            buffer = self.buffer + data if self.buffer else data
            while True:
                if self.need < 0:
                    end = buffer.find(b"\\r\\n\\r\\n")
                    if end < 0:
                        break
                    at = buffer.find(b"content-length:", 0, end)
                    length = int(buffer[at + 15 : buffer.find(b"\\r\\n", at)]) if at >= 0 else 0
                    if not buffer.startswith(b"HTTP/1.1 200 "):
                        self.not_ok += 1
                    self.need = end + 4 + length
                if len(buffer) < self.need:
                    break
                buffer, self.need = buffer[self.need :], -1
                self.count += 1
                if time.perf_counter() < self.stop_at:
                    self.transport.write(REQUESTS[self.count % 1000])
                else:
                    self.transport.close()
            self.buffer = buffer

        def connection_lost(self, exc):
            if not self.done.done():
                self.done.set_result(None)

    async def main():
        loop = asyncio.get_running_loop()
        stop_at = time.perf_counter() + seconds
        connections = []
        for _ in range(inflight):
            connection = Connection(stop_at, loop.create_future())
            await loop.create_connection(lambda: connection, "127.0.0.1", port)
            connections.append(connection)
        await asyncio.gather(*(c.done for c in connections))
        print(sum(c.count for c in connections), sum(c.not_ok for c in connections))

    (uvloop.run if uvloop else asyncio.run)(main())
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def pinned_to(cpus: set[int] | None):
    """``preexec_fn`` that pins a child process (and its threads) to ``cpus``; None: no pinning."""
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def choose_cores() -> tuple[set[int] | None, set[int] | None]:
    """(cores of the app server and the load client, cores of the stub ingest server).

    The app and the client share the idler of two cores: on this kind of VM a request
    that crosses cores waits for a wake-up of the other core, and 8 requests in flight
    then leave both cores mostly idle (the figure would be wake-up latency, not CPU).
    On one core the pair is CPU-bound: the figure is the app's cost plus the client's
    (about a third of the bare app's). The stub runs on the other core.
    """
    if not hasattr(os, "sched_setaffinity"):
        return None, None
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None, None

    def idle_ticks() -> dict[int, int]:
        ticks = {}
        for line in Path("/proc/stat").read_text().splitlines():
            name = line.split()[0]
            if name.startswith("cpu") and name != "cpu":
                fields = [int(x) for x in line.split()[1:]]
                ticks[int(name[3:])] = fields[3] + fields[4]
        return ticks

    try:
        before = idle_ticks()
        time.sleep(0.5)
        after = idle_ticks()
        app_core = max(cores, key=lambda c: after.get(c, 0) - before.get(c, 0))
    except (OSError, ValueError, IndexError):
        app_core = cores[0]
    other = next(c for c in cores if c != app_core)
    return {app_core}, {other}


def start_uvicorn(
    workdir: str, module: str, port: int, env: dict, cpus: set[int] | None = None, log=None,
    extra: tuple[str, ...] = (),
) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            f"{module}:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
            *extra,
        ],
        cwd=workdir,
        env={**os.environ, **env, "PYTHONPATH": f"{workdir}:{ROOT}"},
        preexec_fn=pinned_to(cpus),
        stderr=log,
    )
    wait_port(port)
    return proc


def stop_process(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stub_count(port: int) -> int:
    import urllib.request

    return int(urllib.request.urlopen(f"http://127.0.0.1:{port}/count").read())


UVICORN_STACKS = {
    # what `pip install uvicorn[standard]` (and Malti's [server] extra) runs: C parser, uvloop
    "httptools+uvloop": ("--http", "httptools", "--loop", "uvloop"),
    # what a plain `pip install uvicorn` runs: pure-Python HTTP parser and asyncio's loop
    "h11+asyncio": ("--http", "h11", "--loop", "asyncio"),
}


def part_uvicorn_plain() -> None:
    part_uvicorn(stack="h11+asyncio")


def part_uvicorn_fastapi() -> None:
    part_uvicorn(app="fastapi")


def part_uvicorn_fastapi_plain() -> None:
    part_uvicorn(stack="h11+asyncio", app="fastapi")


#: reference middlewares run beside ours (see APP_MODULE): the floor of any pure-ASGI layer,
#: and of any layer that must see each response's status and end
REFERENCE_VARIANTS = ["pass-through", "observer"]


def part_uvicorn_breakdown() -> None:
    part_breakdown()


def part_uvicorn_fastapi_breakdown() -> None:
    part_breakdown(app="fastapi")


def part_uvicorn(
    seconds: float = 4.0,
    rounds: int = 5,
    stack: str = "httptools+uvloop",
    app: str = "starlette",
    variants: list[str] | None = None,
) -> None:
    extra = UVICORN_STACKS[stack]
    app_text = "a minimal Starlette app" if app == "starlette" else "a minimal FastAPI app (JSON response)"
    print(
        f"\n== end to end under uvicorn, {stack}, {app_text} (8 in flight, lean keep-alive client,"
        f" {rounds} rounds x {seconds:.0f} s)"
    )
    app_cpus, stub_cpus = choose_cores()
    if app_cpus:
        print(
            f"   app server and client pinned to core {min(app_cpus)}, stub ingest server to core {min(stub_cpus)};"
            " req/s ratio = (client + bare app CPU) / (client + this app CPU)"
        )
    else:
        print("   (no CPU pinning here: req/s is noisy, server CPU per request is the steadier figure)")
    print("   server CPU µs/req: the app process's own CPU (loop, threads, kernel) per request; bare/this = its capacity ratio")
    with tempfile.TemporaryDirectory() as workdir:
        Path(workdir, "bench_app.py").write_text(APP_MODULE)
        Path(workdir, "stub_ingest.py").write_text(STUB_INGEST)
        stub_port = free_port()
        stub = start_uvicorn(workdir, "stub_ingest", stub_port, {}, stub_cpus)
        log = open(Path(workdir, "app_stderr.log"), "wb")  # malti-telemetry logs a warning per request when behind
        try:
            env_common = {
                "MALTI_API_KEY": "bench",
                "MALTI_URL": f"http://127.0.0.1:{stub_port}",
                "MALTI_SERVICE_NAME": "bench",
                "BENCH_APP": app,
            }
            if variants is None:
                # ours-python: ours with the pure-Python request path and encoder (MALTI_SPEEDUPS=0)
                variants = ["bare", *REFERENCE_VARIANTS, "ours", "ours-python"]
                try:
                    import malti_telemetry  # noqa: F401

                    variants.append("original")
                except ImportError:
                    pass
            rps: dict[str, list[float]] = {v: [] for v in variants}
            cpu: dict[str, list[float]] = {v: [] for v in variants}
            sent = {v: 0 for v in variants}
            delivered = {v: 0 for v in variants}
            not_ok = 0

            def run_client(port: int, duration: float) -> tuple[int, int]:
                out = subprocess.run(
                    [sys.executable, "-c", LEAN_CLIENT, str(port), str(duration), "8"],
                    check=True,
                    capture_output=True,
                    text=True,
                    preexec_fn=pinned_to(app_cpus),
                )
                count, bad = out.stdout.split()
                return int(count), int(bad)

            for round_no in range(rounds):
                for variant in variants if round_no % 2 == 0 else variants[::-1]:
                    port = free_port()
                    count_before = stub_count(stub_port)
                    env = {**env_common, "BENCH_VARIANT": variant}
                    if variant == "ours-python":
                        env.update(BENCH_VARIANT="ours", MALTI_SPEEDUPS="0")
                    proc = start_uvicorn(
                        workdir,
                        "bench_app",
                        port,
                        env,
                        app_cpus,
                        log,
                        extra,
                    )
                    try:
                        warm, bad = run_client(port, 1.0)
                        cpu_before = cpu_seconds(proc.pid)
                        count, bad2 = run_client(port, seconds)
                        cpu_used = cpu_seconds(proc.pid) - cpu_before
                        rate = count / seconds
                        rps[variant].append(rate)
                        cpu[variant].append(cpu_used / count * 1e6)
                        sent[variant] += warm + count
                        not_ok += bad + bad2
                    finally:
                        stop_process(proc)  # lifespan shutdown: the middleware flushes what it holds
                    delivered[variant] += stub_count(stub_port) - count_before
            bare_rps = statistics.median(rps["bare"])
            bare_cpu = statistics.median(cpu["bare"])
            for variant in variants:
                r, c = statistics.median(rps[variant]), statistics.median(cpu[variant])
                # each round runs every variant back to back: its own ratio leaves out the
                # drift between rounds (the first figure, medians of all rounds, keeps it)
                paired = [x / b for x, b in zip(rps[variant], rps["bare"])]
                print(
                    f"  {variant:16} {r:7.0f} req/s (ratio to bare {r / bare_rps:5.3f}; per round: median"
                    f" {statistics.median(paired):5.3f}, {min(paired):5.3f}–{max(paired):5.3f})   "
                    f"server CPU {c:6.1f} µs/req (bare/this {bare_cpu / c:5.3f})   req/s rounds: "
                    + ", ".join(f"{x:.0f}" for x in rps[variant])
                )
            if "original" in variants:
                ours_cost = 1 / statistics.median(rps["ours"]) - 1 / bare_rps
                original_cost = 1 / statistics.median(rps["original"]) - 1 / bare_rps
                print(
                    f"  ours adds {ours_cost * 1e6:.1f} µs per request end to end, malti-telemetry"
                    f" {original_cost * 1e6:.1f}: ours is {ours_cost / original_cost:.2f} of malti-telemetry's"
                )
            if "observer" in variants:
                print(
                    "  (pass-through: an empty pure-ASGI middleware; observer: one that only wraps send to see"
                    " the status and the end of the response; neither records anything)"
                )
            for variant in ("ours", "ours-python", "original"):
                if variant not in variants:
                    continue
                check = "ok" if delivered[variant] == sent[variant] else "MISMATCH"
                print(
                    f"  {variant:16} records received by the stub ingest server: {delivered[variant]} "
                    f"of {sent[variant]} requests served ({check})"
                )
            if not_ok:
                print(f"  WARNING: {not_ok} answers were not 200")
        finally:
            log.close()
            stop_process(stub)


#: part uvicorn-breakdown: one uvicorn process serves several variants of the app in turn
ROTATION_APP = textwrap.dedent(
    """
    import asyncio, json, os, time
    import bench_app  # the minimal app, its reference middlewares (BENCH_VARIANT unset: bare)
    from bench_app import SendObserver
    from malti_sdk import MaltiMiddleware, TelemetryConfig, TelemetrySystem

    def fresh():
        # a new app instance from the module's factory text (each variant wraps its own)
        import importlib
        return importlib.reload(bench_app).app

    NAMES = os.environ["ROTATION_VARIANTS"].split(",")
    PHASE = float(os.environ["ROTATION_PHASE"])
    discarded = []  # buffers of ours-recording: emptied by the benchmark instead of sent
    APPS = []
    for name in NAMES:
        app = fresh()
        if name == "observer":
            app.add_middleware(SendObserver)
        elif name == "ours-disabled":
            system = TelemetrySystem(TelemetryConfig(api_key=None, malti_url="http://127.0.0.1:9"))
            app.add_middleware(MaltiMiddleware, telemetry_system=system)
        elif name == "ours-recording":
            system = TelemetrySystem(TelemetryConfig(
                api_key="bench", malti_url="http://127.0.0.1:9", batch_size=10**9,
                batch_interval=10**6, buffer_size=10**8))
            discarded.append(system.batch_sender.buffer.rows)
            app.add_middleware(MaltiMiddleware, telemetry_system=system)
        elif name == "ours":  # the process-wide system: MALTI_* of the environment, the stub
            app.add_middleware(MaltiMiddleware)
        APPS.append(app)

    current = [0]
    served = [0] * len(NAMES)  # every request, warm-up included (for the delivery check)
    measured = [0] * len(NAMES)
    cpu = [0.0] * len(NAMES)
    phases = [0] * len(NAMES)
    phase = {"cpu": None, "served": 0}

    def rotate():
        now = time.process_time()
        if phase["cpu"] is not None:
            i = current[0]
            cpu[i] += now - phase["cpu"]
            measured[i] += served[i] - phase["served"]
            phases[i] += 1
        current[0] = (current[0] + 1) % len(APPS)
        phase["cpu"], phase["served"] = time.process_time(), served[current[0]]
        asyncio.get_running_loop().call_later(PHASE, rotate)

    def discard():
        for rows in discarded:
            rows.clear()
        asyncio.get_running_loop().call_later(0.2, discard)

    def app(scope, receive, send):  # a plain function: no frame of its own per request
        if scope["type"] == "http":
            i = current[0]
            served[i] += 1
            return APPS[i](scope, receive, send)
        return lifespan(scope, receive, send)

    async def lifespan(scope, receive, send):
        # each variant gets the lifespan messages (our middleware starts and flushes there)
        inboxes, outboxes = [], []
        for variant_app in APPS:
            inbox, outbox = asyncio.Queue(), asyncio.Queue()
            asyncio.ensure_future(variant_app(dict(scope), inbox.get, outbox.put))
            inboxes.append(inbox)
            outboxes.append(outbox)
        while True:
            message = await receive()
            for inbox, outbox in zip(inboxes, outboxes):
                await inbox.put(message)
                await outbox.get()
            if message["type"] == "lifespan.startup":
                loop = asyncio.get_running_loop()
                loop.call_later(1.0, rotate)  # the first second (warm-up) is not measured
                loop.call_later(0.2, discard)
                await send({"type": "lifespan.startup.complete"})
            else:
                with open(os.environ["ROTATION_OUT"], "w") as out:
                    json.dump({"served": served, "measured": measured, "cpu": cpu, "phases": phases}, out)
                await send({"type": "lifespan.shutdown.complete"})
                return
    """
)

ROTATION_VARIANTS = ["bare", "observer", "ours-disabled", "ours-recording", "ours"]
ROTATION_STAGES = [
    ("observer", "bare", "the observer reference: a layer that wraps send, records nothing"),
    ("ours-disabled", "bare", "our layer with telemetry off (no API key): send wrapper, a settings look-up"),
    ("ours-recording", "ours-disabled", "recording: route, consumer, a row into the buffer"),
    ("ours", "ours-recording", "delivery: taking batches, JSON, gzip, keep-alive POSTs to the stub"),
    ("ours", "bare", "ours in all"),
]


def part_breakdown(
    processes: int = 3, seconds: float = 30.0, phase: float = 2.0, stack: str = "httptools+uvloop", app: str = "starlette"
) -> None:
    """Where our cost goes under uvicorn, measured inside one server process.

    Separate server processes per variant differ by a few percent on their own (memory
    layout, hash seeds, the machine's drift): as much as the stages measured here. So one
    process holds every variant and serves them in turn, ``phase`` seconds each, while
    the lean client keeps 8 requests in flight; each variant's server CPU per request is
    summed over its phases. The sender's work for records of one phase may spill into the
    next (at most one 0.2 s tick of a 2 s phase).
    """
    extra = UVICORN_STACKS[stack]
    print(
        f"\n== where our cost goes: one uvicorn process ({stack}, minimal {'FastAPI' if app == 'fastapi' else 'Starlette'} app) serving"
        f" {', '.join(ROTATION_VARIANTS)} in turn, {phase:.0f} s each;"
        f" {processes} processes x {seconds:.0f} s, 8 in flight"
    )
    app_cpus, stub_cpus = choose_cores()
    per_process: list[dict[str, float]] = []
    rates: list[dict[str, float]] = []
    served_ours = delivered_ours = 0
    with tempfile.TemporaryDirectory() as workdir:
        Path(workdir, "bench_app.py").write_text(APP_MODULE)
        Path(workdir, "rotation_app.py").write_text(ROTATION_APP)
        Path(workdir, "stub_ingest.py").write_text(STUB_INGEST)
        stub_port = free_port()
        stub = start_uvicorn(workdir, "stub_ingest", stub_port, {}, stub_cpus)
        try:
            for number in range(processes):
                port = free_port()
                out = Path(workdir, f"rotation{number}.json")
                env = {
                    "MALTI_API_KEY": "bench",
                    "MALTI_URL": f"http://127.0.0.1:{stub_port}",
                    "MALTI_SERVICE_NAME": "bench",
                    "ROTATION_VARIANTS": ",".join(ROTATION_VARIANTS),
                    "ROTATION_PHASE": str(phase),
                    "ROTATION_OUT": str(out),
                    "BENCH_APP": app,
                }
                before = stub_count(stub_port)
                proc = start_uvicorn(
                    workdir, "rotation_app", port, env, app_cpus, None, (*extra, "--interface", "asgi3")
                )
                try:
                    result = subprocess.run(
                        [sys.executable, "-c", LEAN_CLIENT, str(port), str(seconds), "8"],
                        check=True,
                        capture_output=True,
                        text=True,
                        preexec_fn=pinned_to(app_cpus),
                    )
                    if result.stdout.split()[1] != "0":
                        print(f"  WARNING: {result.stdout.split()[1]} answers were not 200")
                finally:
                    stop_process(proc)  # lifespan shutdown: ours flushes what it holds
                data = json.loads(out.read_text())
                served_ours += data["served"][ROTATION_VARIANTS.index("ours")]
                delivered_ours += stub_count(stub_port) - before
                cost = {
                    name: data["cpu"][i] / data["measured"][i] * 1e6 for i, name in enumerate(ROTATION_VARIANTS)
                }
                rate = {
                    name: data["measured"][i] / (data["phases"][i] * phase) for i, name in enumerate(ROTATION_VARIANTS)
                }
                per_process.append(cost)
                rates.append(rate)
                print(
                    f"  process {number + 1}: server CPU µs/req "
                    + ", ".join(f"{name} {cost[name]:.1f}" for name in ROTATION_VARIANTS)
                )
        finally:
            stop_process(stub)
    print("  stage (median over processes of the difference within each process)      µs/req")
    for variant, base, what in ROTATION_STAGES:
        diff = statistics.median(p[variant] - p[base] for p in per_process)
        spread = [round(p[variant] - p[base], 1) for p in per_process]
        print(f"    {what:74} {diff:+5.2f}   {spread}")
    print(
        "  requests/s relative to bare, phase by phase (client and app share a core): "
        + ", ".join(
            f"{name} {statistics.median(r[name] / r['bare'] for r in rates):.3f}" for name in ROTATION_VARIANTS[1:]
        )
    )
    check = "ok" if served_ours == delivered_ours else "MISMATCH"
    print(f"  ours: records received by the stub ingest server: {delivered_ours} of {served_ours} requests served ({check})")


class LoopStepMeter:
    """Longest event-loop step (one callback / task step), in CPU time of the loop thread.

    CPU time, unlike wall time, does not count the moments this 2-core machine's other
    processes take the core: it is what the step itself blocks the loop for.
    """

    def __init__(self):
        import asyncio.events as events

        self._events = events
        self._original = events.Handle._run
        self.longest = 0.0
        self.active = False

    def __enter__(self):
        meter, original = self, self._original

        def run(handle):
            start = time.thread_time()
            original(handle)
            if meter.active:
                meter.longest = max(meter.longest, time.thread_time() - start)

        self._events.Handle._run = run
        return self

    def __exit__(self, *exc):
        self._events.Handle._run = self._original


async def _ticker(stop: asyncio.Event, gaps: list[float]) -> None:
    last = time.perf_counter()
    while not stop.is_set():
        await asyncio.sleep(0.001)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now


async def _baseline_gap(seconds: float = 0.5) -> float:
    stop, gaps = asyncio.Event(), []
    task = asyncio.create_task(_ticker(stop, gaps))
    await asyncio.sleep(seconds)
    stop.set()
    await task
    return max(gaps)


def part_stall(records: int = 20_000) -> None:
    print(f"\n== event-loop stall while {records} buffered records are sent to a stub ingest server")
    print("   longest loop step = CPU time of the longest callback on the loop (what blocks the app);")
    print("   ticker gap = longest wall-clock gap of a 1 ms ticker (includes this machine's scheduling noise)")
    with tempfile.TemporaryDirectory() as workdir:
        Path(workdir, "stub_ingest.py").write_text(STUB_INGEST)
        stub_port = free_port()
        stub = start_uvicorn(workdir, "stub_ingest", stub_port, {})
        try:
            url = f"http://127.0.0.1:{stub_port}"

            async def measure(fill, deliver):
                baseline = await _baseline_gap()
                system = await fill()
                stop, gaps = asyncio.Event(), []
                with LoopStepMeter() as meter:
                    tick = asyncio.create_task(_ticker(stop, gaps))
                    await asyncio.sleep(0.02)
                    meter.active = True
                    start = time.perf_counter()
                    await deliver(system)
                    took = time.perf_counter() - start
                    meter.active = False
                    stop.set()
                    await tick
                return meter.longest * 1000, max(gaps) * 1000, baseline * 1000, took, system.get_stats()["total_sent"]

            async def ours_fill():
                from malti_sdk import TelemetryConfig, TelemetrySystem

                system = TelemetrySystem(
                    TelemetryConfig(api_key="bench", malti_url=url, service_name="bench", batch_interval=3600)
                )
                await system.start()
                await asyncio.sleep(0.5)  # the sender is up (as after the app's startup)
                for i in range(records):
                    system.record_request("GET", "/users/{user_id}", 200, 0.5 + i % 7, f"consumer-{i % 50}")
                return system

            async def ours_deliver(system):
                while system.get_stats()["total_sent"] < records:  # full batches go out as soon as seen
                    await asyncio.sleep(0.002)

            async def original_fill():
                os.environ.update(MALTI_API_KEY="bench", MALTI_URL=url, MALTI_BATCH_INTERVAL="1000000")
                import malti_telemetry.core as core

                logging.getLogger().setLevel(logging.WARNING)
                system = core.TelemetrySystem()
                system.batch_sender.buffer = core.TelemetryBuffer(max_size=records + 1)
                system.batch_sender.overflow_threshold = records + 1
                await system.start()
                for i in range(records):
                    system.record_request("GET", "/users/{user_id}", 200, 1, f"consumer-{i % 50}")
                return system

            async def original_deliver(system):
                await system.stop()  # sends everything buffered, as its interval timer would

            results = [("malti_sdk (ours)", asyncio.run(measure(ours_fill, ours_deliver)))]
            try:
                results.append(("malti-telemetry 1.0.4", asyncio.run(measure(original_fill, original_deliver))))
            except ImportError:
                pass
            for name, (step, gap, baseline, took, sent) in results:
                print(
                    f"  {name:22} longest loop step {step:6.2f} ms   ticker gap {gap:6.2f} ms "
                    f"(idle baseline {baseline:5.2f} ms)   {sent} sent in {took:.2f} s"
                )
        finally:
            stop_process(stub)


def part_delivery(requests: int = 40_000, rounds: int = 3) -> None:
    print(f"\n== full cost in process: middleware + delivery to a stub ingest server ({rounds} rounds x {requests})")
    print("   process CPU per request (loop thread, any worker thread and kernel), bare vs ours")
    with tempfile.TemporaryDirectory() as workdir:
        Path(workdir, "stub_ingest.py").write_text(STUB_INGEST)
        stub_port = free_port()
        stub = start_uvicorn(workdir, "stub_ingest", stub_port, {})
        try:
            from malti_sdk import MaltiMiddleware, TelemetryConfig, TelemetrySystem

            system = TelemetrySystem(
                TelemetryConfig(api_key="bench", malti_url=f"http://127.0.0.1:{stub_port}", service_name="bench")
            )
            ours = make_app()
            ours.add_middleware(MaltiMiddleware, telemetry_system=system)
            bare = make_app()

            async def drive(app) -> float:
                start = time.process_time()
                for offset in range(0, requests, 100):
                    await run_requests(app, 100, offset)
                    await asyncio.sleep(0)  # let the sender run, as an idle moment of a server would
                return (time.process_time() - start) / requests * 1e6

            async def main():
                await system.start()
                await asyncio.sleep(0.5)
                cpu = {"bare": [], "ours": []}
                for _ in range(rounds):
                    cpu["bare"].append(await drive(bare))
                    cpu["ours"].append(await drive(ours))
                await system.stop()
                return cpu

            cpu = asyncio.run(main())
            bare_cpu, ours_cpu = statistics.median(cpu["bare"]), statistics.median(cpu["ours"])
            stats = system.get_stats()
            print(
                f"  bare {bare_cpu:.2f} µs/req   ours incl. delivery {ours_cpu:.2f} µs/req   "
                f"(+{ours_cpu - bare_cpu:.2f} µs; {stats['total_sent']}/{stats['total_added']} records delivered)"
            )
            for server_cost in (50.0, 100.0):
                ratio = (server_cost + bare_cpu) / (server_cost + ours_cpu)
                print(f"  with {server_cost:.0f} µs of server CPU per request: ours/bare throughput ≈ {ratio:.3f}")
        finally:
            stop_process(stub)


def part_memory(records: int = 100_000) -> None:
    import tracemalloc

    from malti_sdk import MaltiMiddleware, TelemetryConfig, TelemetrySystem

    print(f"\n== memory per buffered record ({records} records made by requests, tracemalloc)")
    system = TelemetrySystem(
        TelemetryConfig(
            api_key="bench",
            malti_url="http://127.0.0.1:9",
            batch_size=10**9,
            batch_interval=10**6,
            buffer_size=10**7,
            shutdown_timeout=0,
        )
    )
    app = make_app()
    app.add_middleware(MaltiMiddleware, telemetry_system=system)

    async def main():
        await run_requests(app, 100)  # warm caches
        system.batch_sender.buffer.rows.clear()
        gc.collect()
        # traced from before the requests' scopes exist: what the buffer keeps of them (each
        # row holds its request's consumer header value) counts, the rest is freed below
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        scopes = [scope_for(i) for i in range(records)]
        for scope in scopes:  # distinct consumer header objects, as from a real server
            scope["headers"][3] = (b"x-consumer-id", f"consumer-{len(scope['path']) % 7}".encode())
        for scope in scopes:
            await app(scope, _receive, _send)
        del scopes
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        n = len(system.batch_sender.buffer.rows)
        print(
            f"  {(after - before) / n:.0f} bytes per buffered record ({n} buffered); "
            f"default buffer of {TelemetryConfig().buffer_size} records ≈ "
            f"{(after - before) / n * TelemetryConfig().buffer_size / 1e6:.0f} MB when full"
        )

    asyncio.run(main())
    system.batch_sender.buffer.rows.clear()


PARTS = {
    "inprocess": part_inprocess,
    "delivery": part_delivery,
    "uvicorn": part_uvicorn,
    "uvicorn-plain": part_uvicorn_plain,
    "uvicorn-fastapi": part_uvicorn_fastapi,
    "uvicorn-fastapi-plain": part_uvicorn_fastapi_plain,
    "uvicorn-breakdown": part_uvicorn_breakdown,
    "uvicorn-fastapi-breakdown": part_uvicorn_fastapi_breakdown,
    "stall": part_stall,
    "memory": part_memory,
}


if __name__ == "__main__":
    chosen = sys.argv[1:] or list(PARTS)
    for name in chosen:
        PARTS[name]()
