"""GET / (HTML), GET /openapi.json (OpenAPI 3 listing every endpoint of docs/api.md), GET /docs."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

API_MD = Path(__file__).resolve().parents[2] / "docs" / "api.md"
HTTP_METHODS = {"get", "post", "put", "patch", "delete", "head", "options"}


def documented_endpoints() -> set[tuple[str, str]]:
    """(method, path) of every endpoint heading and alias in docs/api.md."""
    text = API_MD.read_text()
    found = {(m.lower(), p) for m, p in re.findall(r"\b(GET|POST|PUT|PATCH|DELETE)\s+(/[\w/{}.-]*)", text)}
    found |= {("get", p) for p in re.findall(r"`(/api/v1/[\w/]+)` is an alias", text)}
    return found


def test_root_returns_html_page(malti_server):
    r = httpx.get(malti_server.url + "/", timeout=30)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "<html" in r.text.lower()
    assert "/docs" in r.text
    assert "malti-tui" in r.text


def test_root_page_needs_no_key_and_escapes_the_host(malti_server):
    r = httpx.get(malti_server.url + "/", headers={"Host": "evil<script>alert(1)</script>"}, timeout=30)
    assert r.status_code in (200, 400)
    assert "<script>alert(1)</script>" not in r.text


def test_docs_returns_html(malti_server):
    r = httpx.get(malti_server.url + "/docs", timeout=30)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "<html" in r.text.lower()
    assert "openapi.json" in r.text


def test_openapi_json_is_openapi_3(malti_server):
    r = httpx.get(malti_server.url + "/openapi.json", timeout=30)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    spec = r.json()
    assert spec["openapi"].startswith("3.")
    assert spec["info"]["title"] and spec["info"]["version"]
    assert isinstance(spec["paths"], dict) and spec["paths"]
    for path, item in spec["paths"].items():
        assert path.startswith("/"), path
        operations = {k: v for k, v in item.items() if k in HTTP_METHODS}
        assert operations, path
        for method, op in operations.items():
            assert op.get("responses"), (method, path)
            for code in op["responses"]:
                assert code == "default" or re.fullmatch(r"[1-5]\d\d|[1-5]XX", code), (path, code)


def test_openapi_lists_every_documented_endpoint(malti_server):
    spec = httpx.get(malti_server.url + "/openapi.json", timeout=30).json()
    listed = {(method, path) for path, item in spec["paths"].items() for method in item if method in HTTP_METHODS}
    documented = documented_endpoints()
    assert ("post", "/api/v1/ingest") in documented  # the scan of docs/api.md works
    assert len(documented) >= 8
    missing = documented - listed
    assert not missing, f"endpoints of docs/api.md missing from /openapi.json: {sorted(missing)}"
    for page in ("/", "/health", "/openapi.json", "/docs"):
        assert ("get", page) in listed


def test_openapi_references_resolve(malti_server):
    r = httpx.get(malti_server.url + "/openapi.json", timeout=30)
    spec = r.json()
    refs = set(re.findall(r'"\$ref":\s*"#/([^"]+)"', r.text))
    for ref in refs:
        node = spec
        for part in ref.split("/"):
            assert part in node, f"unresolved $ref #/{ref}"
            node = node[part]


def test_openapi_describes_the_api_key_header(malti_server):
    spec = httpx.get(malti_server.url + "/openapi.json", timeout=30).json()
    schemes = spec["components"]["securitySchemes"].values()
    assert any(s["type"] == "apiKey" and s["in"] == "header" and s["name"] == "X-API-Key" for s in schemes)


def test_health_reports_version_and_storage(malti_server):
    r = httpx.get(malti_server.url + "/health", timeout=30)
    assert r.status_code == 200
    data = r.json()
    assert data["status"] == "healthy"
    assert data["database"] == "ok"
    assert data["storage"] in ("postgresql", "timescaledb")
    assert data["version"]


def test_unknown_path_is_json_404(malti_server):
    r = httpx.get(malti_server.url + "/no/such/path", timeout=30)
    assert r.status_code == 404
    assert "detail" in r.json()


def test_wrong_method_on_ingest_is_405(malti_server):
    r = httpx.get(malti_server.url + "/api/v1/ingest", headers={"X-API-Key": malti_server.service_keys["auth-service"]},
                  timeout=30)
    assert r.status_code == 405
    assert "detail" in r.json()
