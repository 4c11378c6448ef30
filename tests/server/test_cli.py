"""The ``malti-server`` command: clear one-line errors for every startup problem, ``init-config``
writing a private file whose keys work, and the embedded PostgreSQL keeping data across restarts."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
import warnings
from pathlib import Path

import httpx
import pytest

from malti_testing import ServerProcess, config_toml, create_database, drop_database, free_port, record, run_sync

CLI_TIMEOUT = 60


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "MALTI_CONFIG_PATH")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "malti_server", *args], capture_output=True, text=True,
                          timeout=CLI_TIMEOUT, cwd=cwd, env=full_env)


def assert_clean_failure(result: subprocess.CompletedProcess) -> str:
    """Non-zero exit, one line on stderr, no traceback; returns that line."""
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "malti.toml"
    path.write_text(config_toml())
    return path


# --- startup errors ------------------------------------------------------------------------------


def test_missing_config_is_one_clear_line(tmp_path):
    missing = tmp_path / "nowhere" / "malti.toml"
    line = assert_clean_failure(run_cli("--config", str(missing), "--port", str(free_port()),
                                        "--database-url", "postgresql://postgres@127.0.0.1:1/x"))
    assert str(missing) in line
    assert "init-config" in line  # says how to fix it


def test_missing_default_config_names_the_default_path(tmp_path):
    line = assert_clean_failure(run_cli("--port", str(free_port()), cwd=tmp_path))
    assert "config/malti.toml" in line


def test_config_path_from_environment_is_used(tmp_path):
    missing = tmp_path / "from-env.toml"
    line = assert_clean_failure(run_cli("--port", str(free_port()), env={"MALTI_CONFIG_PATH": str(missing)}))
    assert "from-env.toml" in line


def test_invalid_config_names_the_offending_key(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(config_toml(limits={"bogus": 1}))
    line = assert_clean_failure(run_cli("--config", str(path), "--port", str(free_port())))
    assert "limits.bogus" in line


@pytest.mark.parametrize("text, key", [
    ('[services.auth-service]\napi_key = 5\n', "services.auth-service.api_key"),
    ('[services.auth-service]\ndescription = "no key"\n', "services.auth-service"),
    ('[users.alice]\napi_key = "k-0123456789"\nservices = "auth-service"\n', "users.alice.services"),
    ('[retention]\nraw = "forever"\n', "retention.raw"),
    ('[limits]\ningest_rate = "lots"\n', "limits.ingest_rate"),
    ('[dashboard.thresholds]\nlatency_success_threshold = "fast"\n', "dashboard.thresholds.latency_success_threshold"),
    ('[services.a]\napi_key = "same-key-0123456789"\n[users.b]\napi_key = "same-key-0123456789"\n', "users.b"),
    ('[users.c]\napi_key_sha256 = "not-hex"\n', "users.c.api_key_sha256"),
])
def test_invalid_config_values_name_the_key(tmp_path, text, key):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    line = assert_clean_failure(run_cli("--config", str(path), "--port", str(free_port())))
    assert key in line


def test_config_that_is_not_toml_is_one_clear_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[services.auth-service\napi_key = ")
    line = assert_clean_failure(run_cli("--config", str(path), "--port", str(free_port())))
    assert "TOML" in line


def test_port_in_use_is_one_clear_line(config_file):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        line = assert_clean_failure(run_cli("--config", str(config_file), "--port", str(port),
                                            "--database-url", "postgresql://postgres@127.0.0.1:1/x"))
    assert str(port) in line
    assert "in use" in line
    assert "--port" in line


def test_unreachable_database_url_is_one_clear_line(config_file):
    line = assert_clean_failure(run_cli("--config", str(config_file), "--port", str(free_port()),
                                        "--database-url", "postgresql://postgres@127.0.0.1:1/x"))
    assert "database" in line
    assert "DATABASE_URL" in line or "--database-url" in line


def test_unreachable_database_from_environment_is_one_clear_line(config_file):
    line = assert_clean_failure(run_cli("--config", str(config_file), "--port", str(free_port()),
                                        env={"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x"}))
    assert "database" in line


def test_database_that_cannot_be_migrated_is_one_clear_line(config_file, database_url):
    """A database whose schema history does not fit these migrations (a pre-release build's):
    one line naming the failed migration and what to do, and nothing of it applied."""
    import asyncpg

    async def fake_history():
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute("CREATE TABLE schema_migrations (version text PRIMARY KEY,"
                               " applied_at timestamptz NOT NULL DEFAULT now())")
            # says 001-004 were applied, though none of their tables exist
            await conn.executemany("INSERT INTO schema_migrations (version) VALUES ($1)",
                                   [("001_requests.sql",), ("002_rollup_functions.sql",),
                                    ("003_query_rollups.sql",), ("004_timescaledb.sql",)])
        finally:
            await conn.close()

    run_sync(fake_history())
    line = assert_clean_failure(run_cli("--config", str(config_file), "--port", str(free_port()),
                                        "--database-url", database_url))
    assert "migration 005_" in line and "--data-dir" in line, line

    async def versions():
        conn = await asyncpg.connect(database_url)
        try:
            return {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        finally:
            await conn.close()

    assert max(run_sync(versions())) == "004_timescaledb.sql"  # the failed migration was rolled back


def test_zero_workers_is_refused(config_file):
    assert_clean_failure(run_cli("--config", str(config_file), "--workers", "0", "--port", str(free_port())))


def test_help_lists_the_options():
    result = run_cli("--help")
    assert result.returncode == 0
    for option in ("--config", "--host", "--port", "--database-url", "--data-dir", "--workers"):
        assert option in result.stdout


# --- init-config ---------------------------------------------------------------------------------


def parse_printed_keys(stdout: str) -> dict[str, tuple[str, str]]:
    """name -> (kind, key) from init-config's listing."""
    keys = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] in ("service", "user"):
            keys[parts[1]] = (parts[0], parts[2])
    return keys


