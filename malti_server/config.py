"""Server configuration: the TOML file (original Malti format plus optional sections), validated
into one typed object, reloaded when the file changes so keys can be added, rotated or removed
without a restart.

Every tunable default lives here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("malti.config")

DEFAULT_CONFIG_PATH = Path("config/malti.toml")
_ORIGIN = re.compile(r"\*|https?://(\[[0-9A-Fa-f:.]+\]|[^/\s:\[\]]+)(:\d{1,5})?")


class ConfigError(Exception):
    """The configuration file is missing or invalid; the message names the offending key."""


@dataclass(frozen=True)
class Principal:
    """Who an API key belongs to: a service (may only ingest its own records) or a user (may only read)."""

    name: str
    kind: str  # "service" or "user"
    services: frozenset[str] | None = None  # users: services they may read, None = all
    description: str = ""

    def may_read(self, service: str) -> bool:
        return self.services is None or service in self.services


@dataclass(frozen=True)
class Thresholds:
    error_rate_success_threshold: float = 0.5
    error_rate_warning_threshold: float = 1.0
    latency_success_threshold: float = 300
    latency_warning_threshold: float = 800

    def as_dict(self) -> dict[str, float]:
        return {
            "error_rate_success_threshold": self.error_rate_success_threshold,
            "error_rate_warning_threshold": self.error_rate_warning_threshold,
            "latency_success_threshold": self.latency_success_threshold,
            "latency_warning_threshold": self.latency_warning_threshold,
        }


@dataclass(frozen=True)
class Retention:
    """How long each resolution is kept, in seconds."""

    raw: float = 7 * 86400
    rollup_5min: float = 90 * 86400
    rollup_1hour: float = 720 * 86400


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 10 * 1024 * 1024  # after gzip decompression too
    max_batch_records: int = 10_000
    ingest_rate: str = "1200/minute"  # batches per service key
    metrics_rate: str = "600/minute"  # metrics queries per user key
    auth_test_rate: str = "10/minute"  # GET /api/v1/auth/test per client IP
    auth_failure_rate: str = "30/minute"  # failed key checks per client IP before 429
    max_future_skew_seconds: float = 3600  # created_at later than now + this is refused
    storage_uri: str = "memory://"  # rate-limit state; redis://host:6379 shares it between hosts


@dataclass(frozen=True)
class Settings:
    """One loaded configuration file."""

    path: Path | None
    keys: dict[str, Principal]  # sha256 hex digest of the key -> principal
    services: dict[str, Principal]
    users: dict[str, Principal]
    thresholds: Thresholds = field(default_factory=Thresholds)
    retention: Retention = field(default_factory=Retention)
    limits: Limits = field(default_factory=Limits)
    #: browser origins allowed to call the API ("*": any); empty: no CORS headers at all
    cors_origins: tuple[str, ...] = ()

    def lookup(self, api_key: str) -> Principal | None:
        """The principal owning ``api_key``: found by its digest, never by comparing secrets."""
        return self.keys.get(key_digest(api_key))


def key_digest(api_key: str) -> str:
    return hashlib.sha256(api_key.encode("utf-8", "surrogatepass")).hexdigest()


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, None: 86400}
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_RATE = re.compile(r"^\s*\d+\s*(/|per)\s*(\d+\s*)?(second|minute|hour|day)s?\s*$")


def parse_duration(value: Any, where: str) -> float:
    """Seconds from ``7`` (days), ``"7d"``, ``"12h"``, ``"30m"``, ``"2w"``."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a duration like \"7d\" or a number of days, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value) * 86400
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    else:
        raise ConfigError(f"{where}: expected a duration like \"7d\" or a number of days, got {value!r}")
    if seconds <= 0:
        raise ConfigError(f"{where}: must be positive, got {value!r}")
    return seconds


def _expect_table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a table, got {type(value).__name__}")
    return value


def _check_keys(table: dict[str, Any], allowed: set[str], where: str) -> None:
    for k in table:
        if k not in allowed:
            raise ConfigError(f"{where}.{k}: unknown key (allowed: {', '.join(sorted(allowed))})")


