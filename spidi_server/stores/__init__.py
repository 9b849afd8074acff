"""Stores: Redis hot state (and, later, PostgreSQL history). Nothing here imports the server."""
