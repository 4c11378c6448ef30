"""The OpenAPI 3 description of every endpoint, and a self-contained page rendering it (no CDN:
servers often run without internet access)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from . import __version__

_ERROR = {"$ref": "#/components/schemas/Error"}
_LAT = {"type": ["number", "null"], "description": "milliseconds, 2xx responses only"}


def _error_responses(*codes: int) -> dict[str, Any]:
    text = {
        400: "Bad request", 401: "Missing or unknown API key", 403: "Wrong key type or foreign service",
        413: "Body or batch too large", 415: "Not JSON / unsupported encoding",
        422: "Invalid parameters or records (nothing stored)", 429: "Rate limited (see Retry-After)",
        503: "Storage unavailable (see Retry-After)",
    }
    return {
        str(c): {"description": text[c], "content": {"application/json": {"schema": _ERROR}}} for c in codes
    }


_FILTERS = [
    {"name": n, "in": "query", "required": False, "schema": {"type": "string"}, "description": d}
    for n, d in (
        ("service", "only this service"),
        ("node", "only this node"),
        ("method", "only this HTTP method"),
        ("endpoint", "only this route pattern, e.g. /users/{user_id}"),
        ("consumer", "only this consumer"),
        ("context", "only this context"),
        ("start_time", "ISO 8601; default 7 days before end_time (60 minutes for realtime)"),
        ("end_time", "ISO 8601; default now"),
    )
]
_INTERVAL = {"name": "interval", "in": "query", "required": False,
             "schema": {"type": "string", "enum": ["1min", "5min", "1hour"]}}
_SECURITY = [{"ApiKey": []}]


@lru_cache(maxsize=1)
def openapi_spec() -> dict[str, Any]:
    dashboard_ref = {"$ref": "#/components/schemas/Dashboard"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Malti",
            "version": __version__,
            "description": "Self-hosted API telemetry: ingest request records, query dashboards. "
            "Service keys may only ingest their own service; user keys may only read.",
        },
        "components": {
            "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["detail"],
                    "properties": {
                        "detail": {"type": "string"},
                        "errors": {"type": "array", "items": {"type": "object", "properties": {
                            "index": {"type": ["integer", "null"]}, "field": {"type": "string"},
                            "error": {"type": "string"}}}},
                    },
                },
                "Record": {
                    "type": "object",
                    "required": ["service", "method", "endpoint", "status", "response_time", "consumer"],
                    "properties": {
                        "service": {"type": "string"},
                        "node": {"type": ["string", "null"]},
                        "method": {"type": "string", "example": "GET"},
                        "endpoint": {"type": "string", "example": "/users/{user_id}"},
                        "status": {"type": "integer", "minimum": 100, "maximum": 599},
                        "response_time": {"type": "number", "minimum": 0, "description": "milliseconds"},
                        "consumer": {"type": "string"},
                        "context": {"type": ["string", "null"]},
                        "created_at": {"type": "string", "format": "date-time",
                                       "description": "default now; naive means UTC"},
                    },
                },
                "StoredRecord": {"allOf": [{"$ref": "#/components/schemas/Record"}, {
                    "type": "object", "properties": {"id": {"type": "integer"}}}]},
                "Dashboard": {
                    "type": "object",
                    "description": "Every field of the original Malti DashboardMetricsResponse, plus p50/p99, "
                    "error counts per bucket, per-endpoint/consumer latency and the resolution used.",
                    "properties": {
                        "time_series": {"type": "array", "items": {"type": "object", "properties": {
                            "bucket": {"type": "string", "format": "date-time"},
                            "total_requests": {"type": "integer"}, "error_count": {"type": "integer"},
                            "min_latency": _LAT, "avg_latency": _LAT, "p50_latency": _LAT,
                            "p95_latency": _LAT, "p99_latency": _LAT, "max_latency": _LAT}}},
                        "metrics_summary": {"type": "object"},
                        "endpoints": {"type": "array", "items": {"type": "object"}},
                        "status_distribution": {"type": "array", "items": {"type": "object"}},
                        "consumers": {"type": "array", "items": {"type": "object"}},
                        "system_overview": {"type": "object"},
                        "distinct_nodes": {"type": "array", "items": {"type": "string"}},
                        "distinct_contexts": {"type": "array", "items": {"type": "string"}},
                        "resolution": {"type": "string", "enum": ["1min", "5min", "1hour"]},
                        "start_time": {"type": "string", "format": "date-time"},
                        "end_time": {"type": "string", "format": "date-time"},
                    },
                },
            },
        },
        "paths": {
            "/health": {"get": {
                "summary": "Server and database health",
                "responses": {"200": {"description": "healthy"}, "503": {"description": "database unreachable"}},
            }},
            "/": {"get": {"summary": "About page (HTML)", "responses": {"200": {"description": "HTML"}}}},
            "/api/v1/ingest": {"post": {
                "summary": "Store a batch of request records (all or nothing)",
                "security": _SECURITY,
                "parameters": [
                    {"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string"},
                     "description": "a retried batch with the same key is stored once"},
                    {"name": "Content-Encoding", "in": "header", "required": False,
                     "schema": {"type": "string", "enum": ["identity", "gzip"]}},
                ],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["requests"],
                    "properties": {"requests": {"type": "array", "items": {"$ref": "#/components/schemas/Record"}}},
                }}}},
                "responses": {
                    "200": {"description": "stored", "content": {"application/json": {"schema": {
                        "type": "object", "properties": {"message": {"type": "string"}, "count": {"type": "integer"},
                                                         "service": {"type": "string"},
                                                         "duplicate": {"type": "boolean"}}}}}},
                    **_error_responses(400, 401, 403, 413, 415, 422, 429, 503),
                },
            }},
            "/api/v1/metrics/aggregate": {"get": {
                "summary": "Dashboard metrics (5-minute or 1-hour resolution)",
                "security": _SECURITY,
                "parameters": [*_FILTERS, _INTERVAL],
                "responses": {"200": {"description": "dashboard", "content": {"application/json": {"schema": dashboard_ref}}},
                              **_error_responses(401, 403, 422, 429, 503)},
            }},
            "/api/v1/metrics/aggregate/realtime": {"get": {
                "summary": "Dashboard metrics at 1-minute resolution over at most 60 minutes",
                "security": _SECURITY,
                "parameters": _FILTERS,
                "responses": {"200": {"description": "dashboard", "content": {"application/json": {"schema": dashboard_ref}}},
                              **_error_responses(401, 403, 422, 429, 503)},
            }},
            "/api/v1/metrics/requests": {"get": {
                "summary": "Raw records, newest first, with keyset cursor pagination",
                "security": _SECURITY,
                "parameters": [*_FILTERS,
                               {"name": "status", "in": "query", "required": False, "schema": {"type": "integer"}},
                               {"name": "limit", "in": "query", "required": False,
                                "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
                               {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "a page", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {
                        "requests": {"type": "array", "items": {"$ref": "#/components/schemas/StoredRecord"}},
                        "next_cursor": {"type": ["string", "null"]}}}}}},
                    **_error_responses(401, 403, 422, 429, 503)},
            }},
            "/api/v1/metrics/raw": {"get": {
                "summary": "Alias of /api/v1/metrics/requests", "security": _SECURITY,
                "parameters": _FILTERS,
                "responses": {"200": {"description": "a page"}, **_error_responses(401, 403, 422)},
            }},
            "/api/v1/metrics/dimensions": {"get": {
                "summary": "Services, nodes, endpoints, methods, consumers and contexts seen in a range",
                "security": _SECURITY,
                "parameters": _FILTERS,
                "responses": {"200": {"description": "values for filter pickers"},
                              **_error_responses(401, 403, 422, 429, 503)},
            }},
            "/api/v1/auth/test": {"get": {
                "summary": "Check a user key; returns the user and the dashboard thresholds",
                "security": _SECURITY,
                "responses": {"200": {"description": "authenticated"}, **_error_responses(401, 403, 429)},
            }},
            "/openapi.json": {"get": {"summary": "This description", "responses": {"200": {"description": "JSON"}}}},
            "/docs": {"get": {"summary": "This description rendered as a page", "responses": {"200": {"description": "HTML"}}}},
        },
    }


DOCS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Malti API</title>
<style>
body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.45}
.op{border:1px solid #ddd;border-radius:6px;margin:.8rem 0;padding:.6rem .9rem}
.m{display:inline-block;min-width:4rem;font-weight:bold;color:#fff;border-radius:3px;padding:0 .4rem;margin-right:.5rem}
.get{background:#2b7bb9}.post{background:#2f9e44}code{background:#f3f3f3;padding:0 .25rem}
table{border-collapse:collapse}td,th{border:1px solid #eee;padding:.15rem .5rem;text-align:left;font-size:.92rem}
</style></head><body>
<h1 id="title">Malti API</h1><p id="desc"></p><div id="ops">Loading /openapi.json …</div>
<script>
function el(tag, text, cls){const e=document.createElement(tag);if(text!==undefined)e.textContent=text;if(cls)e.className=cls;return e;}
fetch('openapi.json').then(r=>r.json()).then(spec=>{
  document.getElementById('title').textContent=spec.info.title+' '+spec.info.version;
  document.getElementById('desc').textContent=spec.info.description;
  const ops=document.getElementById('ops');ops.textContent='';
  for(const [path,item] of Object.entries(spec.paths)){
    for(const [method,op] of Object.entries(item)){
      const box=el('div',undefined,'op');const h=el('h3');
      h.appendChild(el('span',method.toUpperCase(),'m '+method));h.appendChild(el('code',path));
      box.appendChild(h);box.appendChild(el('p',op.summary+(op.security?' (needs X-API-Key)':'')));
      if(op.parameters&&op.parameters.length){const t=el('table');const hr=el('tr');
        ['parameter','in','type','description'].forEach(x=>hr.appendChild(el('th',x)));t.appendChild(hr);
        for(const p of op.parameters){const tr=el('tr');
          [p.name,p.in,(p.schema&&(p.schema.enum?p.schema.enum.join(' | '):p.schema.type))||'',p.description||''].forEach(x=>tr.appendChild(el('td',String(x))));
          t.appendChild(tr);}
        box.appendChild(t);}
      const codes=Object.entries(op.responses||{}).map(([c,r])=>c+' '+r.description).join(' · ');
      box.appendChild(el('p','Responses: '+codes));ops.appendChild(box);}}
}).catch(e=>{document.getElementById('ops').textContent='Could not load /openapi.json: '+e;});
</script></body></html>
"""