def _principal_digest(entry: dict[str, Any], where: str) -> str:
    plain = entry.get("api_key")
    hashed = entry.get("api_key_sha256")
    if plain is not None and hashed is not None:
        raise ConfigError(f"{where}: give either api_key or api_key_sha256, not both")
    if plain is not None:
        if not isinstance(plain, str) or not plain.strip():
            raise ConfigError(f"{where}.api_key: must be a non-empty string")
        return key_digest(plain)
    if hashed is not None:
        if not isinstance(hashed, str) or not _SHA256.match(hashed):
            raise ConfigError(f"{where}.api_key_sha256: must be 64 hex digits (sha256 of the key)")
        return hashed.lower()
    raise ConfigError(f"{where}: missing api_key (or api_key_sha256)")


def parse_settings(data: dict[str, Any], path: Path | None = None) -> Settings:
    """Validate a parsed TOML document into :class:`Settings`."""
    keys: dict[str, Principal] = {}
    owners: dict[str, str] = {}

    def register(digest: str, principal: Principal, where: str) -> None:
        if digest in keys:
            raise ConfigError(f"{where}: the same API key is already used by {owners[digest]}")
        keys[digest] = principal
        owners[digest] = where

    services: dict[str, Principal] = {}
    for name, entry in _expect_table(data.get("services", {}), "services").items():
        where = f"services.{name}"
        entry = _expect_table(entry, where)
        _check_keys(entry, {"api_key", "api_key_sha256", "description"}, where)
        principal = Principal(name=name, kind="service", description=str(entry.get("description", "")))
        register(_principal_digest(entry, where), principal, where)
        services[name] = principal

    users: dict[str, Principal] = {}
    for name, entry in _expect_table(data.get("users", {}), "users").items():
        where = f"users.{name}"
        entry = _expect_table(entry, where)
        _check_keys(entry, {"api_key", "api_key_sha256", "description", "services", "username"}, where)
        allowed = entry.get("services")
        if allowed is not None:
            if not isinstance(allowed, list) or not all(isinstance(s, str) for s in allowed):
                raise ConfigError(f"{where}.services: must be a list of service names")
            allowed = frozenset(allowed)
        principal = Principal(
            name=name, kind="user", services=allowed, description=str(entry.get("description", ""))
        )
        register(_principal_digest(entry, where), principal, where)
        users[name] = principal

    dashboard = _expect_table(data.get("dashboard", {}), "dashboard")
    th = _expect_table(dashboard.get("thresholds", {}), "dashboard.thresholds")
    _check_keys(th, set(Thresholds().as_dict()), "dashboard.thresholds")
    for k, v in th.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise ConfigError(f"dashboard.thresholds.{k}: must be a non-negative number, got {v!r}")
    thresholds = Thresholds(**{k: float(v) for k, v in th.items()})

    ret = _expect_table(data.get("retention", {}), "retention")
    _check_keys(ret, {"raw", "rollup_5min", "rollup_1hour"}, "retention")
    retention = Retention(**{k: parse_duration(v, f"retention.{k}") for k, v in ret.items()})

    lim = _expect_table(data.get("limits", {}), "limits")
    defaults = Limits()
    _check_keys(lim, set(defaults.__dataclass_fields__), "limits")
    checked: dict[str, Any] = {}
    for k, v in lim.items():
        default = getattr(defaults, k)
        where = f"limits.{k}"
        if isinstance(default, str):
            if not isinstance(v, str) or not v.strip():
                raise ConfigError(f"{where}: must be a string")
            if k.endswith("_rate") and not _RATE.match(v):
                raise ConfigError(f"{where}: expected a rate like \"600/minute\", got {v!r}")
            checked[k] = v.strip()
        else:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
                raise ConfigError(f"{where}: must be a positive number, got {v!r}")
            checked[k] = type(default)(v)
    limits = Limits(**checked)

    cors = _expect_table(data.get("cors", {}), "cors")
    _check_keys(cors, {"allow_origins"}, "cors")
    origins = cors.get("allow_origins", [])
    if not isinstance(origins, list) or not all(isinstance(o, str) and _ORIGIN.fullmatch(o) for o in origins):
        raise ConfigError(
            'cors.allow_origins: must be a list of origins like "https://dash.example.com" (scheme and host, '
            f'optional port, no path) or "*", got {origins!r}'
        )

    return Settings(
        path=path,
        keys=keys,
        services=services,
        users=users,
        thresholds=thresholds,
        retention=retention,
        limits=limits,
        cors_origins=tuple(o.lower() for o in origins),  # browsers send scheme and host in lower case
    )


