"""malti-tui benchmark: time to first data, and key-press latency during a slow query.

Starts a real ``malti-server`` on a throwaway database (embedded PostgreSQL), loads a month
of synthetic traffic through ``POST /api/v1/ingest`` (or uses ``--url``), then runs the real app headless (Textual's ``run_test``) on the
real ``malti_sdk`` client:

1. start to first data: from creating ``MaltiApp`` to the metric cards showing the
   server's numbers, for the 1 h (realtime) and 30 d ranges (median of ``--runs``),
   plus the cost of importing the app in a fresh interpreter;
2. key presses during a slow query: the dashboard's query is held back by ``--delay``
   seconds (a slow network or server), and meanwhile view-switching keys are pressed;
   each press is timed until its effect is on screen, beside the same presses on an idle
   app (ratio printed).

    python benchmarks/tui.py                       # 300,000 requests over 30 days
    python benchmarks/tui.py --records 2000000     # more data
    python benchmarks/tui.py --url http://127.0.0.1:8000 --api-key USER_KEY   # a server you run

Targets (issue #5): first data < 1.0 s; key presses during a slow query < 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import gzip
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from malti_testing import (  # noqa: E402  the test suite's real-server helpers
    SERVICE_KEYS,
    USER_KEYS,
    EmbeddedCluster,
    ServerProcess,
    config_toml,
    create_database,
    drop_database,
)

from malti_tui.app import MaltiApp  # noqa: E402
from malti_tui.config import Settings  # noqa: E402
from malti_tui.data import ClientDataSource  # noqa: E402
from malti_tui.screens.dashboard import DashboardScreen  # noqa: E402
from textual import events  # noqa: E402
from textual.widgets import TabbedContent  # noqa: E402


def _records(count: int, days: float, seed: int = 5) -> dict[str, list[dict]]:
    """``count`` synthetic requests spread over the last ``days`` days, per service:
    40 endpoints, 20 consumers, 3 nodes, skewed popularity, log-normal latencies, ~4 % errors."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    services = list(SERVICE_KEYS)
    statuses = [200] * 85 + [201] * 5 + [304] * 3 + [404] * 3 + [401] + [500] * 2 + [503]
    out: dict[str, list[dict]] = {s: [] for s in services}
    for _ in range(count):
        service = rng.choice(services)
        e = int(rng.random() ** 1.6 * 40)
        out[service].append({
            "service": service, "node": f"node-{rng.randrange(3)}", "method": ("GET", "POST", "PUT", "DELETE")[e % 4],
            "endpoint": f"/api/v1/resource-{e}/{{item_id}}", "status": rng.choice(statuses),
            "response_time": round(rng.lognormvariate(3 + (e % 5) * 0.3, 0.8), 3),
            "consumer": f"consumer-{int(rng.random() ** 2 * 20)}", "context": None,
            "created_at": (now - timedelta(seconds=rng.random() * days * 86400)).isoformat(),
        })
    return out


async def _ingest(base: str, records: dict[str, list[dict]], batch: int = 2000, in_flight: int = 4) -> None:
    """Send ``records`` through POST /api/v1/ingest (gzip, several batches in flight)."""
    jobs = [(service, rows[i:i + batch]) for service, rows in records.items() for i in range(0, len(rows), batch)]
    queue: asyncio.Queue = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            service, rows = queue.get_nowait()
            body = gzip.compress(json.dumps({"requests": rows}).encode())
            response = await client.post("/api/v1/ingest", content=body, headers={
                "X-API-Key": SERVICE_KEYS[service], "Content-Type": "application/json", "Content-Encoding": "gzip"})
            response.raise_for_status()

    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        await asyncio.gather(*(worker(client) for _ in range(in_flight)))


class SlowSource(ClientDataSource):
    """The real client, with every dashboard query held back ``delay`` seconds."""

    def __init__(self, url: str, api_key: str, delay: float) -> None:
        super().__init__(url, api_key)
        self.delay = delay
        self.in_flight = 0

    async def dashboard(self, query):
        self.in_flight += 1
        try:
            await asyncio.sleep(self.delay)
            return await super().dashboard(query)
        finally:
            self.in_flight -= 1


