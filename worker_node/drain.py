"""``dfarm worker --drain NAME``: on the scheduler node, ask a worker to drain.

It speaks to the running scheduler with the worker pool secret (reading it and the
scheduler's address from the scheduler's state directory): holding that secret is
what makes one the operator of the pool.
"""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

from scheduler import protocol as p
from scheduler.transport.tls import check_pin, client_context


def drain(name: str, home: Path, grace: float | None = None, scheduler: str | None = None) -> None:
    """Ask the scheduler to drain worker ``name``; raises ValueError or OSError with
    a readable message when it cannot."""
    secret = p.password_key(p.read_secret(home / "worker.secret"))
    path = home / p.ACCESS_FILE
    record = p.AccessRecord.load(path) if path.exists() or not scheduler else None
    if scheduler:
        host, _, port = scheduler.rpartition(":")
        address = (host.strip("[]"), int(port))
    else:
        assert record is not None
        address = (record.host, record.port)
    with contextlib.ExitStack() as stack:
        sock = stack.enter_context(socket.create_connection(address, timeout=30))
        if record and record.tls_fingerprint:  # this state directory's scheduler: TLS
            sock = stack.enter_context(client_context().wrap_socket(sock))
            check_pin(sock, record.tls_fingerprint)
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
