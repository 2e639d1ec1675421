"""Attacks on the handshake and the wire against a real scheduler process."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
from conftest import TestCluster, wait_until, write

from control_node.local_cluster import worker_credential
from scheduler import protocol as p


def dial(cluster: TestCluster) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", cluster.access.port), timeout=20)
    sock.settimeout(20)
    return sock


def send(sock: socket.socket, message: p.Message) -> None:
    sock.sendall(p.encode(message))


def handshake(cluster: TestCluster, role: str, name: str, key: bytes) -> tuple[p.Message, ...]:
    """Hello, challenge, auth with ``key``; returns (hello, auth, final reply)."""
    with dial(cluster) as sock:
        hello = p.Hello(role=role, version=p.PROTOCOL_VERSION, name=name, nonce=p.new_nonce())
        send(sock, hello)
        challenge = p.recv_message(sock)
        assert isinstance(challenge, p.Challenge)
        auth = p.answer_challenge(key, hello, challenge)
        send(sock, auth)
        return hello, auth, p.recv_message(sock)


def user_name(cluster: TestCluster) -> str:
    return p.token_user(cluster.token)


def test_the_right_key_for_the_role_is_welcome(cluster: TestCluster) -> None:
    _, _, reply = handshake(cluster, "control", user_name(cluster), p.user_key(cluster.token))
    assert isinstance(reply, p.Welcome)


def test_worker_secret_cannot_act_as_a_user(cluster: TestCluster) -> None:
    pool = p.password_key(p.read_secret(cluster.config.secret_path))
    credential = p.user_key(p.read_secret(worker_credential(cluster.home, "w1")).decode())
    for name, secret in [
        (n, k) for n in (user_name(cluster), "w1", "") for k in (pool, credential)
    ]:
        _, _, reply = handshake(cluster, "control", name, secret)
        assert isinstance(reply, p.Error) and reply.code == "auth", reply
    assert "authentication failed for control" in cluster.log("scheduler")
    assert "from 127.0.0.1:" in cluster.log("scheduler")


def test_user_token_cannot_register_a_worker(cluster: TestCluster, tmp_path: Path) -> None:
    key = p.user_key(cluster.token)
    for name in (user_name(cluster), "w3"):
        _, _, reply = handshake(cluster, "worker", name, key)
        assert isinstance(reply, p.Error) and reply.code == "auth", reply
    # A worker daemon given the user's token as its secret is refused too.
    token_file = write(tmp_path / "token.secret", cluster.token + "\n")
    worker = cluster.add_worker("impostor", secret_file=token_file)
    cluster.expected_exits.add("impostor")
    assert worker.wait(timeout=30) == 1
    assert "authentication failed" in cluster.log("impostor")


def test_unknown_role_is_refused(cluster: TestCluster) -> None:
    _, _, reply = handshake(cluster, "admin", user_name(cluster), p.user_key(cluster.token))
    assert isinstance(reply, p.Error) and reply.code == "auth"


def test_replayed_handshake_fails(cluster: TestCluster) -> None:
    hello, auth, reply = handshake(
        cluster, "control", user_name(cluster), p.user_key(cluster.token)
    )
    assert isinstance(reply, p.Welcome)
    # An eavesdropper sends the same hello and the same answer on a new connection.
    with dial(cluster) as sock:
        send(sock, hello)
        challenge = p.recv_message(sock)
        assert isinstance(challenge, p.Challenge)
        send(sock, auth)
        replayed = p.recv_message(sock)
        assert isinstance(replayed, p.Error) and replayed.code == "auth"
        send(sock, p.QueryJobs())  # nothing is answered after a failed handshake
        sock.settimeout(10)
        with pytest.raises((ConnectionError, p.ProtocolError, OSError)):
            while True:
                assert not isinstance(p.recv_message(sock), p.JobList)


def test_nothing_is_answered_before_the_handshake(cluster: TestCluster) -> None:
    with dial(cluster) as sock:
        send(sock, p.QueryJobs().with_id(1))
        reply = p.recv_message(sock)
        assert isinstance(reply, p.Error) and "expected hello" in reply.message
        assert sock.recv(100) == b""  # and the connection is closed


def test_each_role_may_send_only_its_own_messages(cluster: TestCluster) -> None:
    with dial(cluster) as sock:
        hello = p.Hello(
            role="control", version=p.PROTOCOL_VERSION, name=user_name(cluster), nonce="n"
        )
        key = p.user_key(cluster.token)
        send(sock, hello)
        challenge = p.recv_message(sock)
        send(sock, p.answer_challenge(key, hello, challenge))
        assert isinstance(p.recv_message(sock), p.Welcome)
        for message in (
            p.OutputChunk(job_id="1.0", offset=0),
            p.JobFinished(job_id="1.0", attempt=1, exit_code=0),
            p.Draining(),
        ):
            send(sock, message.with_id(7))
            reply = p.recv_message(sock)
            assert isinstance(reply, p.Error) and reply.code == "forbidden", reply
        send(sock, p.QueryJobs().with_id(8))
        assert isinstance(p.recv_message(sock), p.JobList)


def test_silent_peer_is_dropped(make_cluster) -> None:  # noqa: ANN001
    cluster = make_cluster(workers=0, scheduler_args=("--handshake-timeout", "1"))
    with dial(cluster) as sock:
        start = time.monotonic()
        assert sock.recv(100) == b""
        assert time.monotonic() - start < 15
    with dial(cluster) as sock:  # half a frame, then silence
        sock.sendall(b'\x00\x00\x00\x40{"type": ')
        assert sock.recv(100) == b""
    wait_until(lambda: "nothing received in 1 s" in cluster.log("scheduler"))
    assert cluster.run("dq").returncode == 0


def test_failed_handshakes_are_rate_limited_per_address(make_cluster) -> None:  # noqa: ANN001
    # A window far longer than the test: the block cannot end half-way through it
    # (its end is tested with a clock of its own in tests/security/).
    cluster = make_cluster(
        workers=1, scheduler_args=("--auth-failure-limit", "3", "--auth-failure-window", "3600")
    )
    wrong = cluster.env(DFARM_TOKEN=user_name(cluster) + ":guess")
    for _ in range(3):
        out = cluster.run("dq", env=wrong)
        assert out.returncode == 1 and "authentication failed" in out.stderr
    # Now wrong guesses from this address are refused as such ...
    for _ in range(5):
        out = cluster.run("dq", env=wrong)
        assert out.returncode == 1 and "too many failed handshakes" in out.stderr
    # ... while the right token is still let in: others' failures lock no one out.
    assert cluster.run("dq").returncode == 0
    log = cluster.log("scheduler")
    assert log.count("refusing its wrong guesses") == 2  # the address's, the name's: once each
    assert log.count("authentication failed for control") == 3
    assert "127.0.0.1" in log.split("refusing its wrong guesses")[0].splitlines()[-1]
    # The worker connected before is unaffected.
    assert "w1" in cluster.run("dstat").stdout


def test_a_registration_no_worker_sends_is_refused(cluster: TestCluster) -> None:
    """Found by the fuzz suite: a bad entry in ``running`` cost an internal error."""
    secret = p.user_key(p.read_secret(worker_credential(cluster.home, "odd")).decode())
    metrics = p.WorkerMetrics(
        cores=1, threads=1, memory_total_mb=1, memory_available_mb=1, disk_total_mb=1,
        disk_free_mb=1, load_avg=[0.0, 0.0, 0.0],
    )  # fmt: skip
    for running, slots in ((["..:1"], 1), (["1.0"], 1), (["1:1"], 1), ([], 0)):
        with dial(cluster) as sock:
            hello = p.Hello(role="worker", version=p.PROTOCOL_VERSION, name="odd", nonce="n")
            send(sock, hello)
            send(sock, p.answer_challenge(secret, hello, p.recv_message(sock)))
            assert isinstance(p.recv_message(sock), p.Welcome)
            register = p.Register(
                slots=slots, cpus=1, memory_mb=1, gpus=0, metrics=metrics, running=running
            )
            send(sock, register.with_id(1))
            reply = p.recv_message(sock)
            assert isinstance(reply, p.Error) and reply.code == "invalid", reply
    assert "internal error" not in cluster.log("scheduler")
    assert sorted(w["name"] for w in json.loads(cluster.run("dstat", "--json").stdout)) == [
        "w1",
        "w2",
    ]


def test_ipv4_peers_of_a_dual_stack_scheduler_are_rate_limited(make_cluster) -> None:  # noqa: ANN001
    # On "::" an IPv4 peer is seen as ::ffff:127.0.0.1; failures and the block must be
    # counted under one address all the same.
    # (with a window no busy machine outlasts: the block holds till the test's end)
    args = ("--host", "::", "--auth-failure-limit", "2", "--auth-failure-window", "3600")
    cluster = make_cluster(workers=0, scheduler_args=args)
    target = ("--scheduler", f"127.0.0.1:{cluster.access.port}")
    wrong = cluster.env(DFARM_TOKEN=user_name(cluster) + ":guess")
    for _ in range(2):
        out = cluster.run("dq", *target, env=wrong)
        assert out.returncode == 1 and "authentication failed" in out.stderr
    out = cluster.run("dq", *target, env=wrong)
    assert out.returncode == 1 and "too many failed handshakes from 127.0.0.1" in out.stderr
