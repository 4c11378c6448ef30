"""Malti server: ingest, metrics queries and API-key auth over PostgreSQL (TimescaleDB when present)."""

__version__ = "0.1.0"
