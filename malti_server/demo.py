"""``malti-server --demo``: everything Malti does, on one machine, from one command.

1. an embedded PostgreSQL in a temporary folder (or ``--data-dir``; or ``--database-url``, never
   a ``DATABASE_URL`` from the environment, which may be a production database),
2. a demo configuration with fresh random keys (three services, one user ``demo``),
3. the Malti server itself (``python -m malti_server``, a child process),
4. a sample API of three services on five nodes (``malti_server.demo_app``, one process per node,
   instrumented with ``app.add_middleware(MaltiMiddleware)`` and ``MALTI_*`` variables),
5. a traffic generator driving that API over HTTP (daily rhythm, slow endpoints, error bursts,
   dozens of consumers, contexts),
6. 30 days of history with the same patterns, sent through ``POST /api/v1/ingest`` in big batches,

then it prints the keys and the exact ``malti-tui`` / notebook / curl commands. Ctrl-C (or SIGTERM)
stops the generator, the sample API (which flushes its telemetry), the server and PostgreSQL, and
removes a temporary data folder.

Tuning by environment (for tests and slow machines):
``MALTI_DEMO_BACKFILL`` records of history (default 300000, 0 for none),
``MALTI_DEMO_BACKFILL_DAYS`` (default 30), ``MALTI_DEMO_RATE`` live requests per second at the
daily peak (default 4).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .demo_app import CONSUMERS, SERVICES, Endpoint, Service, incident, rhythm

USER = "demo"
BATCH = 5000  # records per backfill batch (the server accepts up to 10,000)
IN_FLIGHT = 2  # backfill batches sent at once
DEFAULT_BACKFILL = 300_000
DEFAULT_DAYS = 30
DEFAULT_RATE = 4.0


class DemoError(Exception):
    """Something stopped the demo from starting; the message says what."""


def _env_number(name: str, default: float, kind=float) -> Any:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise DemoError(f"{name}={raw!r} is not a number") from None
    if value < 0:
        raise DemoError(f"{name} must not be negative")
    return value


def _say(text: str = "") -> None:
    print(text, flush=True)


def _local_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        try:
            import ctypes  # noqa: PLC0415

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except Exception:  # best effort: the parent stops its children anyway
            pass


def demo_config(services: list[Service], user: str) -> tuple[str, dict[str, str]]:
    """The demo's configuration file (random keys) and its keys (name -> key)."""
    from .config import example_config  # noqa: PLC0415

    return example_config(
        [s.name for s in services],
        [user],
        descriptions={s.name: s.description for s in services},
        title="Malti demo configuration, written by `malti-server --demo` (keys are random).",
    )


# ---------------------------------------------------------------------------------------------
# History: records drawn from the traffic model, vectorised with numpy.