async def _until(pilot, predicate, timeout: float = 30.0) -> None:
    deadline = time.perf_counter() + timeout
    while not predicate():
        if time.perf_counter() > deadline:
            raise TimeoutError("the app did not get there in time")
        await asyncio.sleep(0.001)


def _settings(base: str, key: str, time_range: str, config_dir: Path) -> Settings:
    return Settings(url=base, api_key=key, time_range=time_range, auto_refresh=False, config_dir=config_dir)


async def first_data(base: str, key: str, time_range: str, config_dir: Path) -> tuple[float, float, float, str]:
    """From creating the app: seconds until the cards hold the server's numbers, seconds
    until everything (charts included) is drawn, CPU seconds this process spent until the
    cards were filled (immune to other load on the machine), and the total shown."""
    start, cpu = time.perf_counter(), time.process_time()
    app = MaltiApp(_settings(base, key, time_range, config_dir))
    async with app.run_test(size=(120, 40)) as pilot:
        await _until(pilot, lambda: isinstance(app.screen, DashboardScreen) and app.screen.loads >= 1)
        cards, cards_cpu = time.perf_counter() - start, time.process_time() - cpu
        await pilot.pause()
        drawn = time.perf_counter() - start
        total = app.screen.query_one("#card-total").value
    return cards, drawn, cards_cpu, total


VIEW_KEYS = [("t", "endpoints"), ("u", "consumers"), ("h", "status"), ("g", "overview")]


_HANDLED: list[float] = []
_show_tab = DashboardScreen.action_show_tab


def _stamped_show_tab(self, tab: str) -> None:
    _HANDLED.append(time.perf_counter())  # the key's action starts running
    _show_tab(self, tab)


DashboardScreen.action_show_tab = _stamped_show_tab


async def _press(app, key: str, done) -> tuple[float, float]:
    """From a key event arriving at the app: seconds until its action runs (handled), and
    until the new view is in place (``done()``); not the pilot's own waiting."""
    _HANDLED.clear()
    start = time.perf_counter()
    app.post_message(events.Key(key, key if len(key) == 1 else None))
    while not done() or not _HANDLED:
        await asyncio.sleep(0.0005)
    return _HANDLED[0] - start, time.perf_counter() - start


async def _press_views(pilot, app, rounds: int) -> list[tuple[float, float]]:
    tabs = app.screen.query_one(TabbedContent)
    times = []
    for _ in range(rounds):
        for key, tab in VIEW_KEYS:
            times.append(await _press(app, key, lambda tab=tab: tabs.active == tab))
            await pilot.pause()  # let the view finish drawing before the next key
    return times


async def key_latency(base: str, key: str, delay: float, rounds: int, config_dir: Path) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """Key-press latencies on an idle dashboard, then while a slow query is in flight."""
    source = SlowSource(base, key, delay)
    app = MaltiApp(_settings(base, key, "30d", config_dir), source_factory=lambda u, k: source)
    async with app.run_test(size=(120, 40)) as pilot:
        await _until(pilot, lambda: isinstance(app.screen, DashboardScreen) and app.screen.loads >= 1, delay + 30)
        idle = await _press_views(pilot, app, rounds)
        await pilot.press("r")  # start a refresh: the query now takes `delay` seconds
        await _until(pilot, lambda: source.in_flight > 0)
        busy = []
        tabs = app.screen.query_one(TabbedContent)
        for key_name, tab in VIEW_KEYS * rounds:
            elapsed = await _press(app, key_name, lambda tab=tab: tabs.active == tab)
            await pilot.pause()
            if not source.in_flight:  # the query ended: this press no longer counts
                break
            busy.append(elapsed)
        if not busy:
            raise SystemExit("the slow query ended before any key press: raise --delay")
    return idle, busy