def load_settings(path: Path) -> Settings:
    """Read and validate a configuration file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} not found: create one with `malti-server init-config {path}` "
            "or pass --config PATH"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return parse_settings(data, path)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


class SettingsHolder:
    """The current settings, re-read when the file's modification time or size changes.

    Checks the file at most once per ``check_interval`` seconds; an invalid new version is
    logged and ignored, so a typo never locks everyone out.
    """

    def __init__(self, path: Path, check_interval: float = 1.0) -> None:
        self.path = path
        self.check_interval = check_interval
        self._settings = load_settings(path)
        self._stamp = self._file_stamp()
        self._next_check = time.monotonic() + check_interval

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    @property
    def current(self) -> Settings:
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + self.check_interval
            stamp = self._file_stamp()
            if stamp is not None and stamp != self._stamp:
                self._stamp = stamp
                try:
                    self._settings = load_settings(self.path)
                    log.info("reloaded configuration from %s", self.path)
                except ConfigError as exc:
                    log.error("configuration change ignored: %s", exc)
        return self._settings


def resolve_config_path(cli_value: str | None) -> Path:
    """--config, else MALTI_CONFIG_PATH, else ./config/malti.toml."""
    if cli_value:
        return Path(cli_value)
    env = os.environ.get("MALTI_CONFIG_PATH")
    if env:
        return Path(env)
    return DEFAULT_CONFIG_PATH


def generate_key(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(24)}"


def example_config(
    services: list[str],
    users: list[str],
    descriptions: dict[str, str] | None = None,
    title: str = "Malti server configuration (generated by `malti-server init-config`).",
) -> tuple[str, dict[str, str]]:
    """A ready configuration with random keys, and the keys it holds (name -> key)."""
    descriptions = descriptions or {}
    keys: dict[str, str] = {}
    lines = [
        f"# {title}",
        "# Keys are secrets: keep this file private. Changes take effect without a restart.",
        "# Instead of api_key you may store api_key_sha256 = \"<sha256 hex of the key>\".",
        "",
    ]
    for name in services:
        key = keys[name] = generate_key("svc")
        lines += [
            f"[services.{name}]",
            f'api_key = "{key}"',
            f"description = {json.dumps(descriptions.get(name, name))}",
            "",
        ]
    for name in users:
        key = keys[name] = generate_key("usr")
        lines += [
            f"[users.{name}]",
            f'api_key = "{key}"',
            f"description = {json.dumps(descriptions.get(name, 'Reads every service'))}",
            "# services = [\"auth-service\"]  # optional: restrict what this user can read",
            "",
        ]
    lines += [
        "[dashboard.thresholds]",
        "error_rate_success_threshold = 0.5  # percent",
        "error_rate_warning_threshold = 1.0",
        "latency_success_threshold = 300      # milliseconds",
        "latency_warning_threshold = 800",
        "",
        "[retention]",
        'raw = "7d"',
        'rollup_5min = "90d"',
        'rollup_1hour = "720d"',
        "",
        "[limits]",
        "max_body_bytes = 10485760",
        "max_batch_records = 10000",
        'ingest_rate = "1200/minute"',
        'metrics_rate = "600/minute"',
        'auth_test_rate = "10/minute"',
        'auth_failure_rate = "30/minute"',
        'storage_uri = "memory://"',
        "",
    ]
    return "\n".join(lines), keys
