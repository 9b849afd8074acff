"""Spidi's asyncio server: transports, protocol, presence, stores and ops HTTP."""

__version__ = "0.1.0"
