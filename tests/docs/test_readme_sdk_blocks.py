"""The README's SDK setup examples run as written: every Python block of its "Instrumenting your
app" section is executed, and each app it builds answers a request through the middleware."""

from __future__ import annotations

import asyncio
import os
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


@pytest.fixture
def isolated_sdk(monkeypatch):
    """The blocks configure the process-wide SDK (MALTI_* variables, the global system): undo it."""
    from malti_sdk import _telemetry

    monkeypatch.delenv("MALTI_API_KEY", raising=False)  # no key: nothing is sent unless a block sets one
    saved_env = {k: v for k, v in os.environ.items() if k.startswith("MALTI_")}
    saved_system = _telemetry._system
    yield
    created = _telemetry._system
    _telemetry._system = saved_system
    for k in [k for k in os.environ if k.startswith("MALTI_")]:
        del os.environ[k]
    os.environ.update(saved_env)
    if created is not None and created is not saved_system:
        await_stop = created.stop()
        try:
            asyncio.run(await_stop)
        except RuntimeError:
            await_stop.close()


@pytest.mark.parametrize("index", range(len(sdk_blocks())))
def test_readme_sdk_block_runs(index, isolated_sdk):
    namespace: dict = {"__name__": f"readme_block_{index}"}
    exec(compile(sdk_blocks()[index], f"README.md SDK block {index}", "exec"), namespace)
    app = namespace.get("app")
    if app is None:
        return

    async def one_request() -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return (await client.get("/no-such-route-for-the-readme-test")).status_code

    assert asyncio.run(one_request()) in (404, 405, 200)
