"""Each worker has its own credential, bound to its name and revocable (issue 23,
broken item 2): a stolen one cannot pose as another worker or a user, a revoked one
is cut off with its jobs requeued, and the pool secret opens no default scheduler."""

from __future__ import annotations

import json
import socket
import stat
from pathlib import Path

from conftest import TestCluster, wait_until, write

from control_node.local_cluster import worker_credential
from scheduler import protocol as p


def handshake(port: int, role: str, name: str, key: bytes) -> p.Message:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.settimeout(20)
        hello = p.Hello(role=role, version=p.PROTOCOL_VERSION, name=name, nonce=p.new_nonce())
        sock.sendall(p.encode(hello))
        sock.sendall(p.encode(p.answer_challenge(key, hello, p.recv_message(sock))))
        return p.recv_message(sock)


def credential_key(cluster: TestCluster, name: str) -> bytes:
    return p.user_key(p.read_secret(worker_credential(cluster.home, name)).decode())


def dstat(cluster: TestCluster) -> dict[str, dict]:
    return {w["name"]: w for w in json.loads(cluster.run("dstat", "--json").stdout)}


def test_a_worker_credential_opens_its_own_name_only(cluster: TestCluster) -> None:
    port, key = cluster.access.port, credential_key(cluster, "w1")
    assert isinstance(handshake(port, "worker", "w1", key), p.Welcome)
    user = p.token_user(cluster.token)
    for role, name in (("worker", "w2"), ("worker", "w3"), ("control", "w1"), ("control", user)):
        reply = handshake(port, role, name, key)
        assert isinstance(reply, p.Error) and reply.code == "auth", (role, name, reply)
    # The daemon refuses to run under another name than its credential's.
    process = cluster.add_worker(
        "w3", credential_file=worker_credential(cluster.home, "w1"), slots=1
    )
    cluster.expected_exits.add("w3")
    assert process.wait(30) == 2
    assert "--name w3 does not match the credential, which is worker w1's" in cluster.log("w3")
    assert sorted(dstat(cluster)) == ["w1", "w2"]


def test_a_credential_file_open_to_others_is_refused(cluster: TestCluster, tmp_path: Path) -> None:
    leaky = write(tmp_path / "w9.credential", "w9:whatever\n")
    leaky.chmod(0o644)
    process = cluster.add_worker("w9", credential_file=leaky)
    cluster.expected_exits.add("w9")
    assert process.wait(30) == 2
    assert f"run 'chmod 600 {leaky}'" in cluster.log("w9")


def test_dfarm_worker_add_list_revoke(cluster: TestCluster, tmp_path: Path) -> None:
    home = ("--home", str(cluster.config.home))
    added = cluster.run("dfarm", "worker", "add", "gpu-7", *home)
    assert added.returncode == 0, added.stderr
    credential = added.stdout.strip().splitlines()[-1]
    assert p.token_user(credential) == "gpu-7"
    assert "--credential-file" in added.stderr
    again = cluster.run("dfarm", "worker", "add", "gpu-7", *home)
    assert again.returncode == 1 and "already has a credential" in again.stderr
    out = tmp_path / "gpu-8.credential"
    assert cluster.run("dfarm", "worker", "add", "gpu-8", "--output", out, *home).returncode == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and p.token_user(out.read_text()) == "gpu-8"
    listed = cluster.run("dfarm", "workers", *home).stdout
    assert all(name in listed for name in ("gpu-7", "gpu-8", "w1", "w2"))
    assert credential.partition(":")[2] not in listed
    # Only a verifier is stored: the credential is nowhere in the database.
    data = b"".join(f.read_bytes() for f in cluster.config.home.glob("dfarm.db*"))
    assert credential.partition(":")[2].encode() not in data
    assert p.user_key(credential) not in data
    assert cluster.run("dfarm", "worker", "revoke", "gpu-7", *home).returncode == 0
    assert "gpu-7" not in cluster.run("dfarm", "worker", "list", *home).stdout
    unknown = cluster.run("dfarm", "worker", "revoke", "gpu-7", *home)
    assert unknown.returncode == 1 and "no worker credential 'gpu-7'" in unknown.stderr


