"""spidi-client: an asyncio client for Spidi presence servers (STOMP 1.2 over WebSocket).

    async with SpidiClient(url="ws://127.0.0.1:8765/ws", token=jwt, room="lobby",
                           client_id="phone-1", app_version="1.0") as client:
        print(client.welcome.session_id)

See clients/python/README.md.
"""

from .backoff import Backoff
from .client import EVENTS, SpidiClient, Watch, Welcome
from .errors import FATAL_CLOSE_CODES, FATAL_CODES, SpidiError
from .watches import AlertsState, RosterState

__all__ = [
    "EVENTS",
    "FATAL_CLOSE_CODES",
    "FATAL_CODES",
    "AlertsState",
    "Backoff",
    "RosterState",
    "SpidiClient",
    "SpidiError",
    "Watch",
    "Welcome",
]
