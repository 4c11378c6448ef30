"""Interoperability: the original ``malti-telemetry`` 1.0.4 package ships records into our server.

It runs in a subprocess: the original configures logging and reads its settings at import.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid

import pytest

pytest.importorskip("malti_telemetry")

SCRIPT = textwrap.dedent(
    """
    import asyncio, httpx
    from fastapi import FastAPI
    from malti_telemetry import MaltiMiddleware, get_telemetry_system

    app = FastAPI()

    @app.get("/users/{user_id}")
    async def user(user_id: int):
        return {"id": user_id}

    app.add_middleware(MaltiMiddleware)

    async def main():
        system = get_telemetry_system()
        await system.start()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for i in range(40):
                r = await client.get(f"/users/{i}", headers={"x-consumer-id": "legacy-app"})
                assert r.status_code == 200
        system.record_request("POST", "/manual", 201, 7, "manual-client", "ctx")
        await system.stop()
        stats = system.get_stats()
        print(stats["total_sent"], stats["total_failed"])

    asyncio.run(main())
    """
)


def test_original_sdk_ships_into_our_server(malti_server, tmp_path):
    node = f"original-{uuid.uuid4().hex[:8]}"
    env = {
        "MALTI_API_KEY": malti_server.service_keys["auth-service"],
        "MALTI_SERVICE_NAME": "auth-service",
        "MALTI_URL": malti_server.url,
        "MALTI_NODE": node,
        "PATH": "/usr/bin:/bin",
    }
    script = tmp_path / "original_app.py"
    script.write_text(SCRIPT)
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["41", "0"]
    rows = malti_server.sql(
        "SELECT endpoint, status, consumer, context, response_time FROM requests WHERE node = $1", node
    )
    assert len(rows) == 41
    assert {r["endpoint"] for r in rows} == {"/users/{user_id}", "/manual"}
    assert {r["consumer"] for r in rows} == {"legacy-app", "manual-client"}
    manual = [r for r in rows if r["endpoint"] == "/manual"][0]
    assert (manual["status"], manual["context"], manual["response_time"]) == (201, "ctx", 7)
