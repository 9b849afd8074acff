"""The monitor side of SpidiClient: ``watch_room``, ``watch_rooms``, ``watch_alerts``.

A mixin of the client: the subscriptions are remembered (``_watches``) and made again on each
connection (a fresh snapshot each time), and a ``seq`` gap makes a watch subscribe again.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from . import wire
from .link import Dropped, Link
from .watches import AlertsState, RosterState, Sub, Watch

__all__ = ["Watching"]

log = logging.getLogger("spidi_client")


class Watching:
    """What the client offers monitors. The host provides ``_link`` (the current connection or
    None), ``_watches``, ``_check_open``, ``_call`` and ``_spawn``."""

    _link: Link | None
    _watches: list[Watch]

    def watch_room(
        self,
        room_code: str,
        on_roster: Callable[[dict[str, dict], dict], object] | None = None,
        on_metrics: Callable[[dict], object] | None = None,
    ) -> Watch:
        """Keep ``room_code``'s roster (``watch.roster``: sessionId -> entry) from the snapshot
        and the deltas, subscribing again on a ``seq`` gap; ``on_roster(roster, message)`` after
        each message, ``on_metrics(message)`` for each ROOM_METRICS. Needs a monitor or admin
        token; a refusal (FORBIDDEN) reaches the ``error`` event."""
        roster = RosterState()
        watch: Watch

        def roster_message(message: dict) -> None:
            watch.roster = roster.users
            if on_roster is not None:
                self._call(on_roster, roster.users, message)

        subs = [Sub(f"/topic/rooms/{room_code}/roster", roster, roster_message)]
        if on_metrics is not None:
            subs.append(Sub(f"/topic/rooms/{room_code}/metrics", None, lambda m: self._call(on_metrics, m)))
        watch = Watch(self, subs)
        self._add_watch(watch)
        return watch

    def watch_rooms(self, on_rooms: Callable[[dict], object]) -> Watch:
        """``on_rooms(message)`` for each ROOMS message (every room of the tenant)."""
        watch = Watch(self, [Sub("/topic/rooms", None, lambda m: self._call(on_rooms, m))])
        self._add_watch(watch)
        return watch

    def watch_alerts(self, on_alerts: Callable[[dict, dict], object]) -> Watch:
        """Keep the tenant's open alerts (``watch.alerts``: (ruleId, roomId) -> alert) from
        ALERTS, ALERT and ALERT_ACK; ``on_alerts(alerts, message)`` after each."""
        state = AlertsState()
        watch: Watch

        def alerts_message(message: dict) -> None:
            watch.alerts = state.alerts
            self._call(on_alerts, state.alerts, message)

        watch = Watch(self, [Sub("/topic/alerts", state, alerts_message)])
        self._add_watch(watch)
        return watch

    # -- watches -------------------------------------------------------------------------------

    def _add_watch(self, watch: Watch) -> None:
        self._check_open()
        self._watches.append(watch)
        link = self._link
        if link is not None and link.ready:
            for sub in watch._subs:
                self._spawn(self._subscribe(link, sub))

    async def _unwatch(self, watch: Watch) -> None:
        if watch in self._watches:
            self._watches.remove(watch)
        link = self._link
        for sub_id, sub in list((link.subs if link else {}).items()):
            if sub in watch._subs:
                del link.subs[sub_id]
                with contextlib.suppress(Dropped):
                    await link.send(wire.unsubscribe(sub_id))

    async def _subscribe(self, link: Link, sub: Sub) -> None:
        sub_id = link.next_id("w")
        if sub.state is not None and hasattr(sub.state, "reset"):
            sub.state.reset()
        link.subs[sub_id] = sub
        with contextlib.suppress(Dropped):
            await link.send(wire.subscribe(sub_id, sub.destination))

    def _watch_message(self, link: Link, sub_id: str, sub: Sub, message: dict) -> None:
        if sub.state is not None and not sub.state.apply(message):
            # A seq gap: a message was missed. A new subscription brings a new snapshot.
            del link.subs[sub_id]
            for watch in self._watches:
                if sub in watch._subs:
                    watch.resubscribed += 1
            log.info("seq gap on %s: subscribing again", sub.destination)
            self._spawn(self._resubscribe(link, sub_id, sub))
            return
        sub.deliver(message)

    async def _resubscribe(self, link: Link, old_id: str, sub: Sub) -> None:
        with contextlib.suppress(Dropped):
            await link.send(wire.unsubscribe(old_id))
        await self._subscribe(link, sub)
