# Malti server image: the Starlette ingest/metrics server, without the embedded PostgreSQL.
# It needs a PostgreSQL 15+ database (TimescaleDB when available): see compose.yaml.
#
#   docker build -t malti-server .
#   docker run -e DATABASE_URL=postgresql://user:pass@db:5432/malti \
#              -v "$PWD/deploy/config:/config:ro" -p 8000:8000 malti-server
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MALTI_SCHEMA_DIR=/app/schema \
    MALTI_CONFIG_PATH=/config/malti.toml

WORKDIR /app

# Only what the package build needs (see .dockerignore): sources, schema migrations, metadata.
COPY pyproject.toml README.md ./
COPY malti_sdk ./malti_sdk
COPY malti_server ./malti_server
COPY malti_tui ./malti_tui
COPY malti_notebook ./malti_notebook
COPY schema ./schema

RUN pip install ".[server]" \
 && groupadd --system --gid 10001 malti \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin malti

USER 10001:10001
EXPOSE 8000

# /health answers 200 when the database is reachable, 503 (an exception here) when it is not.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]

CMD ["malti-server", "--host", "0.0.0.0", "--config", "/config/malti.toml"]
