"""Frames to a peer leave at the end of a turn; job updates to a user may wait a little."""

from __future__ import annotations

import asyncio
import socket

from scheduler import protocol as p
from scheduler.connection import UPDATE_INTERVAL, Connection
from scheduler.protocol import Role


async def _pair() -> tuple[Connection, socket.socket]:
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=ours)
    conn = Connection(1, reader, writer, "peer", "127.0.0.1", role=Role.CONTROL)
    return conn, theirs


def test_updates_to_a_user_are_held_back_replies_are_not() -> None:
    async def scenario() -> None:
        conn, theirs = await _pair()
        update = p.Ok(id=None)
        conn.send(update, urgent=False)
        assert conn.flush_delay(100.0) <= 0  # nothing sent for a long time: at once
        conn.flush(100.0)
        conn.send(update, urgent=False)
        assert abs(conn.flush_delay(100.001) - (UPDATE_INTERVAL - 0.001)) < 1e-9
        conn.send(p.Ok(id=7))  # a reply: the whole outbox leaves now
        assert conn.flush_delay(100.001) == 0
        conn.flush(100.001)
        await asyncio.sleep(0)
        theirs.setblocking(False)
        assert theirs.recv(4096).count(b'"ok"') == 3
        assert conn.updates is False
        # A reply alone does not count as an update: the first update after it leaves
        # at once (one job's end reaches a waiting client with no delay).
        conn.send(p.Ok(id=8))
        conn.flush(200.0)
        conn.send(update, urgent=False)
        assert conn.flush_delay(200.001) <= 0
        conn.flush(200.001)
        conn.role = Role.WORKER
        conn.send(update, urgent=False)
        assert conn.flush_delay(100.002) == 0  # workers never wait
        conn.writer.close()
        theirs.close()

    asyncio.run(scenario())
