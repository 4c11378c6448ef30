"""``malti-server``: run the server (embedded PostgreSQL unless a database URL is given), or write a
ready configuration with ``malti-server init-config PATH``.

Startup problems (config, database, port) end in one line saying what is wrong and how to fix it,
and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import signal
import socket
import sys
from pathlib import Path

from . import __version__
from .config import ConfigError, example_config, load_settings, resolve_config_path

EXIT_USAGE = 2
EXIT_FAILURE = 1


class StartupError(Exception):
    """A problem that stops the server from starting; the message tells the fix."""


def _fail(message: str, code: int = EXIT_FAILURE) -> int:
    print(f"malti-server: error: {message}", file=sys.stderr)
    return code


def serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="malti-server",
        description="Run the Malti telemetry server. Other commands: "
        "`malti-server init-config PATH` writes a configuration with fresh keys.",
    )
    p.add_argument("--config", help="configuration file (default: $MALTI_CONFIG_PATH, else ./config/malti.toml)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    p.add_argument("--database-url", help="PostgreSQL URL (default: $DATABASE_URL, else the embedded PostgreSQL)")
    p.add_argument("--data-dir", help="folder of the embedded PostgreSQL (default: ~/.local/share/malti/pgdata)")
    p.add_argument("--workers", type=int, default=1, help="server processes (default 1)")
    p.add_argument("--forwarded-allow-ips", default="127.0.0.1",
                   help="proxies trusted for X-Forwarded-For (comma-separated, '*' for all; default 127.0.0.1)")
    p.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "info").lower(),
                   choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--no-access-log", action="store_true", help="do not log every request")
    p.add_argument("--demo", action="store_true",
                   help="run a self-contained demo: sample API, traffic and history (see README)")
    p.add_argument("--version", action="version", version=f"malti-server {__version__}")
    return p


def init_config_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="malti-server init-config",
                                description="Write a configuration file with random keys and print the keys.")
    p.add_argument("path", nargs="?", default="config/malti.toml", help="where to write (default config/malti.toml)")
    p.add_argument("--service", action="append", dest="services", metavar="NAME",
                   help="a service that will send data (repeatable; default: my-service)")
    p.add_argument("--user", action="append", dest="users", metavar="NAME",
                   help="a user who will read metrics (repeatable; default: admin)")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    return p


def init_config(argv: list[str]) -> int:
    args = init_config_parser().parse_args(argv)
    path = Path(args.path)
    if path.exists() and not args.force:
        return _fail(f"{path} already exists: pass --force to overwrite it, or choose another path")
    text, keys = example_config(args.services or ["my-service"], args.users or ["admin"])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        return _fail(f"cannot write {path}: {exc.strerror}")
    print(f"Wrote {path} (mode 0600). Keys:")
    for name, key in keys.items():
        kind = "service" if key.startswith("svc_") else "user"
        print(f"  {kind:7} {name:20} {key}")
    print(f"\nStart the server:  malti-server --config {path}")
    return 0


def check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StartupError(
                    f"port {port} on {host} is already in use: stop the other process or pass --port"
                ) from None
            raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


async def prepare_database(url: str) -> str:
    """Connect, apply migrations, and say which storage runs; StartupError when unreachable."""
    import asyncpg  # noqa: PLC0415

    from .db import MigrationError, migrate, storage_kind  # noqa: PLC0415

    try:
        conn = await asyncpg.connect(url, timeout=10)
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StartupError(
            f"cannot connect to the database ({type(exc).__name__}: {exc}): check --database-url / "
            "DATABASE_URL, or omit it to use the embedded PostgreSQL"
        ) from None
    try:
        await migrate(conn)
        return await storage_kind(conn)
    except MigrationError as exc:
        raise StartupError(
            f"{exc}. Nothing of it was applied. A database made by a pre-release build of Malti "
            "cannot be upgraded: start with an empty one (--data-dir NEW_FOLDER, or a new database "
            "for --database-url)"
        ) from None
    finally:
        await conn.close()


def serve(args: argparse.Namespace) -> int:
    config_path = resolve_config_path(args.config)
    try:
        load_settings(config_path)
    except ConfigError as exc:
        return _fail(str(exc), EXIT_USAGE)
    if args.workers < 1:
        return _fail("--workers must be at least 1", EXIT_USAGE)
    try:
        check_port_free(args.host, args.port)
    except StartupError as exc:
        return _fail(str(exc))

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    embedded = None
    url = args.database_url or os.environ.get("DATABASE_URL")
    try:
        # SIGTERM like Ctrl-C: uvicorn re-raises it after its graceful shutdown, and with the default
        # handler the process would die before the finally below stops the embedded PostgreSQL.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        if not url:
            from .embedded import EmbeddedPostgres, EmbeddedUnavailable, default_data_dir  # noqa: PLC0415

            data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
            try:
                embedded = EmbeddedPostgres(data_dir)
            except EmbeddedUnavailable as exc:
                return _fail(str(exc))
            url = embedded.url
            print(f"malti-server: embedded PostgreSQL running, data in {data_dir}", file=sys.stderr)
        try:
            storage = asyncio.run(prepare_database(url))
        except StartupError as exc:
            return _fail(str(exc))
        print(f"malti-server: storage {storage}, config {config_path}, "
              f"listening on http://{args.host}:{args.port} ({args.workers} worker(s))", file=sys.stderr)
        os.environ["DATABASE_URL"] = url
        os.environ["MALTI_CONFIG_PATH"] = str(config_path.resolve())
        import uvicorn  # noqa: PLC0415

        uvicorn.run(
            "malti_server.asgi:app",
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level=args.log_level,
            access_log=not args.no_access_log,
            proxy_headers=True,
            forwarded_allow_ips=args.forwarded_allow_ips,
            timeout_graceful_shutdown=10,
        )
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        if embedded is not None:
            embedded.stop()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "init-config":
        return init_config(argv[1:])
    args = serve_parser().parse_args(argv)
    if args.demo:
        from .demo import run_demo  # noqa: PLC0415

        return run_demo(args)
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
