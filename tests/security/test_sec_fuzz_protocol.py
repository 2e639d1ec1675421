"""A seeded fuzzer over every message type of the protocol, against one real scheduler.

Bodies are generated from the message classes' own fields and types (a new message
type is fuzzed without a change here) with hostile values: wrong types, huge strings,
numbers at and past every limit, NaN, deep nesting, path traversal, unknown and
missing fields. They are sent as an unauthenticated peer, as an authenticated user
(not an admin) and as an authenticated, registered worker. After every batch (one
message type for one role) the scheduler must still run, its log must hold no
traceback, and alice, connected on one connection all along, gets the same answers.
The examples are derandomized (the same every run) and bounded in number.
"""

from __future__ import annotations

import concurrent.futures
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TestCluster, wait_until, write
from fuzzing import (
    FORGED_LINE,
    edge_bodies,
    frame,
    fuzzed_types,
    handshake,
    message_bodies,
    minimal,
    until_closed,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from control_node.client import Client
from control_node.local_cluster import local_user_token
from scheduler import protocol as p

#: Random examples per message type and role (with the edge values: about 25 s in all).
EXAMPLES = 8
SETTINGS = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
#: The id of the request that follows each fuzzed frame: its answer shows that the
#: frame was dealt with, in order, and the connection still serves.
PROBE_ID = 2**40
#: The steady worker: a name no fuzzed value spells, so no fuzzed drain reaches it.
STEADY = "w-steady-7q"
#: How each line of the scheduler's log starts.
LOG_LINE = re.compile(r"20\d\d-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ +[a-z_.]+: ")
#: The fuzzing worker, the only one mallory's jobs may run on (they require it).
FUZZ_WORKER = "fuzz-worker"
#: mallory's cluster of jobs, submitted after alice's.
MALLORY_CLUSTER = "2"
#: What a scheduler log must never hold.
BAD_LOG = ("Traceback", "Unhandled", "internal error", "Logging error", "never retrieved")


class Target:
    """One scheduler for the module, a steady worker, alice watching and mallory."""

    def __init__(self, cluster: TestCluster):
        self.cluster = cluster
        home = cluster.config.home
        home.mkdir(parents=True)
        self.cluster.logs.mkdir()
        self.cluster.token = local_user_token(self.cluster.home)
        self.cluster.start_scheduler(
            *("--allow-pool-secret", "--auth-failure-limit", "1000000", "--handshake-timeout", "5"),
            # each reconnection reserves a cluster, which counts at its upload budget
            *("--upload-limit", "1MB"),
        )
        self.cluster.add_worker(STEADY)
        self.cluster.wait_for_workers(1)
        added = self.cluster.run("dfarm", "user", "add", "mallory", "--home", str(home))
        assert added.returncode == 0, added.stderr
        self.mallory = added.stdout.strip().splitlines()[-1]
        self.port = self.cluster.access.port
        #: alice's one connection: closed with the process, never reopened.
        self.watcher = Client(token=self.cluster.token, scheduler=f"127.0.0.1:{self.port}")
        self.before: dict[str, Any] = {}

    def seen_by_alice(self) -> tuple[dict[str, Any], list[str]]:
        jobs = {
            j.id: (j.state, j.owner, j.exit_code)
            for j in self.watcher.jobs([], states=[], all_users=False)
        }
        return jobs, sorted(w.name for w in self.watcher.pool().workers if w.name == STEADY)

    def check(self, what: str) -> None:
        """The scheduler runs, logged no error, and alice's answers are unchanged."""
        assert self.cluster.processes["scheduler"].poll() is None, f"scheduler died: {what}"
        log = self.cluster.log("scheduler")
        for bad in BAD_LOG:
            at = log.find(bad)
            assert at < 0, f"after {what}:\n{log[max(0, at - 1500) : at + 3000]}"
        # One line per record: no value a peer sent breaks or forges a line.
        forged = [
            line
            for line in log.splitlines()
            if not LOG_LINE.match(line) or line.startswith(FORGED_LINE[1:12])
        ]
        assert not forged, (what, forged[:5])
        assert self.seen_by_alice() == self.before, what


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    root = Path(tempfile.mkdtemp(prefix="dfarm-fuzz-"))
    root.chmod(0o1777)  # jobs run as nobody under a root worker
    cluster = TestCluster(root / "home")
    t = None
    try:
        t = Target(cluster)
        folder = root / "alice"
        write(folder / "job.sh", "#!/bin/sh\necho 7\n", True)
        write(folder / "job.sub", "executable = job.sh\nqueue 2\n")
        done = t.cluster.run("dsub", "job.sub", cwd=folder)
        assert done.returncode == 0, done.stderr
        wait_until(
            lambda: (
                {j.state for j in t.watcher.jobs([], states=[], all_users=False)} == {"completed"}
            ),
            timeout=60,
            what="alice's jobs to complete",
        )
        t.before = t.seen_by_alice()
        assert t.before[1] == [STEADY]
        # mallory's jobs wait for the fuzzing worker: it is sent them, and its fuzzed
        # results, aimed at them, reach the handlers' every branch.
        folder = root / "mallory"
        write(folder / "job.sh", "#!/bin/sh\necho 1\n", True)
        write(folder / "job.sub", f'executable = job.sh\nrequirements = Name == "{FUZZ_WORKER}"\n'
              "transfer_output_files = out, sub/y\nqueue 40\n")  # fmt: skip
        done = t.cluster.run("dsub", "job.sub", cwd=folder, env=cluster.env(DFARM_TOKEN=t.mallory))
        assert done.returncode == 0, done.stderr
        assert f"cluster {MALLORY_CLUSTER}" in done.stdout, done.stdout
        yield t
    finally:
        if t is not None:
            t.watcher.close()
        crashed = cluster.crashed()
        cluster.stop(grace=5)
        shutil.rmtree(root, ignore_errors=True)
    assert not crashed, crashed


# ---------------------------------------------------------------------- the three roles


def unauthenticated(t: Target, body: bytes, after_hello: bool) -> None:
    """``body`` as the first frame, or instead of the answer to the challenge: the peer
    gets at most a challenge and an error, never in."""
    with socket.create_connection(("127.0.0.1", t.port), timeout=20) as sock:
        if after_hello:
            hello = p.Hello(role="control", version=p.PROTOCOL_VERSION, name="mallory",
                            nonce=p.new_nonce())  # fmt: skip
            sock.sendall(p.encode(hello))
            assert isinstance(p.recv_message(sock), p.Challenge)
        sock.sendall(body)
        sock.shutdown(socket.SHUT_WR)
        replies = until_closed(sock)
    assert all(isinstance(r, p.Challenge | p.Error) for r in replies), replies
    assert all(r.code != "internal" for r in replies if isinstance(r, p.Error)), replies


class Peer:
    """An authenticated connection, opened again after the scheduler closes it. A
    worker registers first, and remembers the attempts it is sent; a user reserves a
    cluster. :meth:`aim` points half the bodies at these, so that the fuzzed values
    reach past the handlers' first checks."""

    def __init__(self, t: Target, role: str):
        self.t, self.role = t, role
        self.sock: socket.socket | None = None
        #: A worker's attempts: job id -> attempt.
        self.running: dict[str, int] = {}
        #: A user's reserved cluster.
        self.reserved = 0

    def connect(self) -> socket.socket:
        if self.sock is None:
            if self.role == "worker":
                key = p.password_key(p.read_secret(self.t.cluster.config.secret_path))
                name = FUZZ_WORKER
            else:
                key, name = p.user_key(self.t.mallory), "mallory"
            self.sock = handshake(self.t.port, self.role, name, key)
            if self.role == "worker":
                metrics = p.WorkerMetrics(cores=2, threads=2, memory_total_mb=1024,
                                          memory_available_mb=512, disk_total_mb=1024,
                                          disk_free_mb=512, load_avg=[0.0, 0.0, 0.0])  # fmt: skip
                self.request(p.Register(slots=1, cpus=1, memory_mb=512, gpus=0, metrics=metrics))
            else:
                (created,) = [r for r in self.request(p.NewCluster()) if r.id == PROBE_ID]
                assert isinstance(created, p.ClusterCreated), created
                self.reserved = created.cluster
        return self.sock

    def aim(self, body: dict[str, Any]) -> dict[str, Any]:
        """``body`` pointed at this peer's own attempts, jobs or cluster."""
        body = dict(body)
        if self.role == "worker" and self.running:
            job_id, attempt = sorted(self.running.items())[0]
            if "job_id" in body:
                body["job_id"] = job_id
            if "attempt" in body:
                body["attempt"] = attempt
            if body["type"] == "draining":
                body["requeue"] = [f"{job_id}:{attempt}"]
        elif self.role == "control":
            if "ids" in body:
                body["ids"] = [MALLORY_CLUSTER, f"{MALLORY_CLUSTER}.1"]
            if "job_id" in body:
                body["job_id"] = f"{MALLORY_CLUSTER}.0"
            if "clusters" in body:
                body["clusters"] = [int(MALLORY_CLUSTER), self.reserved]
            if "cluster" in body:
                body["cluster"] = self.reserved
        return body

    def request(self, message: p.Message) -> list[p.Message]:
        """Send ``message`` as request ``PROBE_ID``: every frame up to its answer."""
        assert self.sock is not None
        self.sock.sendall(p.encode(message.with_id(PROBE_ID)))
        return self.read_to_probe()

    def read_to_probe(self) -> list[p.Message]:
        """Every frame up to the answer to request ``PROBE_ID``, that answer included."""
        assert self.sock is not None
        replies = []
        while True:
            reply = p.recv_message(self.sock)  # the socket's timeout: a stall fails
            replies.append(reply)
            if isinstance(reply, p.RunJob):
                self.running[reply.job_id] = reply.attempt
            elif isinstance(reply, p.KillJob):
                self.running.pop(reply.job_id, None)
            if reply.id == PROBE_ID:
                return replies

    def throw(self, body: dict[str, Any], aim: bool) -> None:
        """Send ``body`` (aimed, or not) and a probe: the scheduler answers both, or
        refuses the frame and closes the connection; a handler never fails with an
        internal error."""
        sock = self.connect()
        if aim:
            body = self.aim(body)
        probe = p.QueryWorkers(id=PROBE_ID) if self.role == "control" else p.Ok(id=PROBE_ID)
        data = frame(body)
        try:
            sock.sendall(data + p.encode(probe))
            replies = self.read_to_probe()
        except ConnectionError:
            self.close()
            return
        if body["type"] == "job_finished":
            self.running.pop(body.get("job_id"), None)  # ended, or refused: never again
        internal = [r for r in replies if isinstance(r, p.Error) and r.code == "internal"]
        assert not internal, (internal, data[:2000])

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
            self.running.clear()


#: The worker runs before the user, who may remove the jobs it is to be sent.
ROLES = ("unauthenticated", "worker", "control")


def edges(t: Target, peer: Peer | None, cls: type[p.Message]) -> None:
    """Each field of ``cls`` set to each edge value of its type, one at a time, in a
    body otherwise valid (and aimed): the first frame of an unauthenticated peer for
    ``hello``, else its answer to the challenge."""
    base = {"type": cls.type, **minimal(cls)}
    if peer is None:
        # Many at once: each failed answer to a challenge costs 0.2 s.
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            # list(): the first failure of any of them is raised here
            list(pool.map(
                lambda body: unauthenticated(t, frame(body), after_hello=cls is not p.Hello),
                edge_bodies(cls, base),
            ))  # fmt: skip
        return
    peer.connect()
    for body in edge_bodies(cls, peer.aim(base)):
        peer.throw(body, aim=False)


@pytest.mark.parametrize("role", ROLES)
def test_fuzz_every_message_type(target: Target, role: str) -> None:
    peer = Peer(target, role) if role != "unauthenticated" else None
    fuzzed: set[str] = set()
    try:
        for cls in fuzzed_types():

            @SETTINGS
            @given(body=message_bodies(cls), after_hello=st.booleans())
            def batch(body: dict[str, Any], after_hello: bool) -> None:
                # after_hello: for a peer past the handshake, whether to aim the body
                if peer is None:  # a failed answer costs 0.2 s: only auth comes after hello
                    unauthenticated(target, frame(body), after_hello and body["type"] == "auth")
                else:
                    peer.throw(body, aim=after_hello)

            edges(target, peer, cls)
            batch()
            fuzzed.add(cls.type)
            target.check(f"{role} sent {cls.type}")
    finally:
        if peer is not None:
            peer.close()
    # Every type of the registry, which each message class joins when it is defined.
    assert fuzzed == set(p.MESSAGE_TYPES)
