"""What the database stores is not enough to authenticate (issue 23, broken item 3,
second half): users and workers are kept as SCRAM-SHA-256 verifiers, and a database
of the previous schema migrates without invalidating any token."""

from __future__ import annotations

import hashlib
import hmac
import socket
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
from conftest import TestCluster, wait_until
from old_schema import insert_jobs
from webtools import Browserless

from scheduler import database as database_module
from scheduler import protocol as p
from scheduler.job_records import Job
from scheduler.protocol import JobSpec, JobState
from scheduler.schema import MIGRATIONS, _verifiers_instead_of_keys
from scheduler.store import Store
from scheduler.web import passwords


def stolen_rows(cluster: TestCluster) -> list[tuple[str, str, dict[str, bytes]]]:
    """(role, name, row) of every user and worker credential, as a reader of the
    database file sees them."""
    with closing(sqlite3.connect(cluster.config.db_path)) as db:
        db.row_factory = sqlite3.Row
        found = []
        for role, table in (("control", "users"), ("worker", "worker_credentials")):
            for row in db.execute(f"SELECT * FROM {table}"):
                found.append((role, row["name"], {k: row[k] for k in row.keys()}))  # noqa: SIM118
    return found


def attempt(port: int, role: str, name: str, forge: Callable[[p.Hello, p.Challenge], str]):
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.settimeout(20)
        hello = p.Hello(role=role, version=p.PROTOCOL_VERSION, name=name, nonce=p.new_nonce())
        sock.sendall(p.encode(hello))
        challenge = p.recv_message(sock)
        assert isinstance(challenge, p.Challenge)
        sock.sendall(p.encode(p.Auth(digest=forge(hello, challenge))))
        return p.recv_message(sock)


def forgeries(row: dict[str, bytes]) -> dict[str, Callable[[p.Hello, p.Challenge], str]]:
    """Every proof a reader of the row could make: each stored value used as the
    secret, as its hash, or as the ClientKey itself."""
    stored, server = bytes(row["stored_key"]), bytes(row["server_key"])

    def as_key(key: bytes) -> Callable[[p.Hello, p.Challenge], str]:
        return lambda hello, challenge: p.answer_challenge(key, hello, challenge).digest

    def as_client_key(client_key: bytes) -> Callable[[p.Hello, p.Challenge], str]:
        def forge(hello: p.Hello, challenge: p.Challenge) -> str:
            signature = hmac.new(stored, p.auth_message(hello, challenge), "sha256").digest()
            return bytes(a ^ b for a, b in zip(client_key, signature, strict=True)).hex()

        return forge

    return {
        "stored key as secret": as_key(stored),
        "server key as secret": as_key(server),
        "salt as secret": as_key(bytes(row["salt"])),
        "hash of the stored key": as_key(hashlib.sha256(stored).digest()),
        "stored key as ClientKey": as_client_key(stored),
        "server key as ClientKey": as_client_key(server),
        "zero ClientKey": as_client_key(bytes(32)),
        "signature alone": lambda h, c: server_sig(server, h, c),
    }


def server_sig(server_key: bytes, hello: p.Hello, challenge: p.Challenge) -> str:
    return p.server_signature(server_key, p.auth_message(hello, challenge)).hex()


def test_a_reader_of_the_database_cannot_authenticate_as_anyone(
    make_cluster: Callable[..., TestCluster],
) -> None:
    # Every forgery is checked and answered as such (no block hides the answer).
    limit = ("--auth-failure-limit", "1000")
    cluster = make_cluster(workers=1, scheduler_args=("--web-port", "0", *limit))
    url = str(wait_until(cluster.web_url, what="the dashboard's address"))
    rows = stolen_rows(cluster)
    assert {(role, name) for role, name, _ in rows} >= {
        ("control", p.token_user(cluster.token)),
        ("worker", "w1"),
    }
    for role, name, row in rows:
        assert set(row) >= {"salt", "iterations", "stored_key", "server_key"}
        assert "key_hash" not in row
        for what, forge in forgeries(row).items():
            reply = attempt(cluster.access.port, role, name, forge)
            assert isinstance(reply, p.Error) and reply.code == "auth", (name, what)
        for value in (row["stored_key"], row["server_key"]):
            token = f"{name}:{bytes(value).hex()}"
            bearer = Browserless(url).get("/api/workers", {"Authorization": f"Bearer {token}"})
            assert bearer.status == 401, (name, bearer.status)
            assert Browserless(url).login(token).status == 403
    # The real secrets still work.
    assert cluster.run("dq").returncode == 0
    assert "w1" in cluster.run("dstat").stdout


# ----------------------------------------------------------------------------- migration

PREVIOUS = MIGRATIONS.index(_verifiers_instead_of_keys)  # the schema before verifiers


