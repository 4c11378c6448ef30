"""The README's SDK setup examples run as written: every Python block of its "Instrumenting your
app" section is executed, and each app it builds answers a request through the middleware."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def sdk_blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## Instrumenting your app")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end != -1 else None]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_has_sdk_examples():
    assert len(sdk_blocks()) >= 2


@pytest.mark.parametrize("index", range(len(sdk_blocks())))
async def test_readme_sdk_block_runs(index, monkeypatch):
    # No key: the SDK records nothing and sends nothing, but the app and middleware run for real.
    monkeypatch.delenv("MALTI_API_KEY", raising=False)
    namespace: dict = {"__name__": f"readme_block_{index}"}
    exec(compile(sdk_blocks()[index], f"README.md SDK block {index}", "exec"), namespace)
    app = namespace.get("app")
    if app is None:
        return
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        r = await client.get("/no-such-route-for-the-readme-test")
        assert r.status_code in (404, 405, 200)
