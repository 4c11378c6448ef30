"""What the dashboard shows before any request has arrived."""

from __future__ import annotations

from textual.widgets import Markdown

EMPTY_HINT = """\
## No requests in this time range yet

Send some telemetry, then this view fills in by itself:

* **From your app** – install the SDK from a clone of the Malti repository
  (`pip install /path/to/malti`: package `malti-stack`; `malti` on PyPI is
  another project), add `app.add_middleware(MaltiMiddleware)` (from `malti_sdk`)
  and set `MALTI_API_KEY` (a *service* key), `MALTI_SERVICE_NAME` and `MALTI_URL`.
* **By hand** – `curl -X POST $MALTI_URL/api/v1/ingest -H "X-API-Key: <service key>"
  -H "Content-Type: application/json" -d '{"requests": [...]}'`

Or pick a longer time range: keys **1**–**8**, or clear the filters with **0**.
"""


class EmptyState(Markdown):
    """A hint on how to send data."""

    def __init__(self, **kwargs) -> None:
        super().__init__(EMPTY_HINT, **kwargs)