def server_time(base: str, key: str, time_range: str, runs: int) -> float:
    """Median seconds the server takes for the dashboard query of ``time_range`` (plain httpx)."""
    from malti_tui.timeranges import get_range

    window = get_range(time_range)
    path = "/api/v1/metrics/aggregate/realtime" if window.realtime else "/api/v1/metrics/aggregate"
    samples = []
    with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=120) as client:
        for _ in range(runs):
            params = {} if window.realtime else {"start_time": (datetime.now(UTC) - window.duration).isoformat()}
            start = time.perf_counter()
            client.get(path, params=params).raise_for_status()
            samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def import_cost() -> float:
    """Seconds to import the app in a fresh interpreter (part of a real cold start)."""
    code = "import time; t = time.perf_counter(); import malti_tui.app; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT), check=True)
    return float(out.stdout.strip())


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=300_000, help="requests to load over 30 days (default 300,000)")
    ap.add_argument("--runs", type=int, default=5, help="app starts per range (median reported)")
    ap.add_argument("--delay", type=float, default=5.0, help="seconds the slow query is held back (default 5)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds of view keys per phase (default 5)")
    ap.add_argument("--database-url", help="admin URL of a PostgreSQL server (default: an embedded one)")
    ap.add_argument("--url", help="use this running server (with --api-key) instead of building one")
    ap.add_argument("--api-key", help="user key for --url")
    args = ap.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="malti-tui-bench-"))
    cluster = server = None
    try:
        if args.url:
            base, key = args.url, args.api_key
        else:
            admin = args.database_url or os.environ.get("MALTI_BENCH_DATABASE_URL")
            if not admin:
                cluster = EmbeddedCluster(folder / "pgdata")
                admin = cluster.url
            (folder / "malti.toml").write_text(config_toml(retention={"raw": "400d", "rollup_5min": "400d",
                                                                      "rollup_1hour": "800d"}))
            server = ServerProcess(database_url=create_database(admin, "malti_tui_bench"),
                                   config_path=folder / "malti.toml", log_path=folder / "server.log").start()
            base, key = server.url, USER_KEYS["viewer"]
            print(f"loading {args.records:,} requests over 30 days through POST /api/v1/ingest ...", flush=True)
            t = time.perf_counter()
            asyncio.run(_ingest(base, _records(args.records, 30)))
            server.compact()  # fold pending rollup rows now, as the server does every few seconds
            print(f"loaded in {time.perf_counter() - t:.0f} s", flush=True)

        print(f"\nstart to first data on screen (median of {args.runs}; target < 1000 ms)")
        imported = import_cost()
        print(f"  import malti_tui.app in a fresh interpreter  {ms(imported)}")
        for time_range in ("1h", "30d"):
            asyncio.run(first_data(base, key, time_range, folder))  # warm the server's caches once
            runs = [asyncio.run(first_data(base, key, time_range, folder)) for _ in range(args.runs)]
            cards, drawn, cpu = (statistics.median(r[i] for r in runs) for i in range(3))
            server_ms = server_time(base, key, time_range, args.runs)
            print(f"  {time_range:>3}: cards filled {ms(cards)} (CPU {ms(cpu)}), everything drawn {ms(drawn)};"
                  f" with import {ms(cards + imported)}; {runs[-1][3]} requests shown;"
                  f" the server alone answers in {ms(server_ms)}")

        print(f"\nview keys (g t u h): key event -> handled, and -> new view in place (target < 100 ms);"
              f" query held back {args.delay:.1f} s")
        idle, busy = asyncio.run(key_latency(base, key, args.delay, args.rounds, folder))
        for name, samples in (("idle", idle), ("during slow query", busy)):
            handled, switched = [s[0] for s in samples], [s[1] for s in samples]
            print(f"  {name:<18} handled median {ms(statistics.median(handled))} max {ms(max(handled))};"
                  f" view switched median {ms(statistics.median(switched))} max {ms(max(switched))}"
                  f"  ({len(samples)} presses)")
        ratio = statistics.median(s[1] for s in busy) / statistics.median(s[1] for s in idle)
        print(f"  ratio busy/idle (view switched, median): {ratio:.2f}")
    finally:
        if server is not None:
            server.stop()
            drop_database(cluster.url if cluster else admin, server.database_url)
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
