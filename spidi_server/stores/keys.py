"""Every Redis key Spidi uses, in one place.

A room's keys carry the room id in a ``{...}`` hash tag, so in Redis Cluster they share one slot
and a Lua script may touch them together. Tenant-wide and node keys live in their own slots.

    spidi:session:{<roomId>}:<sessionId>   hash   static session metadata; TTL = timeout + grace
    spidi:room:{<roomId>}:online           zset   sessionId -> last heartbeat (epoch ms)
    spidi:room:{<roomId>}:latency          hash   sessionId -> last reported latency (ms)
    spidi:room:{<roomId>}:users            hash   userId -> sessions of that user in the room
    spidi:room:{<roomId>}:metrics          hash   code, tenant, capacity, peak, peak_hour
                                                  (a room's 4 keys expire once it is empty: its TTL)
    spidi:tenant:<tenant>:rooms            hash   roomId -> roomCode, the tenant's rooms with live state
                                                  (every join adds its room; the rooms sweep removes
                                                  expired ones, a REST delete its room)
    spidi:tenants                          set    tenants with a rooms index (what the sweep visits)
    spidi:rooms:sweep                      string the rooms sweep's lease (holder's node id, PX)
    spidi:rooms:count                      hash   tenant -> its rooms (spidi_rooms_total, by the sweep)
    spidi:user:<tenant>:<userId>:sessions  hash   sessionId -> roomId, a user's live sessions (TTL)
    spidi:nodes                            set    ids of the nodes (processes) that hold sessions
    spidi:node:<nodeId>:alive              string the node's liveness, expires unless renewed
    spidi:node:<nodeId>:sessions           hash   sessionId -> roomId, the node's live sessions
    spidi:node:<nodeId>:reaping            string lock held while a node's sessions are being ended
    spidi:node:<nodeId>:marker             string written only by the node's hot store; gone = Redis lost
                                                  the node's state: it writes its sessions again
    spidi:handoff                          zset   "<roomId>/<sessionId>" -> end of its grace period (epoch
                                                  ms): sessions a stopping node handed over, resumable
                                                  on any node until then (stores/handoff.py)
    spidi:rooms:changed                    pubsub a room definition changed (payload: tenant/code, or */* for a room type)
    spidi:roster:{<roomId>}                pubsub a process's roster changes of the room (fanout.py)
    spidi:watched                          zset   roomId -> when the last watcher's claim lapses
    spidi:watch                            pubsub a process started watching a room (payload: roomId)
    spidi:events                           stream history events for the writer (stores/events.py)
    spidi:events:dead                      stream events PostgreSQL refused, with the error
    spidi:writer:status                    hash   the history writer's counters and state
    spidi:alert:leader                     string the alert evaluator's lease (holder's id, PX)
    spidi:alert:state                      hash   "<ruleId>/<roomId>" -> the alert's lifecycle state (JSON)
    spidi:alerts:active:<tenant>           hash   "<ruleId>/<roomId>" -> pending or firing alert (JSON)
    spidi:alerts                           pubsub alert transitions and acknowledgements (JSON, with tenant)
    spidi:alert:notified:<ruleId>:<roomId> string notification rate limit of one rule and room (PX)
"""

PREFIX = "spidi:"


def session(room_id: str, session_id: str) -> str:
    return f"{PREFIX}session:{{{room_id}}}:{session_id}"


def room_online(room_id: str) -> str:
    return f"{PREFIX}room:{{{room_id}}}:online"


def room_latency(room_id: str) -> str:
    return f"{PREFIX}room:{{{room_id}}}:latency"


def room_users(room_id: str) -> str:
    return f"{PREFIX}room:{{{room_id}}}:users"


def room_metrics(room_id: str) -> str:
    return f"{PREFIX}room:{{{room_id}}}:metrics"


def tenant_rooms(tenant: str) -> str:
    return f"{PREFIX}tenant:{tenant}:rooms"


TENANTS = f"{PREFIX}tenants"
ROOMS_SWEEP = f"{PREFIX}rooms:sweep"
ROOM_COUNTS = f"{PREFIX}rooms:count"


def user_sessions(tenant: str, user_id: str) -> str:
    return f"{PREFIX}user:{tenant}:{user_id}:sessions"


NODES = f"{PREFIX}nodes"


def node_alive(node_id: str) -> str:
    return f"{PREFIX}node:{node_id}:alive"


def node_sessions(node_id: str) -> str:
    return f"{PREFIX}node:{node_id}:sessions"


def node_reaping(node_id: str) -> str:
    return f"{PREFIX}node:{node_id}:reaping"


def node_marker(node_id: str) -> str:
    return f"{PREFIX}node:{node_id}:marker"


HANDOFF = f"{PREFIX}handoff"


def handoff_member(room_id: str, session_id: str) -> str:
    return f"{room_id}/{session_id}"


def parse_handoff_member(member: str) -> tuple[str, str]:
    """(roomId, sessionId) of a ``HANDOFF`` member."""
    room_id, _, session_id = member.partition("/")
    return room_id, session_id


ROOMS_CHANGED = f"{PREFIX}rooms:changed"
WATCHED = f"{PREFIX}watched"
WATCH = f"{PREFIX}watch"
_ROSTER_PREFIX = f"{PREFIX}roster:{{"


def roster_channel(room_id: str) -> str:
    return f"{_ROSTER_PREFIX}{room_id}}}"


def room_of_roster_channel(channel: str) -> str:
    return channel[len(_ROSTER_PREFIX) : -1]


def room_keys(room_id: str) -> list[str]:
    """The keys a room's scripts take, in the order the Lua scripts expect them."""
    return [room_online(room_id), room_latency(room_id), room_users(room_id), room_metrics(room_id)]


EVENTS_STREAM = f"{PREFIX}events"
DEAD_LETTER_STREAM = f"{PREFIX}events:dead"
WRITER_STATUS = f"{PREFIX}writer:status"


ALERT_LEADER = f"{PREFIX}alert:leader"
ALERT_STATE = f"{PREFIX}alert:state"
ALERTS_CHANNEL = f"{PREFIX}alerts"


def alerts_active(tenant: str) -> str:
    return f"{PREFIX}alerts:active:{tenant}"


def alert_notified(rule_id: str, room_id: str | None = None) -> str:
    """The notification window of a rule (of a rule and room with ``alert_rate_limit_per_room``)."""
    return f"{PREFIX}alert:notified:{rule_id}" + ("" if room_id is None else f":{room_id}")


def alert_suppressed(rule_id: str, room_id: str | None = None) -> str:
    """Episodes suppressed in that window since its last notification (a count)."""
    return f"{PREFIX}alert:suppressed:{rule_id}" + ("" if room_id is None else f":{room_id}")


def alert_episode_notified(episode_id: str) -> str:
    """Set while an episode's firing was notified and its resolve not yet."""
    return f"{PREFIX}alert:episode-notified:{episode_id}"
