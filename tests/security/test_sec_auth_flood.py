"""Strangers' failures never lock out a valid credential (issue 23, broken item 5).

The rate limit counts failures per address and per identity, and limits wrong
guesses only; a worker retries any refusal but "this credential is wrong", and
never kills its running jobs for one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import TestCluster, wait_until, write

from scheduler import protocol as p
from scheduler.handshake_guard import HandshakeGuard, identity

# ----------------------------------------------------------------------------- the guard


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_guard_blocks_an_address_until_its_failures_leave_the_window(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    guard = HandshakeGuard(limit=3, window=60, clock=clock)
    for _ in range(2):
        guard.failed("10.0.0.1")
        clock.now += 1
    assert guard.blocked_for("10.0.0.1") == 0
    guard.failed("10.0.0.1")
    with caplog.at_level(logging.WARNING, "scheduler.server"):
        assert guard.blocked_for("10.0.0.1") == pytest.approx(58)
        assert guard.blocked_for("10.0.0.1") == pytest.approx(58)
    assert len(caplog.records) == 1  # one line per block, not per attempt
    assert guard.blocked_for("10.0.0.2") == 0  # other addresses are not touched
    clock.now += 58  # the oldest failure leaves the window
    assert guard.blocked_for("10.0.0.1") == 0


def test_the_guard_counts_identities_apart_from_addresses() -> None:
    clock = Clock()
    guard = HandshakeGuard(limit=2, window=10, clock=clock)
    w1 = identity("worker", "w1")
    # Strangers from many addresses guess w1's credential: w1's guesses are blocked ...
    guard.failed("10.0.0.1", w1)
    guard.failed("10.0.0.2", w1)
    assert guard.blocked_for("10.0.0.3", w1) > 0
    # ... but neither those addresses nor any other identity.
    assert guard.blocked_for("10.0.0.1") == 0
    assert guard.blocked_for("10.0.0.1", identity("worker", "w2")) == 0
    clock.now += 10
    assert guard.blocked_for("10.0.0.3", w1) == 0


# ----------------------------------------------------------------------------- a real flood

# (A long worker timeout: the job waits for its worker however slow the machine.)
LIMITS = ("--auth-failure-limit", "3", "--auth-failure-window", "3600", "--worker-timeout", "300")


def _flood(port: int) -> None:
    """Junk from 127.0.0.1 and wrong proofs for worker w1 from 127.0.0.2."""
    for junk in (b"\x00\x00\x00\x05{{{{{", b"GET / HTTP/1.0\r\n\r\n", b"\xff" * 64) * 4:
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            sock.sendall(junk)
            sock.settimeout(20)
            try:
                while sock.recv(4096):
                    pass
            except OSError:
                pass
    wrong = p.user_key("w1:not-its-credential")
    for _ in range(6):
        sock = socket.create_connection(("127.0.0.1", port), 20, ("127.0.0.2", 0))
        with sock:
            sock.settimeout(20)
            hello = p.Hello(role="worker", version=p.PROTOCOL_VERSION, name="w1", nonce="n")
            sock.sendall(p.encode(hello))
            reply = p.recv_message(sock)
            if isinstance(reply, p.Challenge):
                sock.sendall(p.encode(p.answer_challenge(wrong, hello, reply)))
                reply = p.recv_message(sock)
            assert isinstance(reply, p.Error), reply


def test_a_junk_flood_after_a_restart_neither_locks_out_a_worker_nor_kills_its_job(
    make_cluster, tmp_path: Path
) -> None:  # noqa: ANN001
    cluster: TestCluster = make_cluster(workers=1, scheduler_args=LIMITS)
    gate, marks = tmp_path / "gate", tmp_path / "marks"
    write(tmp_path / "job.sh", f"#!/bin/sh\necho start >> {marks}\n"
          f"while [ ! -e {gate} ]; do sleep 0.1; done\necho done >> {marks}\n", True)  # fmt: skip
    write(tmp_path / "job.sub", "executable = job.sh\nqueue\n")
    assert cluster.run("dsub", "job.sub", cwd=tmp_path).returncode == 0
    wait_until(lambda: marks.exists() and "start" in marks.read_text(), what="the job to start")
    worker = cluster.processes["w1"]

    # The scheduler restarts; the worker is paused until strangers have flooded the
    # new one, so that it reconnects into the block.
    scheduler = cluster.processes["scheduler"]
    os.killpg(scheduler.pid, signal.SIGTERM)
    scheduler.wait(30)
    wait_until(lambda: "unreachable" in cluster.log("w1"), what="the worker to notice")
    os.kill(worker.pid, signal.SIGSTOP)
    try:
        cluster.start_scheduler(*LIMITS)
        _flood(cluster.access.port)
        # Both the address and w1's identity are blocked now ...
        wrong = cluster.env(DFARM_TOKEN=p.token_user(cluster.token) + ":guess")
        out = cluster.run("dq", env=wrong)
        assert "too many failed handshakes from 127.0.0.1" in out.stderr
        assert "failed handshakes for worker 'w1'" in cluster.log("scheduler")
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    # ... yet the worker, from that address with that identity, is let back in.
    cluster.wait_for_workers(2)
    gate.touch()
    wait_until(lambda: marks.read_text() == "start\ndone\n", what="the job to finish")
    history = cluster.run("dhistory", "--json")
    [job] = [j for j in json.loads(history.stdout) if j["id"] == "1.0"]
    assert job["state"] == "completed" and job["num_starts"] == 1, job
    assert worker.poll() is None, cluster.log("w1")
    assert "refused" not in cluster.log("w1")


def test_a_worker_with_a_wrong_credential_stops_at_once(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    """The one refusal a worker does not retry: the scheduler checked its proof and
    found it wrong (it has no running job here to lose)."""
    cluster: TestCluster = make_cluster(workers=0)
    stray = write(tmp_path / "stray.credential", "stray:unknown-credential\n")
    stray.chmod(0o600)
    process = cluster.add_worker("stray", credential_file=stray)
    cluster.expected_exits.add("stray")
    assert process.wait(30) == 1
    assert "the scheduler refused this worker" in cluster.log("stray")
    assert "wrong worker credential" in cluster.log("stray")


class RefusingFront:
    """A port in front of the scheduler that refuses the first ``refusals`` peers as a
    flooded scheduler would ("blocked", not "wrong credential"), then passes every
    connection through."""

    def __init__(self, target: int, refusals: int):
        self.target, self.refusals = target, refusals
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                peer, _ = self.server.accept()
            except OSError:
                return  # closed
            if self.refusals > 0:
                self.refusals -= 1
                with peer:
                    p.recv_message(peer)
                    peer.sendall(p.encode(p.Error(message="try later", code="blocked")))
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.sockets += (peer, upstream)
            for a, b in ((peer, upstream), (upstream, peer)):
                thread = threading.Thread(target=self._pump, args=(a, b), daemon=True)
                thread.start()
                self.threads.append(thread)

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        """Stop accepting, cut every connection passed through and wait for the pumps."""
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.server.close()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self.threads:
            thread.join(timeout=30)
        for sock in self.sockets:
            sock.close()


def test_a_worker_retries_a_refusal_that_is_not_about_its_credential(
    make_cluster: Callable[..., TestCluster],
) -> None:
    cluster = make_cluster(workers=0)
    front = RefusingFront(cluster.access.port, refusals=2)
    try:
        worker = cluster.add_worker("w1", "--scheduler", f"127.0.0.1:{front.port}")
        cluster.wait_for_workers(1)
        log = cluster.log("w1")
        assert log.count("the scheduler refused the handshake: try later; retrying") == 2
        assert worker.poll() is None
        assert "w1" in cluster.run("dstat").stdout
    finally:
        front.close()
