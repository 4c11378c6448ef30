"""Fixtures of the notebook tests: a server seeded with notebook_data.known_records()."""

from __future__ import annotations

import pytest

from notebook_data import known_records


@pytest.fixture(scope="module")
def seeded(malti_server):
    by_service: dict[str, list[dict]] = {}
    for record in known_records():
        by_service.setdefault(record["service"], []).append(record)
    for service, records in by_service.items():
        response = malti_server.ingest(records, service=service)
        assert response.status_code == 200, response.text
    malti_server.compact()
    return malti_server


@pytest.fixture
def m(seeded):
    from malti_notebook import connect

    with connect(seeded.url, seeded.user_keys["viewer"]) as connection:
        yield connection
