"""Metrics query endpoints (being built; see docs/api.md)."""

routes: list = []
