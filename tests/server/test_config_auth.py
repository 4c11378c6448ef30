"""Keys from the config file: reloaded without a restart, stored as digests if wished, kinds kept
apart; failed attempts and /api/v1/auth/test rate limited per client address."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx
import pytest

from malti_testing import SERVICE_KEYS, USER_KEYS, config_toml, record
from server_test_helpers import unique, wait_until

AUTH_TEST = "/api/v1/auth/test"
RELOAD_TIMEOUT = 10  # generous; the server checks the file about once a second


def write_config(path: Path, text: str) -> None:
    """Replace the file atomically, as editors and deployment tools do."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def ingest_status(server, key: str, service: str = "auth-service") -> int:
    r = httpx.post(server.url + "/api/v1/ingest", json={"requests": [record(service)]},
                   headers={"X-API-Key": key}, timeout=30)
    return r.status_code


def auth_test(server, key: str | None) -> httpx.Response:
    headers = {} if key is None else {"X-API-Key": key}
    return httpx.get(server.url + AUTH_TEST, headers=headers, timeout=30)


# --- reload without restart ----------------------------------------------------------------------


@pytest.fixture
def reloading_server(start_server):
    return start_server()


def test_added_service_key_works_without_restart(reloading_server):
    server = reloading_server
    new_key = "added-service-key-0123456789"
    assert ingest_status(server, new_key, "new-service") == 401
    write_config(server.config_path, config_toml(services={**SERVICE_KEYS, "new-service": new_key}))
    assert wait_until(lambda: ingest_status(server, new_key, "new-service") == 200, RELOAD_TIMEOUT)
    assert ingest_status(server, SERVICE_KEYS["auth-service"]) == 200


def test_rotated_service_key_old_401_new_200(reloading_server):
    server = reloading_server
    old, new = SERVICE_KEYS["auth-service"], "rotated-auth-service-key-0123"
    assert ingest_status(server, old) == 200
    write_config(server.config_path, config_toml(services={**SERVICE_KEYS, "auth-service": new}))
    assert wait_until(lambda: ingest_status(server, new) == 200, RELOAD_TIMEOUT)
    assert ingest_status(server, old) == 401


def test_removed_service_key_is_401(reloading_server):
    server = reloading_server
    key = SERVICE_KEYS["payment-service"]
    assert ingest_status(server, key, "payment-service") == 200
    remaining = {k: v for k, v in SERVICE_KEYS.items() if k != "payment-service"}
    write_config(server.config_path, config_toml(services=remaining))
    assert wait_until(lambda: ingest_status(server, key, "payment-service") == 401, RELOAD_TIMEOUT)
    assert ingest_status(server, SERVICE_KEYS["auth-service"]) == 200


def test_rotated_user_key_takes_effect_without_restart(reloading_server):
    server = reloading_server
    old, new = USER_KEYS["viewer"], "rotated-viewer-key-0123456789"
    assert auth_test(server, old).status_code == 200
    write_config(server.config_path, config_toml(users={**USER_KEYS, "viewer": new}))
    assert wait_until(lambda: auth_test(server, new).status_code == 200, RELOAD_TIMEOUT)
    assert auth_test(server, old).status_code == 401


def test_invalid_config_edit_is_ignored_and_old_keys_keep_working(reloading_server):
    server = reloading_server
    write_config(server.config_path, config_toml(limits={"bogus": 1}))
    # The file is checked when a request needs the settings: keep asking until the log says it was refused.
    assert wait_until(lambda: ingest_status(server, SERVICE_KEYS["auth-service"]) == 200
                      and "limits.bogus" in server.log(), RELOAD_TIMEOUT), server.log()
    assert ingest_status(server, SERVICE_KEYS["auth-service"]) == 200
    assert auth_test(server, USER_KEYS["viewer"]).status_code == 200
    # Broken TOML too.
    write_config(server.config_path, "[services.auth-service\napi_key = ")
    assert wait_until(lambda: ingest_status(server, SERVICE_KEYS["auth-service"]) == 200
                      and "not valid TOML" in server.log(), RELOAD_TIMEOUT), server.log()
    assert ingest_status(server, SERVICE_KEYS["auth-service"]) == 200
    # A later valid edit is picked up again.
    write_config(server.config_path, config_toml(services={"auth-service": "after-fix-key-0123456789"}))
    assert wait_until(lambda: ingest_status(server, "after-fix-key-0123456789") == 200, RELOAD_TIMEOUT)


