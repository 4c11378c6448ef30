"""No loss: the Malti server is down for a minute under 500 requests/s; every record arrives once.

Run:  .venv/bin/python benchmarks/sdk_loss.py [--down 60] [--rate 500]    (takes about 2.5 minutes)

A real malti-server (embedded PostgreSQL, or $DATABASE_URL) and an app instrumented with
MaltiMiddleware under uvicorn, with the SDK's *default* settings (only key, URL,
service and node are set). A paced client sends ``rate`` requests/s, each with its own
consumer id. Traffic runs 15 s with the server up, ``down`` s with it stopped, 15 s
after it is back; then the app is stopped (its shutdown flush sends the rest) and
the database must hold every request exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from malti_testing import (  # noqa: E402
    SERVICE_KEYS,
    EmbeddedCluster,
    ServerProcess,
    config_toml,
    create_database,
    free_port,
)

APP = textwrap.dedent(
    """
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from malti_sdk import MaltiMiddleware

    async def order(request):
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/orders/{order_id}", order)])
    app.add_middleware(MaltiMiddleware)
    """
)


async def paced_client(port: int, rate: float, seconds: float, start_id: int, connections: int = 8) -> int:
    """Send ``rate`` requests/s for ``seconds``; returns how many got a 200."""
    per_conn = rate / connections
    ok = 0
    next_id = start_id

    async def worker(index: int) -> None:
        nonlocal ok, next_id
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        begin = time.perf_counter()
        n = 0
        while True:
            due = begin + n / per_conn
            if due - begin >= seconds:
                break
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            rid = next_id
            next_id += 1
            writer.write(f"GET /orders/{rid} HTTP/1.1\r\nhost: x\r\nx-consumer-id: c-{rid}\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            if head.startswith(b"HTTP/1.1 200"):
                ok += 1
            n += 1
        writer.close()

    await asyncio.gather(*(worker(i) for i in range(connections)))
    return ok


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--down", type=float, default=60.0, help="seconds the server is stopped")
    parser.add_argument("--rate", type=float, default=500.0, help="requests per second")
    parser.add_argument("--before", type=float, default=15.0)
    parser.add_argument("--after", type=float, default=15.0)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="malti-loss-"))
    cluster = None
    admin = os.environ.get("DATABASE_URL")
    if not admin:
        cluster = EmbeddedCluster(workdir / "pg")
        admin = cluster.url
    config = workdir / "malti.toml"
    config.write_text(config_toml())
    server = ServerProcess(database_url=create_database(admin), config_path=config, log_path=workdir / "server.log")
    app_proc = None
    try:
        server.start()
        (workdir / "loss_app.py").write_text(APP)
        app_port = free_port()
        env = {
            **os.environ,
            "PYTHONPATH": f"{workdir}:{ROOT}",
            "MALTI_API_KEY": SERVICE_KEYS["user-service"],
            "MALTI_SERVICE_NAME": "user-service",
            "MALTI_URL": server.url,
            "MALTI_NODE": "loss-bench",
        }
        app_proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "loss_app:app",
                "--port",
                str(app_port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            cwd=workdir,
            env=env,
        )
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                import socket

                socket.create_connection(("127.0.0.1", app_port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)

        sent = 0
        print(f"traffic {args.rate:.0f} req/s: {args.before:.0f} s up, {args.down:.0f} s down, {args.after:.0f} s up")
        sent += asyncio.run(paced_client(app_port, args.rate, args.before, 0))
        print(f"  {sent} requests; stopping the server")
        server.stop()
        t_down = time.time()
        sent += asyncio.run(paced_client(app_port, args.rate, args.down, 10_000_000))
        print(f"  {sent} requests; server down for {time.time() - t_down:.0f} s, starting it again")
        server.start()
        t_back = time.time()
        sent += asyncio.run(paced_client(app_port, args.rate, args.after, 20_000_000))
        print(f"  {sent} requests answered by the app in total")

        def stored() -> tuple[int, int]:
            row = server.sql(
                "SELECT count(*) AS n, count(DISTINCT consumer) AS d FROM requests WHERE node = 'loss-bench'"
            )[0]
            return row["n"], row["d"]

        # Everything but the last partial batch is delivered while the app runs (backoff is capped at 30 s).
        wait_until = time.time() + 60
        while time.time() < wait_until and stored()[0] < sent - 500:
            time.sleep(1)
        n, _ = stored()
        print(f"  {n} stored {time.time() - t_back:.0f} s after the server came back (app still running)")
        app_proc.send_signal(signal.SIGTERM)  # lifespan shutdown: bounded flush of the rest
        app_proc.wait(60)
        app_proc = None
        n, distinct = stored()
        print(f"after the app's shutdown flush: {n} records stored, {distinct} distinct, {sent} requests made")
        verdict = "OK: every record delivered exactly once" if n == distinct == sent else "LOSS OR DUPLICATES"
        print(verdict)
    finally:
        if app_proc is not None:
            app_proc.kill()
        server.stop()
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    main()
