"""The demo's sample API and the traffic model shared by the live traffic and the backfilled history.

Three small services (``shop-api``, ``auth-api``, ``search-api``), each a Starlette app instrumented
exactly as the README tells users to::

    app.add_middleware(MaltiMiddleware)      # settings from MALTI_* environment variables

``malti-server --demo`` runs one process per (service, node)::

    MALTI_SERVICE_NAME=shop-api MALTI_NODE=shop-1 MALTI_API_KEY=... MALTI_URL=... \\
        python -m malti_server.demo_app --service shop-api --port 8001

Handlers behave like a real API: unknown ids give 404, malformed bodies 422, missing tokens 401,
empty searches 400; latency comes from a per-endpoint distribution that grows with the daily load,
and an "incident" schedule (error bursts) makes some endpoints fail and slow down for a while.
The backfill in :mod:`malti_server.demo` draws records from the same model, so history and live
traffic look alike.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import sys
import zlib
from dataclasses import dataclass, field

DAY = 86400.0


@dataclass(frozen=True)
class Endpoint:
    """One route of a sample service and how it behaves."""

    method: str
    pattern: str  # the route pattern as the middleware records it (mount prefix included)
    weight: float  # share of the service's traffic
    median_ms: float  # latency distribution: log-normal with this median ...
    sigma: float  # ... and this spread (long tail when large)
    server_error_rate: float = 0.002  # 500s on a normal day
    client_error: tuple[int, float] | None = None  # (status, share of callers who get it wrong)
    contexts: tuple[tuple[str, float], ...] = ()  # (context, weight), read from the query string
    incident_prone: bool = False  # fails during the service's incidents
    created: bool = False  # answers 201 instead of 200


@dataclass(frozen=True)
class Service:
    name: str
    description: str
    share: float  # share of all traffic
    nodes: tuple[tuple[str, float], ...]  # (node, latency factor)
    endpoints: tuple[Endpoint, ...]
    # error bursts: every `incident_period` seconds (from the demo's epoch + `incident_phase`),
    # an incident lasting `incident_duration` seconds, in two windows out of three.
    incident_period: float = 900.0
    incident_phase: float = 120.0
    incident_duration: float = 60.0
    incident_status: int = 500


SERVICES: tuple[Service, ...] = (
    Service(
        name="shop-api",
        description="Product catalogue, cart and checkout",
        share=0.45,
        nodes=(("shop-1", 1.0), ("shop-2", 1.35)),  # shop-2 is an older, slower machine
        incident_period=1500.0,
        incident_phase=300.0,
        incident_duration=90.0,
        incident_status=502,  # the payment provider is down
        endpoints=(
            Endpoint("GET", "/v1/products", 30, 25, 0.45),
            Endpoint("GET", "/v1/products/{product_id}", 40, 12, 0.4, client_error=(404, 0.03)),
            Endpoint("GET", "/v1/cart", 10, 15, 0.35),
            Endpoint("POST", "/v1/cart/items", 8, 30, 0.4, client_error=(422, 0.02), created=True),
            Endpoint("POST", "/v1/checkout", 4, 350, 0.5, server_error_rate=0.01,
                     contexts=(("card", 6), ("paypal", 3), ("apple-pay", 2), ("invoice", 1)),
                     incident_prone=True, created=True),
            Endpoint("GET", "/v1/orders/{order_id}", 5, 40, 0.4, client_error=(404, 0.05)),
            Endpoint("GET", "/v1/reports/sales", 0.5, 1400, 0.35, server_error_rate=0.02),
        ),
    ),
    Service(
        name="auth-api",
        description="Login, tokens and sessions",
        share=0.2,
        nodes=(("auth-1", 1.0),),
        incident_period=2700.0,
        incident_phase=480.0,
        incident_duration=60.0,
        incident_status=503,
        endpoints=(
            Endpoint("POST", "/login", 20, 90, 0.3, client_error=(401, 0.08),
                     contexts=(("password", 6), ("google", 3), ("github", 1), ("sso", 1)),
                     incident_prone=True),
            Endpoint("POST", "/token/refresh", 30, 8, 0.4, client_error=(401, 0.03)),
            Endpoint("GET", "/me", 40, 5, 0.45, client_error=(401, 0.02)),
            Endpoint("POST", "/logout", 5, 6, 0.3),
            Endpoint("POST", "/password/reset", 1, 220, 0.4, client_error=(422, 0.05)),
        ),
    ),
    Service(
        name="search-api",
        description="Full-text search and suggestions",
        share=0.35,
        nodes=(("search-1", 1.0), ("search-2", 1.0)),
        incident_period=900.0,
        incident_phase=120.0,
        incident_duration=75.0,
        incident_status=503,  # the search index is being rebuilt
        endpoints=(
            Endpoint("GET", "/search", 60, 120, 0.8, client_error=(400, 0.01),
                     contexts=(("full", 5), ("filters", 2)), incident_prone=True),
            Endpoint("GET", "/search/suggest", 35, 15, 0.5, contexts=(("autocomplete", 1),)),
            Endpoint("GET", "/search/facets", 5, 60, 0.5, incident_prone=True),
        ),
    ),
)

SERVICES_BY_NAME = {s.name: s for s in SERVICES}

# Who calls: a few big apps and partners, and a long tail of customers' integrations.
CONSUMERS: tuple[tuple[str, float], ...] = (
    ("web-app", 30), ("ios-app", 15), ("android-app", 12), ("partner-acme", 5),
    ("partner-globex", 3), ("internal-batch", 1), ("admin-console", 1),
    *((f"customer-{i:03d}", 8.0 / (i + 1)) for i in range(40)),
)


def rhythm(t: float) -> float:
    """Relative load at Unix time ``t`` (0.15-1.0): quiet at 03:00 UTC, busiest at 15:00, calmer at weekends."""
    hour = (t % DAY) / 3600.0
    day_curve = (0.5 - 0.5 * math.cos(2 * math.pi * (hour - 3.0) / 24.0)) ** 1.5
    weekday = int(t // DAY + 3) % 7  # 1970-01-01 was a Thursday: 0 = Monday
    weekend = 0.65 if weekday >= 5 else 1.0
    return (0.15 + 0.85 * day_curve) * weekend


def incident(service: Service, t: float, epoch: float) -> bool:
    """Whether ``service`` is in an error burst at time ``t`` (deterministic, phased on the demo's epoch)."""
    since = t - (epoch + service.incident_phase)
    window = math.floor(since / service.incident_period)
    if since - window * service.incident_period >= service.incident_duration:
        return False
    if window == 0:
        return True  # the first burst after the demo starts always happens
    return zlib.crc32(f"{service.name}:{window}".encode()) % 3 != 0


def pick(rng: random.Random, weighted: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([name for name, _ in weighted], [w for _, w in weighted])[0]


def latency_ms(rng: random.Random, endpoint: Endpoint, node_factor: float, t: float, in_incident: bool) -> float:
    """A response time for a successful request at time ``t``."""
    load = 0.85 + 0.3 * rhythm(t)
    value = endpoint.median_ms * math.exp(rng.gauss(0.0, endpoint.sigma)) * node_factor * load
    if in_incident and endpoint.incident_prone:
        value *= 4.0
    return value


def server_error(rng: random.Random, service: Service, endpoint: Endpoint, in_incident: bool) -> int | None:
    """The 5xx status a request fails with, or None."""
    if in_incident and endpoint.incident_prone and rng.random() < 0.35:
        return service.incident_status
    if rng.random() < endpoint.server_error_rate:
        return 500
    return None


def success_status(endpoint: Endpoint) -> int:
    return 201 if endpoint.created else 200


# ---------------------------------------------------------------------------------------------
# The sample API (Starlette), one service per process.


@dataclass
class _Handler:
    service: Service
    endpoint: Endpoint
    node_factor: float
    epoch: float
    rng: random.Random = field(default_factory=random.Random)

    async def __call__(self, request):
        from starlette.responses import JSONResponse  # noqa: PLC0415

        ep = self.endpoint
        # Context: what kind of request this was (login method, payment method, search mode).
        via = request.query_params.get("via")
        if via:
            request.state.malti_context = via
        # Client errors, decided by the request itself, as a real API would.
        problem = await self._client_problem(request)
        if problem is not None:
            await asyncio.sleep(self.rng.uniform(0.001, 0.004))
            return JSONResponse({"detail": problem[1]}, status_code=problem[0])
        now = _now()
        burst = incident(self.service, now, self.epoch)
        failed = server_error(self.rng, self.service, ep, burst)
        delay = latency_ms(self.rng, ep, self.node_factor, now, burst)
        if failed is not None:
            await asyncio.sleep(min(delay * 2, 5000) / 1000.0)
            return JSONResponse({"detail": "upstream failure"}, status_code=failed)
        await asyncio.sleep(delay / 1000.0)
        return JSONResponse({"ok": True, "endpoint": ep.pattern}, status_code=success_status(ep))

    async def _client_problem(self, request) -> tuple[int, str] | None:
        if self.endpoint.client_error is None:
            return None
        status = self.endpoint.client_error[0]
        if status == 404:
            for value in request.path_params.values():
                if not str(value).isdigit() or int(value) > 99_999:
                    return 404, "not found"
        elif status == 422:
            try:
                body = await request.json()
            except ValueError:
                body = None
            if not isinstance(body, dict) or not isinstance(body.get("quantity", body.get("email")), (int, str)):
                return 422, "invalid body"
        elif status == 401:
            if request.headers.get("authorization", "") != "Bearer demo-token":
                return 401, "not authenticated"
        elif status == 400:
            if not request.query_params.get("q"):
                return 400, "q is required"
        return None


def _now() -> float:
    import time  # noqa: PLC0415

    return time.time()


def build_app(service_name: str, node: str | None = None, epoch: float | None = None):
    """The Starlette app of one sample service, instrumented with :class:`malti_sdk.MaltiMiddleware`."""
    from starlette.applications import Starlette  # noqa: PLC0415
    from starlette.responses import JSONResponse  # noqa: PLC0415
    from starlette.routing import Mount, Route  # noqa: PLC0415

    from malti_sdk import MaltiMiddleware  # noqa: PLC0415

    service = SERVICES_BY_NAME[service_name]
    node = node or os.environ.get("MALTI_NODE") or service.nodes[0][0]
    factor = dict(service.nodes).get(node, 1.0)
    epoch = float(os.environ.get("MALTI_DEMO_EPOCH", _now())) if epoch is None else epoch

    mounted: dict[str, list] = {}
    plain: list = []
    for ep in service.endpoints:
        handler = _Handler(service, ep, factor, epoch).__call__  # a bound method: Starlette passes a Request
        if ep.pattern.startswith("/v1/"):
            mounted.setdefault("/v1", []).append(Route(ep.pattern[3:], handler, methods=[ep.method]))
        else:
            plain.append(Route(ep.pattern, handler, methods=[ep.method]))

    async def index(request):
        return JSONResponse({"service": service.name, "node": node,
                             "endpoints": [f"{e.method} {e.pattern}" for e in service.endpoints]})

    routes = [Route("/", index), *plain, *(Mount(prefix, routes=r) for prefix, r in mounted.items())]
    app = Starlette(routes=routes)
    app.add_middleware(MaltiMiddleware)
    return app


def _bind(host: str, port: int):
    """A bound socket on ``port``, or on a free port when that one is taken (``port`` 0: any)."""
    import socket  # noqa: PLC0415

    for candidate in ((port, 0) if port else (0,)):
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, candidate))
            return sock
        except OSError:
            sock.close()
            if candidate == 0:
                raise
    raise AssertionError("unreachable")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m malti_server.demo_app",
                                     description="One sample service of the Malti demo (settings from MALTI_*).")
    parser.add_argument("--service", required=True, choices=sorted(SERVICES_BY_NAME))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001, help="port to listen on; another free one if taken")
    parser.add_argument("--port-file", help="write the port actually used to this file")
    args = parser.parse_args(argv)

    import uvicorn  # noqa: PLC0415

    app = build_app(args.service)
    # Bind here, before uvicorn starts: the port written to --port-file is ours, no race.
    sock = _bind(args.host, args.port)
    port = sock.getsockname()[1]
    if args.port and port != args.port:
        print(f"port {args.port} is taken: {args.service} listens on port {port} instead", file=sys.stderr, flush=True)
    if not args.port_file:  # run by hand: say where
        print(f"{args.service}: http://{args.host}:{port}", flush=True)
    if args.port_file:
        tmp = f"{args.port_file}.tmp"
        with open(tmp, "w") as f:
            f.write(str(port))
        os.replace(tmp, args.port_file)
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
