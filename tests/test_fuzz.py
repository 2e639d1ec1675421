"""Property-based fuzzing of a running scheduler (hypothesis).

Random and mutated frames before the handshake, as an authenticated user and as an
authenticated worker, and random submit files, are thrown at one real scheduler.
After each phase it must still be up, answer the next legitimate client, and keep
every job it had: another user's jobs unchanged, and every job a fuzz submission
queued. Each phase has a wall-clock budget (``DFARM_FUZZ_SECONDS`` in all, default
40); the number of inputs tried is printed and recorded as a test property.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import TestCluster, wait_until, write
from fuzzing import fields, handshake, json_values, text
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from control_node.client import Client
from control_node.connection import DfarmError
from control_node.local_cluster import worker_credential
from scheduler import protocol as p

BUDGET = float(os.environ.get("DFARM_FUZZ_SECONDS", "40"))
#: Share of the budget of each phase.
SHARES = {"raw": 0.2, "control": 0.3, "worker": 0.2, "submit": 0.3}

pytestmark = pytest.mark.slow

# ---------------------------------------------------------------------- strategies
# (the values, and bodies of every message type, come from tests/fuzzing.py)


def spoiled(body: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    """``body`` with one field dropped, given a value of any type, or one added."""
    body = dict(body)
    action = data.draw(st.sampled_from(["drop", "retype", "add"]))
    names = sorted(body)
    if action == "add" or not names:
        body[data.draw(st.text(max_size=8))] = data.draw(json_values)
    elif action == "drop":
        del body[data.draw(st.sampled_from(names))]
    else:
        body[data.draw(st.sampled_from(names))] = data.draw(json_values)
    return body


def message_dicts(kinds: list[type[p.Message]], data: st.DataObject) -> dict[str, Any]:
    """A message of one of ``kinds``: mostly well formed, a fifth of them spoiled."""
    cls = data.draw(st.sampled_from(kinds))
    body = {"type": cls.type, "id": data.draw(st.integers(1, 10**6)), **data.draw(fields(cls))}
    if data.draw(st.integers(0, 4)) == 0:
        body = spoiled(body, data)
    return body


def frames(bodies: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Frames around ``bodies``: right length, wrong length, or none at all."""
    return st.one_of(
        bodies.map(lambda b: struct.pack(">I", len(b)) + b),
        st.tuples(st.integers(0, 2**32 - 1), bodies).map(lambda t: struct.pack(">I", t[0]) + t[1]),
        st.binary(max_size=300),
    )


def json_bytes(values: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return values.map(lambda v: json.dumps(v).encode())


def mutated(body: bytes, data: st.DataObject) -> bytes:
    """``body`` with a few bytes flipped, cut, or duplicated."""
    raw = bytearray(body)
    for _ in range(data.draw(st.integers(1, 4))):
        if not raw:
            break
        at = data.draw(st.integers(0, len(raw) - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "dup"]))
        if action == "flip":
            raw[at] = data.draw(st.integers(0, 255))
        elif action == "cut":
            del raw[at:]
        else:
            raw[at:at] = raw[at : at + data.draw(st.integers(1, 8))]
    return bytes(raw)


# ---------------------------------------------------------------------- harness


class Budget:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def over(self) -> bool:
        return time.monotonic() > self.end


def until_spent(test: Callable[[], None], budget: Budget) -> None:
    """Run the hypothesis ``test`` (a batch of examples per call) until ``budget`` is spent.
    Hypothesis has no time limit of its own; every batch draws new examples."""
    while not budget.over():
        test()


class Peer:
    """An authenticated raw connection that reconnects after the scheduler closes it."""

    def __init__(self, cluster: TestCluster, role: str, name: str, key: bytes):
        self.cluster, self.role, self.name, self.key = cluster, role, name, key
        self.sock: socket.socket | None = None
        self.closed_by_scheduler = 0

    def connect(self) -> socket.socket:
        if self.sock is None:
            self.sock = handshake(self.cluster.access.port, self.role, self.name, self.key, 10)
        return self.sock

    def throw(self, frame: bytes) -> None:
        """Send ``frame``, then a request that must be answered (in order, after it):
        the scheduler either answers it or closes the connection, never stalls."""
        sock = self.connect()
        probe = p.QueryWorkers() if self.role == "control" else p.QueryJobs()
        try:
            sock.sendall(frame + p.encode(probe.with_id(2**40)))
            while True:
                reply = p.recv_message(sock)  # a 10 s timeout: a stall fails the test
                if reply.id == 2**40:
                    return
        except (ConnectionError, p.ProtocolError):
            self.closed_by_scheduler += 1
            self.close()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def legit_answers(cluster: TestCluster, token: str) -> list[p.JobInfo]:
    with Client(token=token, scheduler=f"127.0.0.1:{cluster.access.port}", timeout=20) as c:
        return c.jobs([], states=[], all_users=False)


