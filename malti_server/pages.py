"""The small HTML page served at ``/``."""

from __future__ import annotations

from html import escape

from . import __version__


def index_html(base_url: str) -> str:
    url = escape(base_url)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Malti server</title>
<style>body{{font-family:system-ui,sans-serif;max-width:46rem;margin:3rem auto;padding:0 1rem;line-height:1.5}}
code,pre{{background:#f3f3f3;padding:.1rem .3rem;border-radius:3px}}pre{{padding:.6rem}}</style></head>
<body>
<h1>Malti server {escape(__version__)}</h1>
<p>Self-hosted API telemetry. Apps instrumented with <code>malti_sdk.MaltiMiddleware</code> send their
request records to <code>POST /api/v1/ingest</code>; dashboards read <code>/api/v1/metrics/…</code>.</p>
<ul>
<li><a href="/docs">API documentation</a> (<a href="/openapi.json">OpenAPI 3 JSON</a>)</li>
<li><a href="/health">Health</a></li>
</ul>
<h2>Look at the numbers</h2>
<pre>malti-tui --url {url} --api-key YOUR_USER_KEY</pre>
<p>or in Jupyter:</p>
<pre>from malti_notebook import connect
m = connect(url="{url}", api_key="YOUR_USER_KEY")
m.dashboard()</pre>
<h2>Send data</h2>
<pre>from malti_sdk import MaltiMiddleware
app.add_middleware(MaltiMiddleware)   # MALTI_URL={url} MALTI_API_KEY=&lt;service key&gt; MALTI_SERVICE_NAME=...</pre>
</body></html>
"""