def previous_schema_database(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, str], int]:
    """A database as the previous schema wrote it: two users (alice an admin with a
    web password, bob with one set under an older token), and alice's jobs."""
    with monkeypatch.context() as patch:
        patch.setattr(database_module, "MIGRATIONS", MIGRATIONS[:PREVIOUS])
        old = Store(db_path)
        cluster = old.clusters.reserve_cluster("alice", 1000.0)
        jobs = [
            Job(cluster=cluster, proc=n, owner="alice", state=JobState.IDLE,
                spec=JobSpec(executable="run.sh"), submit_time=1000.0)
            for n in range(2)
        ]  # fmt: skip
        old.close()
        insert_jobs(db_path, cluster, "alice.sub", jobs, 1000.0)
    tokens = {"alice": "alice:old-token-of-alice", "bob": "bob:old-token-of-bob"}
    salt = b"s" * 16
    with closing(sqlite3.connect(db_path)) as db, db:
        for name, token in tokens.items():
            db.execute(
                "INSERT INTO users (name, key_hash, email, admin, created) VALUES (?,?,?,?,?)",
                (name, p.user_key(token), f"{name}@example.org", int(name == "alice"), 5.0),
            )
        for name, token in (("alice", tokens["alice"]), ("bob", "bob:an-older-token")):
            db.execute(
                "INSERT INTO web_passwords (name, key_hash, salt, hash, time) VALUES (?,?,?,?,?)",
                (name, p.user_key(token), salt, passwords._hash("correct horse", salt), 6.0),
            )
    return tokens, cluster


def test_a_database_of_the_previous_schema_migrates_and_every_token_still_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = TestCluster(tmp_path / "home")
    cluster.config.home.mkdir()
    cluster.logs.mkdir()
    tokens, number = previous_schema_database(cluster.config.db_path, monkeypatch)

    store = Store(cluster.config.db_path)  # migrates
    try:
        columns = {r["name"] for r in store.query("PRAGMA table_info(users)")}
        assert "key_hash" not in columns and {"stored_key", "server_key"} <= columns
        assert "key_hash" not in {
            r["name"] for r in store.query("PRAGMA table_info(web_passwords)")
        }
        assert [(u["name"], u["email"], u["admin"]) for u in store.accounts.users()] == [
            ("alice", "alice@example.org", 1),
            ("bob", "bob@example.org", 0),
        ]
        for name, token in tokens.items():
            assert p.holds(store.accounts.user_verifier(name), p.user_key(token))
        # alice's password holds on; bob's, void before, is gone.
        key = passwords.verify(passwords.lookup(store, "alice"), "correct horse")
        assert key == store.accounts.user_verifier("alice").stored_key
        assert passwords.lookup(store, "bob") is None
        assert [(j.id, j.state) for j in store.jobs()] == [
            (f"{number}.0", JobState.IDLE),
            (f"{number}.1", JobState.IDLE),
        ]
    finally:
        store.close()

    # A real scheduler on the migrated database: the old token logs in and sees the jobs.
    cluster.token = tokens["alice"]
    cluster.start_scheduler()
    try:
        out = cluster.run("dq", "--json", env=cluster.env(DFARM_TOKEN=tokens["alice"]))
        assert out.returncode == 0, out.stderr
        assert f"{number}.1" in out.stdout
        assert cluster.run("dq", env=cluster.env(DFARM_TOKEN=tokens["bob"])).returncode == 0
        wrong = cluster.run("dq", env=cluster.env(DFARM_TOKEN="alice:guess"))
        assert wrong.returncode == 1 and "authentication failed" in wrong.stderr
    finally:
        cluster.stop()
    assert "Traceback" not in cluster.log("scheduler")


def challenge_for(port: int, role: str, name: str) -> p.Challenge:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.settimeout(20)
        hello = p.Hello(role=role, version=p.PROTOCOL_VERSION, name=name, nonce=p.new_nonce())
        sock.sendall(p.encode(hello))
        challenge = p.recv_message(sock)
    assert isinstance(challenge, p.Challenge)
    return challenge


def test_a_challenge_does_not_tell_which_users_exist(
    make_cluster: Callable[..., TestCluster],
) -> None:
    cluster = make_cluster(workers=0)
    port, user = cluster.access.port, p.token_user(cluster.token)
    known = [challenge_for(port, "control", user) for _ in range(2)]
    unknown = [challenge_for(port, "control", "mallory") for _ in range(2)]
    for pair in (known, unknown):
        # The same salt at every try, a fresh nonce each time ...
        assert pair[0].salt == pair[1].salt and pair[0].nonce != pair[1].nonce
    # ... and nothing to tell a made-up salt from a real one.
    assert {c.iterations for c in known + unknown} == {p.ITERATIONS}
    assert {len(bytes.fromhex(c.salt)) for c in known + unknown} == {16}
    assert known[0].salt != unknown[0].salt