@pytest.fixture
def target(make_cluster, tmp_path: Path) -> tuple[TestCluster, dict[str, str]]:  # noqa: ANN001
    cluster = make_cluster(
        workers=1,
        scheduler_args=("--auth-failure-limit", "1000000", "--handshake-timeout", "2"),
    )
    tokens = {"alice": cluster.token}
    for name in ("mallory",):
        out = cluster.run("dfarm", "user", "add", name, "--home", cluster.config.home)
        tokens[name] = out.stdout.strip().splitlines()[-1]
    # alice's jobs: one completed, one running (gated): neither may change. (None idle:
    # the fuzzing worker holds a credential, so it may rightly be given idle jobs.)
    gate = tmp_path / "gate"
    write(tmp_path / "a" / "job.sh", f"#!/bin/sh\n[ \"$1\" = wait ] || exit 0\n"
          f"while [ ! -e {gate} ]; do sleep 0.1; done\n", True)  # fmt: skip
    write(tmp_path / "a" / "done.sub", "executable = job.sh\nqueue\n")
    write(tmp_path / "a" / "wait.sub", "executable = job.sh\narguments = wait\nqueue\n")
    assert cluster.run("dsub", "done.sub", cwd=tmp_path / "a").returncode == 0
    wait_until(lambda: [j.state for j in legit_answers(cluster, tokens["alice"])] == ["completed"])
    assert cluster.run("dsub", "wait.sub", cwd=tmp_path / "a").returncode == 0
    wait_until(lambda: [j.state for j in legit_answers(cluster, tokens["alice"])]
               == ["completed", "running"])  # fmt: skip
    return cluster, tokens


