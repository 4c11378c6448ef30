"""Fixtures of the server tests: one running server shared by every module of tests/server
(each test marks its rows with unique endpoints or consumers, so tests do not see each other's data)."""

from __future__ import annotations

import pytest

from server_test_helpers import own_server


@pytest.fixture(scope="session")
def malti_server(pg_admin_url, tmp_path_factory):
    """Overrides tests/conftest.py's module-scoped server: same config, started once for tests/server."""
    with own_server(pg_admin_url, tmp_path_factory.mktemp("server")) as server:
        yield server
