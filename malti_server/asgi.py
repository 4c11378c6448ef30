"""ASGI entry point for uvicorn workers: ``uvicorn malti_server.asgi:app``.

Reads DATABASE_URL and MALTI_CONFIG_PATH (the ``malti-server`` command sets both)."""

from .app import create_app

app = create_app()