def test_fuzz_scheduler_stays_up_and_loses_nothing(
    target: tuple[TestCluster, dict[str, str]],
    tmp_path: Path,
    record_property: Callable[[str, object], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    cluster, tokens = target
    before = {j.id: (j.state, j.owner) for j in legit_answers(cluster, tokens["alice"])}
    counts = dict.fromkeys(SHARES, 0)
    submitted: set[str] = set()
    common = settings(
        max_examples=150,
        deadline=None,
        database=None,
        derandomize=False,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.large_base_example,
        ],
    )

    def check_alive() -> None:
        now = {j.id: (j.state, j.owner) for j in legit_answers(cluster, tokens["alice"])}
        assert now == before
        mine = {j.id for j in legit_answers(cluster, tokens["mallory"])}
        assert submitted <= mine, f"jobs lost: {sorted(submitted - mine)[:10]}"

    # -- 1: anything, before the handshake
    budget = Budget(BUDGET * SHARES["raw"])
    hello = p.encode(p.Hello(role="control", version=p.PROTOCOL_VERSION, name="alice", nonce="x"))
    raw_frames = frames(st.binary(max_size=200) | json_bytes(json_values))

    @common
    @given(st.data())
    def raw(data: st.DataObject) -> None:
        choice = data.draw(st.integers(0, 2))
        if choice == 0:
            frame = data.draw(raw_frames)
        else:
            body = json.dumps(message_dicts(list(p.MESSAGE_TYPES.values()), data)).encode()
            if choice == 2:
                body = mutated(hello[4:], data)
            frame = struct.pack(">I", len(body)) + body
        if budget.over():
            return
        counts["raw"] += 1
        with socket.create_connection(("127.0.0.1", cluster.access.port), timeout=10) as sock:
            sock.sendall(frame)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):  # the scheduler answers or closes; never stalls
                pass

    until_spent(raw, budget)
    check_alive()

    # -- 2 and 3: every message type, ill-formed, as an authenticated user and worker
    all_kinds = list(p.MESSAGE_TYPES.values())
    # A worker's own credential (which drains no other worker: only the pool secret,
    # the operator's, does).
    credential = p.read_secret(worker_credential(cluster.home, "fuzz-worker")).decode()
    for role, name, key, kinds in (
        ("control", "mallory", p.user_key(tokens["mallory"]), all_kinds),
        ("worker", "fuzz-worker", p.user_key(credential), all_kinds),
    ):
        budget = Budget(BUDGET * SHARES[role])
        peer = Peer(cluster, role, name, key)

        @common
        @given(st.data())
        def authenticated(data: st.DataObject) -> None:
            body = json.dumps(message_dicts(kinds, data)).encode()  # noqa: B023
            if data.draw(st.integers(0, 9)) == 0:
                body = mutated(body, data)
            if budget.over():  # noqa: B023
                return
            counts[role] += 1  # noqa: B023
            peer.throw(struct.pack(">I", len(body)) + body)  # noqa: B023

        until_spent(authenticated, budget)
        peer.close()
        check_alive()

    # -- 4: random submit files, through the real client
    folder = tmp_path / "m"
    write(folder / "job.sh", "#!/bin/sh\nexit 0\n", True)
    write(folder / "data.txt", "data\n")
    keys = ["executable", "arguments", "transfer_input_files", "transfer_output_files",
            "environment", "request_cpus", "request_memory", "request_disk", "request_gpus",
            "requirements", "priority", "max_retries", "input", "output", "error", "log",
            "initialdir", "notification", "notify_user", "universe", "foo", "+Custom", "data",
            "client", "email", "queue"]  # fmt: skip
    values = text | st.sampled_from(
        ["job.sh", "data.txt", "../job.sh", "/etc/passwd", "64", "2GB", "$(Process)",
         "$(Cluster)", "$(missing)", "TARGET.Cpus > 0", "a=b c=d", "\"x y\" 'z'", "Never",
         "a@b.c", "$RANDOM_INTEGER(1,5)", "$CHOICE(0, a, b)", "x in (1, 2)", "3", "100000000"]
    )  # fmt: skip
    line = st.one_of(
        st.tuples(st.sampled_from(keys), values).map(lambda kv: f"{kv[0]} = {kv[1]}"),
        st.sampled_from(
            [
                "queue",
                "queue 2",
                "queue 0",
                "queue x in (a, b)",
                "queue 1000000000",
                "queue x from data.txt",
                "queue x matching *.txt",
                "queue x, y from (",
                "# comment",
                "",
                "executable = job.sh",
            ]
        ),  # fmt: skip
        st.text(max_size=60),
    )
    submit_files = st.lists(line, max_size=8).map(lambda lines: "\n".join(lines) + "\n")
    budget = Budget(BUDGET * SHARES["submit"])
    client = Client(token=tokens["mallory"], scheduler=f"127.0.0.1:{cluster.access.port}")

    @common
    @given(submit_files)
    def submit(text: str) -> None:
        if budget.over():
            return
        counts["submit"] += 1
        try:
            sub = client.submit(text, cwd=str(folder))
        except DfarmError as exc:
            assert "Traceback" not in str(exc)
            return
        submitted.update(sub.job_ids)

    try:
        until_spent(submit, budget)
    finally:
        client.close()
    check_alive()
    # mallory's jobs leave the queue (removed, not lost) so that alice's may run.
    with Client(token=tokens["mallory"], scheduler=f"127.0.0.1:{cluster.access.port}") as c:
        c.remove(all_jobs=True)
    check_alive()
    # The queue still works: a new job of alice's runs to completion.
    (tmp_path / "gate").touch()
    assert cluster.run("dsub", "done.sub", cwd=tmp_path / "a").returncode == 0
    wait_until(
        lambda: {j.state for j in legit_answers(cluster, tokens["alice"])} == {"completed"},
        timeout=60,
        what="alice's jobs to complete after the fuzzing",
    )
    total = sum(counts.values())
    record_property("fuzz_inputs", total)
    with capsys.disabled():
        print(f"\nfuzz: {total} inputs tried ({counts}); {len(submitted)} fuzz jobs queued")
    assert all(counts.values()), counts
