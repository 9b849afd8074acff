"""The bound on uvloop's I/O phase (spidi_core/_io_phase_c.pyx, loop_monitor.IoPhaseBound).

Real uvloop loops and real sockets: thousands of socket pairs that never run dry, and a callback
made ready during the flood. Without the bound libuv reads 48 full batches of 1,024 events before
the loop runs it; with the bound the phase ends after one pass over the sockets ready at the time.
A node on uvloop installs the bound and gives it back before its loop closes.
"""

from __future__ import annotations

import asyncio
import resource
import socket

import aiohttp
import pytest

from spidi_core import io_phase
from spidi_server.loop_monitor import IoPhaseBound

uvloop = pytest.importorskip("uvloop")
pytestmark = pytest.mark.skipif(io_phase is None, reason="the bound is part of the Cython extensions")

SOCKETS = 3000
ROUNDS = 25  # reads per socket: each read makes its socket readable again, ROUNDS times
LIBUV_POLLS = 48  # libuv's uv__io_poll: epoll_wait again while the last one filled its array...
LIBUV_EVENTS = 1024  # ...of this many events


def _flood(budget_ms: float | None) -> tuple[int, int]:
    """Run a flood of reads on a fresh uvloop loop; (reads before the ready callback ran, phases
    the bound cut)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2 * SOCKETS + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4 * SOCKETS + 100), hard))

    async def main() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        reads = 0
        at_mark: list[int] = []

        class Refilled(asyncio.Protocol):
            def __init__(self, peer: socket.socket):
                self.peer = peer
                self.left = ROUNDS

            def data_received(self, data: bytes) -> None:
                nonlocal reads
                io_phase.tick()
                if not reads:  # the first read of the flood makes a callback ready
                    loop.call_soon(lambda: at_mark.append(reads))
                reads += 1
                self.left -= 1
                if self.left:
                    self.peer.send(b"x")  # readable again at once

        pairs = [socket.socketpair() for _ in range(SOCKETS)]
        transports = []
        try:
            for ours, theirs in pairs:
                transport, _ = await loop.connect_accepted_socket(lambda peer=theirs: Refilled(peer), ours)
                transports.append(transport)
            cuts = io_phase.breaks()
            if budget_ms is not None:
                io_phase.install(loop, budget_ms)
            try:
                for _, theirs in pairs:
                    theirs.send(b"x")
                while reads < SOCKETS * ROUNDS:
                    await asyncio.sleep(0.005)
            finally:
                if budget_ms is not None:
                    io_phase.release()
            return at_mark[0], io_phase.breaks() - cuts
        finally:
            for transport in transports:
                transport.close()
            for _, theirs in pairs:
                theirs.close()
            await asyncio.sleep(0)

    return uvloop.run(main())


def test_unbounded_libuv_reads_48_full_batches_before_a_ready_callback():
    # The premise: if uvloop's libuv stops doing this, the bound has nothing left to cut.
    before_mark, cuts = _flood(None)
    assert before_mark >= LIBUV_POLLS * LIBUV_EVENTS
    assert cuts == 0


def test_the_bound_ends_the_phase_after_one_pass_over_the_ready_sockets():
    before_mark, cuts = _flood(1.0)
    # The signal's pipe is reported after the sockets readable when it was raised: each is read
    # once more, then the loop runs its ready callbacks.
    assert before_mark < 2 * SOCKETS
    assert cuts >= 1
    assert not io_phase.installed()


def test_the_bound_needs_a_uvloop_loop():
    loop = asyncio.new_event_loop()
    try:
        if isinstance(loop, uvloop.Loop):  # SPIDI_TEST_UVLOOP=1 makes uvloop the policy's loop
            pytest.skip("the policy's loop is uvloop")
        with pytest.raises(TypeError, match="uvloop"):
            io_phase.install(loop, 10.0)
        assert IoPhaseBound(10.0).install(loop) is False
    finally:
        loop.close()


def test_installs_share_one_bound_until_the_last_release():
    async def main() -> list[bool]:
        loop = asyncio.get_running_loop()
        seen = []
        first, second = IoPhaseBound(5.0), IoPhaseBound(5.0)
        seen.append(first.install(loop) and second.install(loop))
        first.uninstall()
        seen.append(io_phase.installed())
        second.uninstall()
        seen.append(io_phase.installed())
        return seen

    # The loop closes after the last release: its handles were closed (uvloop refuses otherwise).
    assert uvloop.run(main()) == [True, True, False]
    assert IoPhaseBound(0).install(uvloop.new_event_loop()) is False  # 0 turns it off


def test_a_node_on_uvloop_bounds_its_loop_and_gives_the_bound_back(settings):
    from spidi_server.node import Node

    async def main() -> tuple[bool, str]:
        node = Node(settings)
        await node.start()
        try:
            installed = io_phase.installed()
            async with aiohttp.ClientSession() as http, http.get(f"{node.ops.url}/metrics") as resp:
                text = await resp.text()
        finally:
            await node.stop()
        return installed, text

    installed, text = uvloop.run(main())  # closing the loop fails if a handle were left open
    assert installed
    assert "spidi_event_loop_io_phase_cuts " in text
    assert not io_phase.installed()