def test_a_revoked_worker_is_cut_off_and_its_job_runs_elsewhere(
    cluster: TestCluster, tmp_path: Path
) -> None:
    gate, marks = tmp_path / "gate", tmp_path / "marks"
    write(tmp_path / "job.sh", f"#!/bin/sh\necho start >> {marks}\n"
          f"while [ ! -e {gate} ]; do sleep 0.1; done\n", True)  # fmt: skip
    write(tmp_path / "job.sub", "executable = job.sh\nqueue\n")
    assert cluster.run("dsub", "job.sub", cwd=tmp_path).returncode == 0
    running = wait_until(lambda: [w for w in dstat(cluster).values() if w["slots_used"]])
    victim = running[0]["name"]
    other = "w2" if victim == "w1" else "w1"
    home = ("--home", str(cluster.config.home))
    assert cluster.run("dfarm", "worker", "revoke", victim, *home).returncode == 0
    cluster.expected_exits.add(victim)
    # Its live connection is closed at once, and it cannot come back ...
    wait_until(lambda: f"worker {victim}'s credential was revoked" in cluster.log("scheduler"))
    assert cluster.processes[victim].wait(30) == 1
    assert "wrong worker credential" in cluster.log(victim)
    # ... and its job is requeued, without waiting for a lost worker's timeout, and
    # runs on the other worker.
    wait_until(lambda: dstat(cluster).get(other, {}).get("slots_used"), what="the requeue")
    assert sorted(dstat(cluster)) == [other]
    wait_until(lambda: len(marks.read_text().splitlines()) == 2, what="the second start")
    gate.touch()
    history = wait_until(lambda: json.loads(cluster.run("dhistory", "--json").stdout))
    assert history[0]["state"] == "completed" and history[0]["worker"] == other


def test_a_default_scheduler_refuses_the_pool_secret(make_cluster) -> None:  # noqa: ANN001
    cluster: TestCluster = make_cluster(workers=1)
    process = cluster.add_worker("pooled", secret_file=cluster.config.secret_path)
    cluster.expected_exits.add("pooled")
    assert process.wait(30) == 1
    assert "takes workers with a credential of their own only" in cluster.log("pooled")
    assert "dfarm worker add NAME" in cluster.log("pooled")
    assert sorted(dstat(cluster)) == ["w1"]
    assert dstat(cluster)["w1"]["auth"] == "credential"
    assert "credential" in cluster.run("dstat").stdout.splitlines()[1]


def test_a_throw_away_scheduler_may_allow_the_pool_secret(make_cluster) -> None:  # noqa: ANN001
    cluster: TestCluster = make_cluster(workers=1, scheduler_args=("--allow-pool-secret",))
    cluster.add_worker("pooled", secret_file=cluster.config.secret_path)
    cluster.wait_for_workers(2)
    workers = dstat(cluster)
    assert workers["pooled"]["auth"] == "pool secret" and workers["w1"]["auth"] == "credential"
    # Even so, the pool secret cannot take a name that has a credential of its own.
    pool = p.password_key(p.read_secret(cluster.config.secret_path))
    reply = handshake(cluster.access.port, "worker", "w1", pool)
    assert isinstance(reply, p.Error) and reply.code == "auth"


def test_a_credential_drains_no_other_worker(cluster: TestCluster) -> None:
    with socket.create_connection(("127.0.0.1", cluster.access.port), timeout=20) as sock:
        sock.settimeout(20)
        hello = p.Hello(role="worker", version=p.PROTOCOL_VERSION, name="w1", nonce="n")
        sock.sendall(p.encode(hello))
        key = credential_key(cluster, "w1")
        sock.sendall(p.encode(p.answer_challenge(key, hello, p.recv_message(sock))))
        assert isinstance(p.recv_message(sock), p.Welcome)
        sock.sendall(p.encode(p.DrainWorker(id=1, name="w2")))
        reply = p.recv_message(sock)
    assert isinstance(reply, p.Error) and reply.code == "forbidden"
    assert "draining" not in cluster.log("w2")