def history_batches(total: int, days: float, end: float, epoch: float, seed: int = 7):
    """Yield ``(service, records)`` batches of at most BATCH records covering ``days`` before ``end``.

    Traffic grows toward today (a young product), follows the daily rhythm, has the services'
    small error bursts plus a few big incidents, and the same endpoints, nodes, consumers and
    latency distributions as the live sample API.
    """
    import numpy as np  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    start = end - days * 86400
    minutes = np.arange(math.ceil(start / 60), math.floor(end / 60), dtype=np.int64) * 60
    if total <= 0 or minutes.size == 0:
        return
    age_days = (end - minutes) / 86400.0
    load = np.array([rhythm(float(t)) for t in minutes[::5]]).repeat(5)[: minutes.size]
    weight = (0.2 + 0.8 * np.exp(-age_days / 2.0)) * load
    counts = rng.poisson(weight * (total / weight.sum()))
    times = np.repeat(minutes, counts).astype(np.float64) + rng.uniform(0, 60, counts.sum())
    times = times[times < end]

    # A few big incidents in the history: (service index, start, end).
    big = []
    for _ in range(max(1, int(days // 10))):
        at = end - rng.uniform(1.5, max(days - 0.5, 2.0)) * 86400
        big.append((int(rng.integers(len(SERVICES))), at, at + rng.uniform(20, 50) * 60))

    consumer_names = np.array([c for c, _ in CONSUMERS], dtype=object)
    consumer_p = np.array([w for _, w in CONSUMERS], dtype=np.float64)
    consumer_p /= consumer_p.sum()
    shares = np.array([s.share for s in SERVICES])
    service_of = rng.choice(len(SERVICES), size=times.size, p=shares / shares.sum())

    for si, service in enumerate(SERVICES):
        t = np.sort(times[service_of == si])
        n = t.size
        if n == 0:
            continue
        ep_w = np.array([e.weight for e in service.endpoints])
        ep_idx = rng.choice(len(service.endpoints), size=n, p=ep_w / ep_w.sum())
        node_idx = rng.integers(len(service.nodes), size=n)
        node_names = np.array([name for name, _ in service.nodes], dtype=object)[node_idx]
        node_factor = np.array([f for _, f in service.nodes])[node_idx]
        consumers = rng.choice(consumer_names, size=n, p=consumer_p)

        # Bursts: the same schedule as the live app (phased on the epoch), plus the big incidents.
        since = t - (epoch + service.incident_phase)
        window = np.floor(since / service.incident_period).astype(np.int64)
        in_window = since - window * service.incident_period < service.incident_duration
        burst = np.zeros(n, dtype=bool)
        for w in np.unique(window[in_window]):
            if incident(service, epoch + service.incident_phase + w * service.incident_period + 1.0, epoch):
                burst |= in_window & (window == w)
        severe = np.zeros(n, dtype=bool)
        for bi, b_start, b_end in big:
            if bi == si:
                severe |= (t >= b_start) & (t < b_end)

        latency = np.empty(n)
        status = np.empty(n, dtype=np.int64)
        context = np.full(n, None, dtype=object)
        hour_load = 0.85 + 0.3 * load[np.clip(((t - minutes[0]) // 60).astype(np.int64), 0, load.size - 1)]
        for ei, ep in enumerate(service.endpoints):
            m = ep_idx == ei
            k = int(m.sum())
            if k == 0:
                continue
            lat = ep.median_ms * np.exp(rng.normal(0.0, ep.sigma, k)) * node_factor[m] * hour_load[m]
            st = np.full(k, 201 if ep.created else 200)
            p_server = np.full(k, ep.server_error_rate)
            if ep.incident_prone:
                lat = np.where(burst[m], lat * 4.0, lat)
                lat = np.where(severe[m], lat * 5.0, lat)
                p_server = np.where(burst[m], 0.35, p_server)
                p_server = np.where(severe[m], 0.6, p_server)
            fail = rng.random(k) < p_server
            st[fail] = np.where(burst[m][fail] | severe[m][fail], service.incident_status, 500)
            lat[fail] = np.minimum(lat[fail] * 2.0, 5000.0)
            if ep.client_error is not None:
                bad = rng.random(k) < ep.client_error[1]
                st[bad] = ep.client_error[0]
                lat[bad] = rng.uniform(1.0, 4.0, int(bad.sum()))
            if ep.contexts:
                names = np.array([c for c, _ in ep.contexts], dtype=object)
                pw = np.array([w for _, w in ep.contexts], dtype=np.float64)
                context[m] = rng.choice(names, size=k, p=pw / pw.sum())
            latency[m] = lat
            status[m] = st

        methods = [e.method for e in service.endpoints]
        patterns = [e.pattern for e in service.endpoints]
        stamps = np.array(t * 1e6, dtype="int64").astype("datetime64[us]").astype(str)
        latency = np.round(latency, 3)
        name = service.name
        for lo in range(0, n, BATCH):
            hi = min(lo + BATCH, n)
            yield name, [
                {"service": name, "node": nd, "method": methods[e], "endpoint": patterns[e], "status": st,
                 "response_time": lat, "consumer": co, "context": cx, "created_at": ts + "Z"}
                for nd, e, st, lat, co, cx, ts in zip(
                    node_names[lo:hi].tolist(), ep_idx[lo:hi].tolist(), status[lo:hi].tolist(),
                    latency[lo:hi].tolist(), consumers[lo:hi].tolist(), context[lo:hi].tolist(),
                    stamps[lo:hi].tolist())
            ]


async def backfill(url: str, service_keys: dict[str, str], total: int, days: float, end: float,
                   epoch: float, stop: asyncio.Event) -> int:
    """Send the history through the server's own ingest endpoint; print progress; records sent."""
    import httpx  # noqa: PLC0415
    import msgspec  # noqa: PLC0415

    sent = 0
    started = time.monotonic()
    next_report = 0.0
    queue: asyncio.Queue = asyncio.Queue(maxsize=IN_FLIGHT * 2)
    encoder = msgspec.json.Encoder()

    async def produce() -> None:
        loop = asyncio.get_running_loop()
        batches = history_batches(total, days, end, epoch)
        seq = 0
        while not stop.is_set():
            # Generating is CPU work: keep it off the event loop so the sends overlap it.
            item = await loop.run_in_executor(None, next, batches, None)
            if item is None:
                break
            service, records = item
            seq += 1
            await queue.put((service, encoder.encode({"requests": records}), len(records), seq))
        for _ in range(IN_FLIGHT):
            await queue.put(None)

    async def send(client: httpx.AsyncClient) -> None:
        nonlocal sent, next_report
        while (item := await queue.get()) is not None:
            service, body, count, seq = item
            headers = {"X-API-Key": service_keys[service], "Content-Type": "application/json",
                       # a retried batch (timeout, dropped connection) is stored once
                       "Idempotency-Key": f"demo-history-{epoch:.0f}-{seq}"}
            for attempt in range(20):
                try:
                    r = await client.post("/api/v1/ingest", content=body, headers=headers)
                except httpx.TransportError as exc:
                    if attempt == 19:
                        raise DemoError(f"backfill could not reach the server: {exc}") from None
                    await asyncio.sleep(1.0)
                    continue
                if r.status_code in (429, 503):
                    await asyncio.sleep(float(r.headers.get("retry-after", "1")))
                    continue
                if r.status_code != 200:
                    raise DemoError(f"backfill refused by the server: {r.status_code} {r.text[:300]}")
                break
            else:
                raise DemoError("backfill: the server kept answering 429/503")
            sent += count
            elapsed = time.monotonic() - started
            if elapsed >= next_report or sent >= total:
                next_report = elapsed + 2.0
                _say(f"  history: {sent:>9,} records sent ({min(100, 100 * sent // max(total, 1))}%)")

    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        tasks = [asyncio.create_task(produce())] + [asyncio.create_task(send(client)) for _ in range(IN_FLIGHT)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return sent


# ---------------------------------------------------------------------------------------------
# Live traffic: real HTTP requests to the sample API.


@dataclass
class Target:
    """One node of the sample API."""

    service: Service
    node: str
    url: str
    proc: subprocess.Popen | None = None
    port_file: Path | None = None


def _request_for(rng: random.Random, endpoint: Endpoint) -> tuple[str, dict, dict[str, str], Any]:
    """(path, query params, headers, JSON body) of one call; sometimes a wrong one, like real clients."""
    bad = endpoint.client_error is not None and rng.random() < endpoint.client_error[1]
    bad_status = endpoint.client_error[0] if bad else None
    path = endpoint.pattern
    while "{" in path:
        a, rest = path.split("{", 1)
        _, b = rest.split("}", 1)
        ident = rng.randint(100_000, 999_999) if bad_status == 404 else rng.randint(1, 5000)
        path = f"{a}{ident}{b}"
    params: dict[str, str] = {}
    headers: dict[str, str] = {}
    body = None
    if endpoint.contexts:
        params["via"] = rng.choices([c for c, _ in endpoint.contexts], [w for _, w in endpoint.contexts])[0]
    if endpoint.client_error and endpoint.client_error[0] == 401 and bad_status != 401:
        headers["Authorization"] = "Bearer demo-token"
    if endpoint.client_error and endpoint.client_error[0] == 400:
        params["q"] = "" if bad_status == 400 else rng.choice(["shoes", "red dress", "laptop", "tent", "usb-c"])
    if endpoint.method in ("POST", "PUT", "PATCH"):
        body = {} if bad_status == 422 else {"quantity": rng.randint(1, 5), "email": "someone@example.com"}
    return path, params, headers, body


async def generate_traffic(targets: list[Target], peak_rate: float, stop: asyncio.Event,
                           counters: dict[str, int], seed: int | None = None) -> None:
    """Poisson arrivals at ``peak_rate * rhythm(now)`` requests/s (at least a third of the peak)."""
    import httpx  # noqa: PLC0415

    rng = random.Random(seed)
    by_service: dict[str, list[Target]] = {}
    for t in targets:
        by_service.setdefault(t.service.name, []).append(t)
    services = [s for s in SERVICES if s.name in by_service]
    shares = [s.share for s in services]
    consumers = [c for c, _ in CONSUMERS]
    consumer_w = [w for _, w in CONSUMERS]
    in_flight: set[asyncio.Task] = set()
    limit = asyncio.Semaphore(64)

    async def call(client: httpx.AsyncClient, target: Target, endpoint: Endpoint) -> None:
        path, params, headers, body = _request_for(rng, endpoint)
        headers["X-Consumer-ID"] = rng.choices(consumers, consumer_w)[0]
        try:
            await client.request(endpoint.method, target.url + path, params=params, headers=headers, json=body)
            counters["sent"] += 1
        except httpx.HTTPError:
            counters["failed"] += 1
        finally:
            limit.release()

    async with httpx.AsyncClient(timeout=15, limits=httpx.Limits(max_connections=64)) as client:
        try:
            while not stop.is_set():
                rate = max(peak_rate * max(rhythm(time.time()), 0.35), 0.01)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), rng.expovariate(rate))
                    break
                service = rng.choices(services, shares)[0]
                target = rng.choice(by_service[service.name])
                endpoint = rng.choices(service.endpoints, [e.weight for e in service.endpoints])[0]
                await limit.acquire()
                task = asyncio.create_task(call(client, target, endpoint))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
        finally:
            for task in list(in_flight):
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)


# ---------------------------------------------------------------------------------------------
# Orchestration.


class Children:
    """Child processes started by the demo, stopped in reverse order."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[tuple[str, subprocess.Popen, Path]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, preexec_fn=_die_with_parent)
        self.procs.append((name, proc, log_path))
        return proc

    def dead(self) -> tuple[str, int, Path] | None:
        for name, proc, log_path in self.procs:
            if proc.poll() is not None:
                return name, proc.returncode, log_path
        return None

    def stop(self, names: set[str] | None = None, grace: float = 10.0) -> None:
        chosen = [(n, p) for n, p, _ in reversed(self.procs) if names is None or n in names]
        for _, proc in chosen:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for _, proc in chosen:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _wait_for_port(host: str, port: int, proc: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return True
        time.sleep(0.1)
    return False


def _wait_for_port_file(path: Path, proc: subprocess.Popen, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None
        with contextlib.suppress(OSError, ValueError):
            return int(path.read_text())
        time.sleep(0.1)
    return None


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> bool:
    import httpx  # noqa: PLC0415

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


async def _has_history(url: str, user_key: str, days: float, before: float) -> bool:
    """Whether the database already holds history (a re-used --data-dir): skip the backfill then."""
    from datetime import datetime, timezone  # noqa: PLC0415

    import httpx  # noqa: PLC0415

    def iso(t: float) -> str:
        return datetime.fromtimestamp(t, timezone.utc).isoformat()

    params = {"limit": 1, "start_time": iso(before - days * 86400), "end_time": iso(before - 1)}
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        r = await client.get("/api/v1/metrics/requests", params=params, headers={"X-API-Key": user_key})
        return r.status_code == 200 and bool(r.json().get("requests"))


def _banner(url: str, keys: dict[str, str], config_path: Path, info_path: Path, targets: list[Target]) -> None:
    user_key = keys[USER]
    _say()
    _say("Malti demo is running.")
    _say(f"  server       {url}   (API docs: {url}/docs)")
    for t in targets:
        _say(f"  sample API   {t.url:<24} {t.service.name:<11} node {t.node}")
    _say(f"  config       {config_path}")
    _say()
    _say("Keys:")
    _say(f"  user     {USER:<11} {user_key}")
    for s in SERVICES:
        _say(f"  service  {s.name:<11} {keys[s.name]}")
    _say(f"  (also in {info_path})")
    _say()
    _say("Look at it in the terminal (the [tui] extra: pip install -e '.[tui]' in the Malti clone):")
    _say(f"  malti-tui --url {url} --api-key {user_key}")
    _say()
    _say("With curl:")
    _say(f'  curl -H "X-API-Key: {user_key}" "{url}/api/v1/metrics/aggregate/realtime"')
    _say()
    _say("In Jupyter (the [notebook] extra: pip install -e '.[notebook]' in the Malti clone):")
    _say("  from malti_notebook import connect")
    _say(f'  m = connect("{url}", "{user_key}")')
    _say('  m.timeseries(start="24h")')
    _say('  m.dashboard(range="7d")')
    _say()
    _say("Press Ctrl-C to stop.", )


def run_demo(args: argparse.Namespace) -> int:
    """Entry point of ``malti-server --demo``; returns the exit code."""
    demo = Demo(args)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return demo.run()
    except KeyboardInterrupt:
        return 0
    except DemoError as exc:
        print(f"malti-server --demo: error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            demo.shutdown()
        finally:
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, signal.default_int_handler)


def _interrupt(signum, frame):  # SIGTERM behaves like Ctrl-C
    raise KeyboardInterrupt


class Demo:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.temporary = args.data_dir is None
        self.data_dir: Path | None = None
        self.embedded = None
        self.children: Children | None = None

    # -- start-up ------------------------------------------------------------------------------

    def run(self) -> int:
        from .cli import StartupError, check_port_free, prepare_database  # noqa: PLC0415

        args = self.args
        backfill_total = int(_env_number("MALTI_DEMO_BACKFILL", DEFAULT_BACKFILL, int))
        days = float(_env_number("MALTI_DEMO_BACKFILL_DAYS", DEFAULT_DAYS))
        rate = float(_env_number("MALTI_DEMO_RATE", DEFAULT_RATE))
        try:
            check_port_free(args.host, args.port)
        except StartupError as exc:
            raise DemoError(str(exc)) from None

        if self.temporary:
            self.data_dir = Path(tempfile.mkdtemp(prefix="malti-demo-"))
        else:
            self.data_dir = Path(args.data_dir).resolve()
            self.data_dir.mkdir(parents=True, exist_ok=True)
        log_dir = self.data_dir / "logs"
        log_dir.mkdir(exist_ok=True)
        self.children = Children(log_dir)
        _say(f"Malti demo: data in {self.data_dir}" + (" (temporary, removed on exit)" if self.temporary else ""))
        if getattr(args, "config", None):
            _say("  note: --config is not used by the demo, which writes its own configuration")

        # Configuration: fresh keys, or the ones of a previous demo in the same --data-dir.
        config_path = self.data_dir / "malti-demo.toml"
        info_path = self.data_dir / "demo.json"
        keys = None
        if config_path.exists() and info_path.exists():
            with contextlib.suppress(OSError, ValueError, KeyError):
                keys = json.loads(info_path.read_text())["keys"]
        if keys is None:
            text, keys = demo_config(list(SERVICES), USER)
            fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)

        # Database.
        # Only an explicit --database-url: a DATABASE_URL in the environment may be production's.
        url = args.database_url
        if url:
            _say("  database: the one given by --database-url (the demo writes its data into it)")
        else:
            from .embedded import EmbeddedPostgres, EmbeddedUnavailable  # noqa: PLC0415

            _say("  starting the embedded PostgreSQL ...")
            try:
                self.embedded = EmbeddedPostgres(self.data_dir / "pgdata")
            except EmbeddedUnavailable as exc:
                raise DemoError(str(exc)) from None
            url = self.embedded.url
        try:
            storage = asyncio.run(prepare_database(url))
        except StartupError as exc:
            raise DemoError(str(exc)) from None
        except Exception as exc:  # e.g. migrations not found: one line, not a traceback
            raise DemoError(f"cannot prepare the database: {type(exc).__name__}: {exc}") from None
        _say(f"  database ready (storage: {storage})")

        # The Malti server.
        host = _local_host(args.host)
        server_url = f"http://{host}:{args.port}"
        env = dict(os.environ)
        env.pop("MALTI_CONFIG_PATH", None)
        env["DATABASE_URL"] = url
        server = self.children.start("malti-server", [
            sys.executable, "-m", "malti_server", "--config", str(config_path), "--database-url", url,
            "--host", args.host, "--port", str(args.port), "--workers", str(args.workers),
            "--log-level", "warning" if args.log_level == "info" else args.log_level, "--no-access-log",
        ], env)
        if not _wait_healthy(server_url, server, 60):
            raise DemoError(f"the Malti server did not start; its log:\n{_tail(log_dir / 'malti-server.log')}")
        _say(f"  Malti server ready on {server_url}")

        # The sample API: one process per (service, node), instrumented through MALTI_* variables.
        # Each binds its port itself (the next ones after the server's when free) and reports it.
        epoch = time.time()
        targets: list[Target] = []
        for i, (service, node) in enumerate((s, n) for s in SERVICES for n, _ in s.nodes):
            app_env = dict(env)
            app_env.update({
                "MALTI_SERVICE_NAME": service.name,
                "MALTI_API_KEY": keys[service.name],
                "MALTI_URL": server_url,
                "MALTI_NODE": node,
                "MALTI_BATCH_INTERVAL": "1",  # ship every second, so the live view moves
                "MALTI_CLEAN_MODE": "false",  # keep 401s and 404s: the demo shows every status
                "MALTI_SHUTDOWN_TIMEOUT": "5",
                "MALTI_DEMO_EPOCH": repr(epoch),
            })
            port_file = log_dir / f"{node}.port"
            port_file.unlink(missing_ok=True)
            proc = self.children.start(node, [
                sys.executable, "-m", "malti_server.demo_app", "--service", service.name,
                "--host", "127.0.0.1", "--port", str(args.port + 1 + i), "--port-file", str(port_file)], app_env)
            targets.append(Target(service, node, "", proc, port_file))
        for t in targets:
            port = _wait_for_port_file(t.port_file, t.proc, 60)
            if port is None or not _wait_for_port("127.0.0.1", port, t.proc, 60):
                raise DemoError(f"the sample API {t.node} did not start; its log:\n{_tail(log_dir / (t.node + '.log'))}")
            t.url = f"http://127.0.0.1:{port}"
        _say(f"  sample API ready: {len(SERVICES)} services on {len(targets)} nodes")

        info = {"url": server_url, "user": USER, "user_key": keys[USER], "keys": keys,
                "config": str(config_path), "sample_api": {t.node: t.url for t in targets},
                "started_at": epoch}
        info_path.write_text(json.dumps(info, indent=2))
        os.chmod(info_path, 0o600)

        return asyncio.run(self._live(server_url, keys, targets, rate, backfill_total, days, epoch,
                                      config_path, info_path))

    async def _live(self, server_url: str, keys: dict[str, str], targets: list[Target], rate: float,
                    backfill_total: int, days: float, epoch: float, config_path: Path, info_path: Path) -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        counters = {"sent": 0, "failed": 0}
        traffic = asyncio.create_task(generate_traffic(targets, rate, stop, counters))
        _say(f"  live traffic: about {rate:g} requests/s at the daily peak, "
             f"{len(CONSUMERS)} consumers")
        try:
            if backfill_total > 0 and days > 0:
                if await _has_history(server_url, keys[USER], days, epoch):
                    _say("  history: kept from the previous demo in this data folder")
                else:
                    _say(f"  history: {backfill_total:,} records over {days:g} days through POST /api/v1/ingest ...")
                    started = time.monotonic()
                    sent = await backfill(server_url, {s.name: keys[s.name] for s in SERVICES},
                                          backfill_total, days, epoch, epoch, stop)
                    took = time.monotonic() - started
                    if not stop.is_set():
                        _say(f"  history: {sent:,} records in {took:.1f} s ({sent / max(took, 1e-9):,.0f} records/s)")
            if not stop.is_set():
                _banner(server_url, keys, config_path, info_path, targets)
                _say("MALTI_DEMO_READY " + json.dumps({"url": server_url, "user_key": keys[USER],
                                                       "info": str(info_path)}))
            while not stop.is_set():
                dead = self.children.dead() if self.children else None
                if dead is not None:
                    name, code, log_path = dead
                    raise DemoError(f"{name} exited unexpectedly (code {code}); its log:\n{_tail(log_path)}")
                if traffic.done():
                    traffic.result()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
        finally:
            stop.set()
            _say("\nStopping: traffic ...")
            with contextlib.suppress(Exception):
                await traffic
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
                signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        return 0

    # -- shutdown ------------------------------------------------------------------------------

    def shutdown(self) -> None:
        if self.children is not None and self.children.procs:
            apps = {n for n, _, _ in self.children.procs if n != "malti-server"}
            _say("Stopping: sample API (flushing its telemetry) ...")
            self.children.stop(apps, grace=10)
            _say("Stopping: Malti server ...")
            self.children.stop(None, grace=15)
        if self.embedded is not None:
            _say("Stopping: PostgreSQL ...")
            try:
                self.embedded.stop()
            except Exception as exc:  # report, keep cleaning up
                print(f"malti-server --demo: PostgreSQL did not stop cleanly: {exc}", file=sys.stderr)
            self.embedded = None
        if self.temporary and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None
        _say("Malti demo stopped.")
