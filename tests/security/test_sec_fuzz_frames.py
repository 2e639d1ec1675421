"""Frames the JSON parser itself must refuse: nesting deeper than the stack, integers
past Python's digit limit, bytes that are not UTF-8, NaN, lone surrogates, a body that
is not an object. Each costs its sender one ``error`` reply and its connection, the
scheduler one line of log (no traceback), and, before authentication, one failed
handshake for the address; a client connected meanwhile never notices."""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable

import pytest
from conftest import TestCluster
from fuzzing import FORGED_LINE, handshake, until_closed

from control_node.client import Client
from scheduler import protocol as p

NESTED = b"[" * 100_000 + b"]" * 100_000
BAD_BODIES = {
    "nested 100,000 levels": NESTED,
    "nested objects": b'{"type":"hello","name":' + b'{"a":' * 5000 + b"1" + b"}" * 5001,
    "integer of 5,000 digits": b'{"type":"hello","version":' + b"9" * 5000 + b"}",
    "not UTF-8": b'{"type":"hello","name":"\xff\xfe"}',
    "UTF-8 surrogate": b'{"type":"hello","name":"\xed\xa0\x80"}',
    "escaped lone surrogate": b'{"type":"hello","role":"control","version":2,'
    b'"name":"\\ud800","nonce":"x"}',
    "NaN": b'{"type":"heartbeat","metrics":NaN}',
    "float overflow": b'{"type":"welcome","digest":"","server_name":"","server_time":1e999}',
    "not an object": b"[1, 2]",
    "truncated": b'{"type":"hel',
}
#: What the error reply says of each.
WHY = ("malformed JSON", "must be a JSON object", "server_time: float out of range")


def exchange(port: int, body: bytes, sock: socket.socket | None = None) -> list[p.Message]:
    """Send ``body`` as a frame (on a fresh connection unless ``sock``), then read
    every reply until the scheduler closes the connection."""
    sock = sock or socket.create_connection(("127.0.0.1", port), timeout=20)
    with sock:
        sock.sendall(struct.pack(">I", len(body)) + body)
        return until_closed(sock)


def one_protocol_error(replies: list[p.Message]) -> str:
    assert len(replies) == 1 and isinstance(replies[0], p.Error), replies
    assert replies[0].code == "protocol", replies[0]
    return replies[0].message


def test_parser_failures_cost_one_error_and_one_log_line(
    make_cluster: Callable[..., TestCluster],
) -> None:
    # Every bad body once before the handshake, then one more failure: the limit.
    limit = len(BAD_BODIES) + 1
    cluster = make_cluster(workers=0, scheduler_args=("--auth-failure-limit", str(limit)))
    port = cluster.access.port
    log = cluster.logs / "scheduler.log"
    with Client(token=cluster.token, scheduler=f"127.0.0.1:{port}") as watcher:
        assert watcher.jobs([], states=[], all_users=False) == []
        for what, body in BAD_BODIES.items():
            for authenticated in (False, True):
                start = log.stat().st_size
                sock = None
                if authenticated:
                    sock = handshake(port, "control", watcher.user, p.user_key(cluster.token))
                message = one_protocol_error(exchange(port, body, sock))
                assert any(why in message for why in WHY), (what, message)
                with open(log, "rb") as f:
                    f.seek(start)
                    lines = f.read().decode().splitlines()
                # One line, the warning that closes the connection; nothing else.
                assert len(lines) == 1 and "closing 127.0.0.1:" in lines[0], (what, lines)
                assert "Traceback" not in lines[0]
                # The client connected all along still gets its answers.
                assert watcher.jobs([], states=[], all_users=False) == []
                assert watcher.pool().workers == []
        # The failures before the handshake were counted: one more reaches the limit,
        # and the address's next wrong proof is answered as blocked.
        one_protocol_error(exchange(port, NESTED))
        sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        with sock:
            hello = p.Hello(
                role="control", version=p.PROTOCOL_VERSION, name="alice", nonce=p.new_nonce()
            )
            sock.sendall(p.encode(hello))
            challenge = p.recv_message(sock)
            sock.sendall(p.encode(p.answer_challenge(p.user_key("alice:wrong"), hello, challenge)))
            refused = until_closed(sock)
        assert len(refused) == 1 and isinstance(refused[0], p.Error), refused
        assert refused[0].code == "blocked" and "too many failed handshakes" in refused[0].message
        assert watcher.pool().workers == []
    assert cluster.crashed() == []
    assert "Traceback" not in cluster.log("scheduler")
    assert "Unhandled" not in cluster.log("scheduler")


@pytest.mark.parametrize("body", [NESTED, BAD_BODIES["integer of 5,000 digits"]])
def test_clients_refuse_bad_frames_cleanly(body: bytes) -> None:
    """The same parser serves the client and the worker: a hostile scheduler's frame
    is a :class:`ProtocolError`, which they report, never an uncaught exception."""
    with pytest.raises(p.ProtocolError, match="malformed JSON"):
        p.decode(body)


def test_peer_text_cannot_forge_log_lines(make_cluster: Callable[..., TestCluster]) -> None:
    """A worker's name and the job id it reports reach the log as text inside one line:
    newlines and other control characters are escaped, never written."""
    cluster = make_cluster(workers=0, scheduler_args=("--allow-pool-secret",))
    port = cluster.access.port
    secret = p.password_key(p.read_secret(cluster.config.secret_path))
    metrics = p.WorkerMetrics(cores=1, threads=1, memory_total_mb=64, memory_available_mb=64,
                              disk_total_mb=64, disk_free_mb=64, load_avg=[0.0])  # fmt: skip
    with handshake(port, "worker", "evil" + FORGED_LINE, secret) as sock:
        register = p.Register(id=1, slots=1, cpus=1, memory_mb=64, gpus=0, metrics=metrics)
        sock.sendall(p.encode(register))
        assert isinstance(p.recv_message(sock), p.Registered)
        sock.sendall(p.encode(p.JobFinished(id=2, job_id="1.0" + FORGED_LINE, attempt=1)))
        assert isinstance(p.recv_message(sock), p.Ok)
    log = cluster.log("scheduler")
    assert "\\n2001-01-01" in log
    assert not [line for line in log.splitlines() if line.startswith("2001-01-01")], log


def test_client_refuses_a_non_ascii_digest_cleanly() -> None:
    """A scheduler's (or a man in the middle's) welcome with a digest beyond ASCII is
    a failed handshake for the client, which it reports, never a ``TypeError``."""
    hello = p.Hello(role="control", version=p.PROTOCOL_VERSION, name="alice", nonce="n")
    welcome = p.Welcome(digest="\u00e9" * 64, server_name="s", server_time=0.0)
    with pytest.raises(p.HandshakeError, match="could not prove"):
        p.verify_welcome(
            b"k" * 32, hello, p.Challenge(nonce="m", salt="00" * 16, iterations=4096), welcome
        )
