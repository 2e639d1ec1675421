"""``dfarm worker --drain NAME``: on the scheduler node, ask a worker to drain.

It speaks to the running scheduler with the worker pool secret (reading it and the
scheduler's address from the scheduler's state directory): holding that secret is
what makes one the operator of the pool.
"""

from __future__ import annotations

import socket
from pathlib import Path

from scheduler import protocol as p


def drain(name: str, home: Path, grace: float | None = None, scheduler: str | None = None) -> None:
    """Ask the scheduler to drain worker ``name``; raises ValueError or OSError with
    a readable message when it cannot."""
    secret = p.read_secret(home / "worker.secret")
    if scheduler:
        host, _, port = scheduler.rpartition(":")
        address = (host.strip("[]"), int(port))
    else:
        record = p.AccessRecord.load(home / p.ACCESS_FILE)
        address = (record.host, record.port)
    with socket.create_connection(address, timeout=30) as sock:
        hello = p.Hello(
            role=p.Role.WORKER.value,
            version=p.PROTOCOL_VERSION,
            name=f"drain-{socket.gethostname()}",
            nonce=p.new_nonce(),
        )
        sock.sendall(p.encode(hello))
        challenge = p.recv_message(sock)
        sock.sendall(p.encode(p.answer_challenge(secret, hello, challenge)))
        assert isinstance(challenge, p.Challenge)
        p.verify_welcome(secret, hello, challenge, p.recv_message(sock))
        sock.sendall(p.encode(p.DrainWorker(id=1, name=name, grace=grace)))
        reply = p.recv_message(sock)
    if isinstance(reply, p.Error):
        raise ValueError(reply.message)
