"""The operators' REST API under /api/v1 on the ops port."""

from __future__ import annotations


def register_api(app, node) -> None:
    """Add the REST routes to the ops aiohttp application."""