def test_deleted_config_file_keeps_last_keys(reloading_server):
    server = reloading_server
    server.config_path.unlink()
    for _ in range(3):
        assert ingest_status(server, SERVICE_KEYS["auth-service"]) == 200
    assert server.get("/health").status_code == 200


# --- key forms and kinds -------------------------------------------------------------------------


def test_api_key_sha256_works(start_server):
    server = start_server(start=False)
    service_key, user_key = "hashed-service-key-0123456789", "hashed-user-key-0123456789"
    server.config_path.write_text(
        "[services.auth-service]\n"
        f'api_key_sha256 = "{hashlib.sha256(service_key.encode()).hexdigest()}"\n'
        "[users.alice]\n"
        f'api_key_sha256 = "{hashlib.sha256(user_key.encode()).hexdigest().upper()}"\n'
    )
    server.start()
    assert ingest_status(server, service_key) == 200
    r = auth_test(server, user_key)
    assert r.status_code == 200, r.text
    assert r.json()["user"]["name"] == "alice"
    # The digest itself is not a key.
    assert ingest_status(server, hashlib.sha256(service_key.encode()).hexdigest()) == 401


def test_service_key_on_auth_test_is_403(malti_server):
    for key in malti_server.service_keys.values():
        r = auth_test(malti_server, key)
        assert r.status_code == 403, r.text
        assert r.json()["detail"]


def test_user_key_on_ingest_is_403(malti_server):
    for key in malti_server.user_keys.values():
        assert ingest_status(malti_server, key) == 403


def test_auth_test_missing_or_unknown_key_is_401(malti_server):
    for key in (None, "", "invalid-key-12345"):
        r = auth_test(malti_server, key)
        assert r.status_code == 401, (key, r.text)


def test_auth_test_returns_user_and_thresholds(malti_server):
    r = auth_test(malti_server, malti_server.user_keys["viewer"])
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["authenticated"] is True
    user = data["user"]
    assert (user["name"], user["type"], user["services"]) == ("viewer", "user", None)
    assert data["thresholds"] == {"error_rate_success_threshold": 0.5, "error_rate_warning_threshold": 1.0,
                                  "latency_success_threshold": 300, "latency_warning_threshold": 800}


def test_auth_test_shows_user_service_restriction(malti_server):
    r = auth_test(malti_server, malti_server.user_keys["restricted"])
    assert r.status_code == 200, r.text
    user = r.json()["user"]
    assert (user["name"], user["type"], user["services"]) == ("restricted", "user", ["auth-service"])


def test_auth_test_returns_configured_thresholds(start_server):
    thresholds = {"error_rate_success_threshold": 2.0, "error_rate_warning_threshold": 5.5,
                  "latency_success_threshold": 150, "latency_warning_threshold": 1200}
    server = start_server(thresholds=thresholds)
    r = auth_test(server, USER_KEYS["viewer"])
    assert r.status_code == 200, r.text
    assert r.json()["thresholds"] == thresholds


# --- rate limits per client address -------------------------------------------------------------


def test_auth_failures_are_rate_limited_per_ip(start_server):
    server = start_server(limits={"auth_failure_rate": "3/minute"})
    # Successful requests do not count as failures.
    for _ in range(5):
        assert ingest_status(server, SERVICE_KEYS["auth-service"]) == 200
    # Missing and wrong keys do.
    assert auth_test(server, None).status_code == 401
    assert ingest_status(server, "wrong-key-1") == 401
    assert ingest_status(server, "wrong-key-2") == 401
    r = httpx.post(server.url + "/api/v1/ingest", json={"requests": [record()]},
                   headers={"X-API-Key": "wrong-key-again"}, timeout=30)
    assert r.status_code == 429, r.text
    assert int(r.headers["Retry-After"]) >= 1
    assert r.json()["detail"]
    assert auth_test(server, "yet-another-wrong-key").status_code == 429