def test_init_config_writes_private_file_whose_keys_work(tmp_path, pg_admin_url):
    path = tmp_path / "conf" / "malti.toml"
    result = run_cli("init-config", str(path), "--service", "auth-service", "--user", "alice")
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    keys = parse_printed_keys(result.stdout)
    assert set(keys) == {"auth-service", "alice"}, result.stdout
    assert keys["auth-service"][0] == "service" and keys["alice"][0] == "user"
    assert keys["auth-service"][1] != keys["alice"][1]

    server = ServerProcess(database_url=create_database(pg_admin_url), config_path=path,
                           log_path=tmp_path / "server.log")
    try:
        server.start()
        r = httpx.post(server.url + "/api/v1/ingest", json={"requests": [record("auth-service")]},
                       headers={"X-API-Key": keys["auth-service"][1]}, timeout=30)
        assert r.status_code == 200, r.text
        r = httpx.get(server.url + "/api/v1/auth/test", headers={"X-API-Key": keys["alice"][1]}, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["user"]["name"] == "alice"
    finally:
        server.stop()
        drop_database(pg_admin_url, server.database_url)


def test_init_config_defaults_give_one_service_and_one_user(tmp_path):
    result = run_cli("init-config", str(tmp_path / "m.toml"))
    assert result.returncode == 0, result.stderr
    kinds = sorted(kind for kind, _ in parse_printed_keys(result.stdout).values())
    assert kinds == ["service", "user"]


def test_init_config_generates_fresh_keys_each_time(tmp_path):
    a = parse_printed_keys(run_cli("init-config", str(tmp_path / "a.toml")).stdout)
    b = parse_printed_keys(run_cli("init-config", str(tmp_path / "b.toml")).stdout)
    assert {k for _, k in a.values()}.isdisjoint({k for _, k in b.values()})


def test_init_config_does_not_overwrite_without_force(tmp_path):
    path = tmp_path / "malti.toml"
    path.write_text("# mine\n")
    line = assert_clean_failure(run_cli("init-config", str(path)))
    assert "--force" in line
    assert path.read_text() == "# mine\n"
    assert run_cli("init-config", str(path), "--force").returncode == 0
    assert path.read_text() != "# mine\n"


# --- embedded PostgreSQL -------------------------------------------------------------------------


def postgres_processes_for(data_dir: Path) -> list[int]:
    """PIDs of processes whose command line names ``data_dir`` (a running postmaster does)."""
    needle = str(data_dir.resolve()).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline and b"postgres" in cmdline:
            pids.append(int(entry.name))
    return pids


class EmbeddedServer:
    """``malti-server --data-dir DIR`` as a user runs it (no database URL)."""

    def __init__(self, config: Path, data_dir: Path, log: Path) -> None:
        self.config, self.data_dir, self.log_path = config, data_dir, log
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120, xdg_data_home: Path | None = None) -> None:
        """Start with ``--data-dir``, or with none and ``XDG_DATA_HOME`` set (the default folder)."""
        env = {k: v for k, v in os.environ.items()
               if k not in ("DATABASE_URL", "MALTI_CONFIG_PATH", "MALTI_DATA_DIR")}
        where = ["--data-dir", str(self.data_dir)]
        if xdg_data_home is not None:
            env["XDG_DATA_HOME"] = str(xdg_data_home)
            where = []
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "malti_server", "--config", str(self.config), *where,
                 "--port", str(self.port), "--log-level", "warning", "--no-access-log"],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text()
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("embedded server did not become healthy:\n" + self.log_path.read_text())

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def sql(self, query: str):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs complains about XDG_RUNTIME_DIR
            from pgserver.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self.data_dir.resolve())
        assert info is not None, "embedded PostgreSQL is not running"

        async def go():
            import asyncpg

            conn = await asyncpg.connect(info.get_uri())
            try:
                return await conn.fetch(query)
            finally:
                await conn.close()

        return run_sync(go())


