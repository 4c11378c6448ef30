"""What the dashboard shows before any request has arrived."""

from __future__ import annotations

from textual.widgets import Markdown

EMPTY_HINT = """\
## No requests in this time range yet

Send some telemetry, then this view fills in by itself:

* **From your app** – add the middleware (`pip install malti`):
  `app.add_middleware(MaltiMiddleware)` with `MALTI_API_KEY` (a *service* key)
  and `MALTI_URL` set.
* **By hand** – `curl -X POST $MALTI_URL/api/v1/ingest -H "X-API-Key: <service key>"
  -H "Content-Type: application/json" -d '{"requests": [...]}'`

Or pick a longer time range: keys **1**–**8**, or clear the filters with **0**.
"""


class EmptyState(Markdown):
    """A hint on how to send data."""

    def __init__(self, **kwargs) -> None:
        super().__init__(EMPTY_HINT, **kwargs)