def test_auth_test_is_limited_to_auth_test_rate_per_ip(start_server):
    # 10 per minute, the original Malti's limit: the 11th request within a minute is refused.
    server = start_server(limits={"auth_test_rate": "10/minute"})
    codes = [auth_test(server, USER_KEYS["viewer"]).status_code for _ in range(10)]
    assert codes == [200] * 10
    r = auth_test(server, USER_KEYS["restricted"])
    assert r.status_code == 429, r.text
    assert int(r.headers["Retry-After"]) >= 1
    # Only the auth test endpoint is limited: ingest still works from the same address.
    assert ingest_status(server, SERVICE_KEYS["auth-service"]) == 200


def test_reload_reaches_every_worker(start_server):
    server = start_server(workers=2)
    new_key = "two-worker-key-0123456789"
    write_config(server.config_path, config_toml(services={**SERVICE_KEYS, "new-service": new_key}))
    assert wait_until(lambda: ingest_status(server, new_key, "new-service") == 200, RELOAD_TIMEOUT)
    # Whichever worker answers (a new connection each time), the key is known: allow each worker a
    # moment to notice the change, then every request must pass.
    assert wait_until(lambda: all(ingest_status(server, new_key, "new-service") == 200 for _ in range(10)),
                      RELOAD_TIMEOUT)
    assert all(ingest_status(server, new_key, "new-service") == 200 for _ in range(20))


# --- CORS ----------------------------------------------------------------------------------------


def preflight(server, origin: str, path: str = "/api/v1/metrics/aggregate") -> httpx.Response:
    return httpx.options(server.url + path, headers={
        "Origin": origin, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "x-api-key"}, timeout=30)


def test_cors_only_for_configured_origins_and_follows_config_changes(start_server):
    server = start_server(cors_origins=["https://dash.example", "http://localhost:5173"])
    ok = preflight(server, "https://dash.example")
    assert ok.status_code == 200, ok.text
    assert ok.headers["access-control-allow-origin"] == "https://dash.example"
    assert "x-api-key" in ok.headers["access-control-allow-headers"].lower()
    assert preflight(server, "https://evil.example").status_code == 400
    r = httpx.get(server.url + AUTH_TEST, headers={"X-API-Key": USER_KEYS["viewer"], "Origin": "http://localhost:5173"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://localhost:5173"
    r = httpx.get(server.url + AUTH_TEST, headers={"X-API-Key": USER_KEYS["viewer"], "Origin": "https://evil.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    # an error answer carries the header too (a browser shows the 401, not a CORS failure)
    r = httpx.get(server.url + AUTH_TEST, headers={"Origin": "https://dash.example"})
    assert r.status_code == 401 and r.headers["access-control-allow-origin"] == "https://dash.example"

    write_config(server.config_path, config_toml(cors_origins=["*"]))
    assert wait_until(lambda: preflight(server, "https://other.example").status_code == 200, RELOAD_TIMEOUT)
    write_config(server.config_path, config_toml())  # no [cors]: no CORS at all, as by default
    assert wait_until(lambda: preflight(server, "https://dash.example").status_code == 405, RELOAD_TIMEOUT)
    r = httpx.get(server.url + AUTH_TEST, headers={"X-API-Key": USER_KEYS["viewer"], "Origin": "https://dash.example"})
    assert "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize("origins", ['"https://dash.example/"', '"dash.example"', '"https://a.example", 3', '"null"'])
def test_bad_cors_origins_are_a_config_error(tmp_path, origins):
    from malti_server.config import ConfigError, load_settings

    path = tmp_path / "malti.toml"
    path.write_text(config_toml() + f"\n[cors]\nallow_origins = [{origins}]\n")
    with pytest.raises(ConfigError, match="cors.allow_origins"):
        load_settings(path)
