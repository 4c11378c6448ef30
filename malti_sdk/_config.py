"""Instrumentation settings: one typed object, read from the ``MALTI_*`` environment.

The names and defaults are those of the original ``malti-telemetry`` 1.0.4 package
(its code, where its README disagrees), plus a few settings the original did not have
(buffer size, retry ceiling, shutdown flush budget, gzip). A malformed value never
crashes the app: it is logged once and the default is used.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, fields
from typing import Any, Callable

logger = logging.getLogger("malti_sdk")

#: where batches go, below ``MALTI_URL``
INGEST_PATH = "/api/v1/ingest"

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", ""}


def _parse_bool(text: str) -> bool:
    """``true`` (any case) is true and other words false, as in the original package,
    which compared with ``"true"``; ``1``, ``yes`` and ``on`` are true here as well."""
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value not in _FALSE:
        logger.warning("Malti: %r is not true/false; read as false (like the original package)", text)
    return False


def _positive_int(text: str) -> int:
    value = int(text.strip())
    if value < 1:
        raise ValueError(f"must be >= 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text.strip())
    if value < 0:
        raise ValueError(f"must be >= 0, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text.strip())
    if not value >= 0.0 or value == float("inf"):  # also rejects NaN
        raise ValueError(f"must be a finite number >= 0, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value == 0.0:
        raise ValueError("must be > 0")
    return value


def _percent(text: str) -> float:
    value = _positive_float(text)
    if value > 100.0:
        raise ValueError(f"must be at most 100, got {value}")
    return value


def _text(text: str) -> str:
    return text


def _optional_text(text: str) -> str | None:
    return text or None


def _url(text: str) -> str:
    return text.strip().rstrip("/")


# field name -> (environment variable, parser); defaults live on the dataclass below.
_ENV: dict[str, tuple[str, Callable[[str], Any]]] = {
    "service_name": ("MALTI_SERVICE_NAME", _text),
    "api_key": ("MALTI_API_KEY", _optional_text),
    "malti_url": ("MALTI_URL", _url),
    "node": ("MALTI_NODE", _text),
    "batch_size": ("MALTI_BATCH_SIZE", _positive_int),
    "batch_interval": ("MALTI_BATCH_INTERVAL", _positive_float),
    "max_retries": ("MALTI_MAX_RETRIES", _non_negative_int),
    "retry_delay": ("MALTI_RETRY_DELAY", _non_negative_float),
    "http_timeout": ("MALTI_HTTP_TIMEOUT", _positive_float),
    "max_keepalive_connections": ("MALTI_MAX_KEEPALIVE_CONNECTIONS", _non_negative_int),
    "max_connections": ("MALTI_MAX_CONNECTIONS", _positive_int),
    "overflow_threshold_percent": ("MALTI_OVERFLOW_THRESHOLD_PERCENT", _percent),
    "clean_mode": ("MALTI_CLEAN_MODE", _parse_bool),
    "use_ip_as_consumer": ("MALTI_USE_IP_AS_CONSUMER", _parse_bool),
    "ip_anonymize": ("MALTI_IP_ANONYMIZE", _parse_bool),
    # Settings the original did not have.
    "buffer_size": ("MALTI_BUFFER_SIZE", _positive_int),
    "max_retry_delay": ("MALTI_MAX_RETRY_DELAY", _positive_float),
    "shutdown_timeout": ("MALTI_SHUTDOWN_TIMEOUT", _non_negative_float),
    "gzip": ("MALTI_GZIP", _parse_bool),
}


@dataclass
class TelemetryConfig:
    """Every setting of the instrumentation, with the original package's defaults.

    Build it from the environment with :meth:`from_env`; keyword overrides win over
    the environment (``TelemetryConfig.from_env(batch_size=100)``).
    """

    service_name: str = "default-service"
    api_key: str | None = None
    malti_url: str = "http://localhost:8000"
    node: str = "default-node"
    batch_size: int = 500
    batch_interval: float = 60.0
    max_retries: int = 3
    retry_delay: float = 5.0
    http_timeout: float = 15.0
    max_keepalive_connections: int = 5
    max_connections: int = 10
    overflow_threshold_percent: float = 90.0
    clean_mode: bool = True
    use_ip_as_consumer: bool = False
    ip_anonymize: bool = False
    #: records held while the server is slow or down; beyond this new records are
    #: dropped and counted under ``dropped["overflow"]``. 100,000 records is about
    #: 200 s of a 500 req/s app, some 20 MB at most.
    buffer_size: int = 100_000
    #: ceiling of the exponential retry backoff, seconds.
    max_retry_delay: float = 30.0
    #: how long stopping may take to deliver what is still buffered, seconds.
    shutdown_timeout: float = 10.0
    #: gzip request bodies larger than a kilobyte.
    gzip: bool = True

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> "TelemetryConfig":
        """Read every ``MALTI_*`` variable; malformed values fall back to the default."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, (variable, parse) in _ENV.items():
            raw = env.get(variable)
            if raw is None:
                continue
            try:
                values[name] = parse(raw)
            except (TypeError, ValueError) as exc:
                logger.warning("Malti: ignoring %s=%r (%s); using the default", variable, raw, exc)
        known = {f.name for f in fields(cls)}
        for name, value in overrides.items():
            if name not in known:
                raise TypeError(f"unknown Malti setting {name!r}")
            if value is not None:
                values[name] = value
        return cls(**values)

    @property
    def ingest_url(self) -> str:
        """Where batches are POSTed."""
        return self.malti_url + INGEST_PATH

    @property
    def overflow_threshold(self) -> int:
        """Buffer fill level (records) at which a warning is logged."""
        return max(1, int(self.buffer_size * self.overflow_threshold_percent / 100.0))