def test_embedded_mode_keeps_data_across_restarts_and_stops_postgres(tmp_path, config_file):
    data_dir = tmp_path / "xdg" / "malti" / "pgdata"  # the default folder when XDG_DATA_HOME=tmp/xdg
    server = EmbeddedServer(config_file, data_dir, tmp_path / "embedded.log")
    try:
        server.start()
        r = httpx.post(server.url + "/api/v1/ingest",
                       json={"requests": [record(endpoint="/embedded", response_time=float(i)) for i in range(7)]},
                       headers={"X-API-Key": "test-auth-service-key-0123456789"}, timeout=30)
        assert r.status_code == 200, r.text
        assert postgres_processes_for(data_dir), "no postgres process for the data dir while running"

        code = server.terminate()
        assert postgres_processes_for(data_dir) == [], "embedded PostgreSQL left running after SIGTERM"
        assert code == 0, server.log_path.read_text()
        assert not (data_dir / "postmaster.pid").exists()
        assert "Traceback" not in server.log_path.read_text()

        # Second start without --data-dir: the default per-user folder is the same one.
        server.start(xdg_data_home=tmp_path / "xdg")
        rows = server.sql("SELECT count(*) AS n FROM requests WHERE endpoint = '/embedded'")
        assert rows[0]["n"] == 7
        versions = server.sql("SELECT version, count(*) AS n FROM schema_migrations GROUP BY 1")
        assert all(r["n"] == 1 for r in versions)

        # Ctrl-C stops it as cleanly as SIGTERM.
        assert server.terminate(signal.SIGINT) == 0
        assert postgres_processes_for(data_dir) == [], "embedded PostgreSQL left running after Ctrl-C"
        assert "Traceback" not in server.log_path.read_text()
    finally:
        server.kill()
        for pid in postgres_processes_for(data_dir):  # only processes of this test's own data dir
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_quick_start_init_config_then_serve_from_the_same_folder(tmp_path, pg_admin_url):
    """`malti-server init-config` then `malti-server` in one folder: the default paths meet."""
    result = run_cli("init-config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "config" / "malti.toml").exists()
    keys = parse_printed_keys(result.stdout)
    [(service, (_, service_key))] = [(n, k) for n, k in keys.items() if k[0] == "service"]

    database_url = create_database(pg_admin_url)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "MALTI_CONFIG_PATH")}
    with open(tmp_path / "server.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "malti_server", "--port", str(port), "--database-url",
                                 database_url, "--log-level", "warning"],
                                cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.2)
        r = httpx.post(url + "/api/v1/ingest", json={"requests": [record(service)]},
                       headers={"X-API-Key": service_key}, timeout=30)
        assert r.status_code == 200, r.text
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        drop_database(pg_admin_url, database_url)
