"""The operators' dashboard, served at / on the ops port."""

from __future__ import annotations


def register_dashboard(app, node) -> None:
    """Add the dashboard's routes (page and static files) to the ops aiohttp application."""
