"""Large results copied in place by a client on the scheduler's machine."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import TestCluster, write
from test_results_file import connect

from control_node import fetch_local
from control_node.connection import DfarmError
from control_node.fetch_downloads import Download
from scheduler.result_fds import _may_receive
from scheduler.result_hashes import FileVersion
from scheduler.staging import Spool
from scheduler.transport.local_reads import proof

HOST = "127.0.0.1"


def put(spool: Spool, cluster: int, proc: int, data: bytes) -> str:
    """A job's large output file in the spool; its SHA-256."""
    path = spool.job_dir(cluster, proc) / "outputs"
    path.mkdir(parents=True, exist_ok=True)
    (path / "big.bin").write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def item(cluster: int, proc: int, local: Path, sha: str | None) -> Download:
    return Download(f"{cluster}.{proc}", "outputs/big.bin", f"{cluster}/{proc}/outputs/big.bin",
                    local, sha)  # fmt: skip


def test_the_files_of_a_grant_are_copied_and_checked(spool: Spool, tmp_path: Path) -> None:
    assert spool.local_reads.name is not None
    data = os.urandom(3 << 20)
    good = put(spool, 7, 0, data)
    put(spool, 7, 1, b"changed in the spool since it arrived")
    other = put(spool, 8, 0, b"another job's file")
    grant = spool.grant_fetch([(7, 0), (7, 1)], HOST, owners=("someone",))
    dest = tmp_path / "dest"
    wanted = [
        item(7, 0, dest / "a" / "big.bin", good),
        item(7, 1, dest / "b" / "big.bin", good),  # not the recorded hash
        item(8, 0, dest / "c" / "big.bin", other),  # not in the grant
        item(7, 0, dest / "d" / "big.bin", None),  # no hash recorded: FTP's
    ]
    damaged: list[str] = []
    left = fetch_local.copy_in_place(grant, spool.local_reads.name, wanted, damaged)
    assert left == wanted[2:]
    assert (dest / "a" / "big.bin").read_bytes() == data
    assert damaged == [
        "job 7.1: result file outputs/big.bin is damaged in the spool (its SHA-256 is not the"
        " one recorded when it arrived)"
    ]
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()) == ["a/big.bin"]


def exchange(name: str, request: Callable[[str], dict[str, Any]]) -> tuple[dict[str, Any], int]:
    """One request on the scheduler's socket (made from its nonce): the answer and the
    number of descriptors that came with it (closed)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
        sock.connect("\0" + name)
        nonce = json.loads(sock.recv(4096))["nonce"]
        sock.sendall(json.dumps(request(nonce)).encode())
        data, fds, _, _ = socket.recv_fds(sock, 65536, 64)
    for fd in fds:
        os.close(fd)
    return json.loads(data), len(fds)


def test_only_the_grants_password_opens_its_files(spool: Spool) -> None:
    put(spool, 7, 0, b"data")
    grant = spool.grant_fetch([(7, 0)], HOST, owners=("someone",))
    name = spool.local_reads.name
    assert name is not None
    paths = ["7/0/outputs/big.bin", "7/0/../../7/0/outputs/big.bin", "8/0/outputs/big.bin"]
    right = exchange(name, lambda n: {"user": grant.user, "proof": proof(grant.password, n),
                                      "paths": paths})  # fmt: skip
    assert right == ({"open": [True, True, False], "verified": [None, None],
                      "proof": proof(grant.password, "", "scheduler")}, 2)  # fmt: skip
    # The password itself, a proof for another nonce or another grant's: refused.
    for made in (
        lambda n: {"user": grant.user, "proof": grant.password, "paths": paths},
        lambda n: {"user": grant.user, "proof": proof(grant.password, "00" * 16), "paths": paths},
        lambda n: {"user": "g0", "proof": proof(grant.password, n), "paths": paths},
    ):
        assert exchange(name, made) == ({"error": "authentication failed"}, 0)
    spool.revoke(grant)
    revoked = exchange(name, lambda n: {"user": grant.user, "proof": proof(grant.password, n),
                                        "paths": paths})  # fmt: skip
    assert revoked == ({"error": "authentication failed"}, 0)


def test_the_scheduler_vouches_only_for_the_version_it_hashed(spool: Spool) -> None:
    sha = put(spool, 7, 0, b"data")
    path = spool.job_dir(7, 0) / "outputs" / "big.bin"
    spool.local_reads.vouch([(FileVersion.of(os.stat(path)), sha)])
    grant = spool.grant_fetch([(7, 0)], HOST, owners=("someone",))
    name = spool.local_reads.name
    assert name is not None

    def ask(nonce: str) -> dict[str, Any]:
        return {"user": grant.user, "proof": proof(grant.password, nonce), "nonce": "ab" * 16,
                "paths": ["7/0/outputs/big.bin"]}  # fmt: skip

    mine = proof(grant.password, "ab" * 16, "scheduler")
    assert exchange(name, ask) == ({"open": [True], "verified": [sha], "proof": mine}, 1)
    with open(path, "r+b") as f:  # the same size, another content
        f.write(b"D")
    assert exchange(name, ask) == ({"open": [True], "verified": [None], "proof": mine}, 1)


def test_another_account_is_handed_nothing(spool: Spool, tmp_path: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root, to ask as another account")
    nobody = pwd.getpwnam("nobody")
    data = b"results of nobody's job"
    sha = put(spool, 7, 0, data)
    name = spool.local_reads.name
    assert name is not None
    theirs = spool.grant_fetch([(7, 0)], HOST, owners=("nobody",))
    someone_elses = spool.grant_fetch([(7, 0)], HOST, owners=("root",))

    def opened_as_nobody(grant: object) -> int:
        """How many files a process of ``nobody`` is handed with ``grant``."""
        read, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child asks as nobody and says how many it got
            code = 1
            try:
                os.close(read)
                os.setgid(nobody.pw_gid)
                os.setuid(nobody.pw_uid)
                got = fetch_local._open_all(grant, name, [item(7, 0, tmp_path / "x", sha)])  # type: ignore[arg-type]
                os.write(write_end, str(len(got)).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write_end)
        with os.fdopen(read) as f:
            answer = f.read()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        return int(answer)

    assert opened_as_nobody(theirs) == 1
    assert opened_as_nobody(someone_elses) == 0
    assert _may_receive(0, ("anyone",)) and _may_receive(os.getuid(), ())
    assert not _may_receive(nobody.pw_uid, ("nobody", "root"))


JOB = "#!/bin/sh\nhead -c 3000000 /dev/urandom > big.bin\necho $1\n"
SUBMIT = (
    "executable = job.sh\narguments = $(Process)\nshould_transfer_files = YES\n"
    "transfer_output_files = big.bin\nqueue 4\n"
)


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path (a temporary one included)."""
    return {
        str(path.relative_to(root)): path.read_bytes() for path in root.rglob("*") if path.is_file()
    }


def test_a_fetch_on_the_schedulers_machine_copies_in_place(
    cluster: TestCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "job.sh", JOB, executable=True)
    write(tmp_path / "job.sub", SUBMIT)
    real = fetch_local.copy_in_place
    left_for_ftp: list[int] = []

    def counted(*args: object, **kwargs: object) -> list[Download]:
        left = real(*args, **kwargs)  # type: ignore[arg-type]
        left_for_ftp.append(len(left))
        return left

    hashed: list[int] = []
    sha256 = fetch_local._sha256

    def counted_hash(fd: int, size: int) -> str:
        hashed.append(size)
        return sha256(fd, size)

    with connect(cluster) as client:
        submitted = client.submit(tmp_path / "job.sub", cwd=str(tmp_path))
        submitted.wait(timeout=120)
        monkeypatch.setattr(fetch_local, "copy_in_place", counted)
        monkeypatch.setattr(fetch_local, "_sha256", counted_hash)
        client.fetch([str(submitted.id)], dest=tmp_path / "here", per_job=False)
        assert left_for_ftp == [0]
        # Each file is still the version the scheduler hashed: none is hashed again.
        assert hashed == []
        monkeypatch.setattr(fetch_local, "copy_in_place", lambda grant, name, d, damaged: d)
        client.fetch([str(submitted.id)], dest=tmp_path / "ftp", per_job=False)

        # A copy cut half-way leaves a temporary file, never a short one; a second
        # fetch ends as the first.
        monkeypatch.setattr(fetch_local, "copy_in_place", real)
        copies: list[int] = []
        whole = fetch_local._copy_range

        def cut_in_the_third(source: int, out: int, size: int) -> int:
            copies.append(size)
            if len(copies) < 3:
                return whole(source, out, size)
            whole(source, out, size // 2)
            raise OSError(5, "cut")

        monkeypatch.setattr(fetch_local, "_copy_range", cut_in_the_third)
        again = tmp_path / "again"
        with pytest.raises(OSError, match="cut"):
            client.fetch([str(submitted.id)], dest=again, per_job=False)
        assert any(path.name.endswith(".part") for path in again.rglob("*"))
        monkeypatch.setattr(fetch_local, "_copy_range", whole)
        client.fetch([str(submitted.id)], dest=again, per_job=False)
    assert tree(tmp_path / "here") == tree(tmp_path / "ftp") == tree(again)
    assert len([name for name in tree(again) if name.endswith("big.bin")]) == 4


def test_a_damaged_file_is_told_not_written(
    cluster: TestCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "job.sh", JOB, executable=True)
    write(tmp_path / "job.sub", SUBMIT.replace("queue 4", "queue 1"))
    with connect(cluster) as client:
        submitted = client.submit(tmp_path / "job.sub", cwd=str(tmp_path))
        submitted.wait(timeout=120)
        spooled = cluster.config.spool_dir / str(submitted.id) / "0" / "outputs" / "big.bin"
        with open(spooled, "r+b") as f:
            f.write(b"X")
        with pytest.raises(DfarmError, match="big.bin is damaged in the spool"):
            client.fetch([str(submitted.id)], dest=tmp_path / "here", per_job=False)
    assert not list((tmp_path / "here").rglob("big.bin*"))


def test_nothing_is_taken_from_a_socket_that_cannot_prove_the_password(
    spool: Spool, tmp_path: Path
) -> None:
    sha = put(spool, 7, 0, b"the real result")
    grant = spool.grant_fetch([(7, 0)], HOST, owners=("someone",))
    bogus = tmp_path / "bogus"
    bogus.write_bytes(b"an impostor's file")
    name = f"dfarm-test-impostor-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as server:
        server.bind("\0" + name)
        server.listen(1)
        asked: list[dict[str, Any]] = []

        def impostor() -> None:
            conn, _ = server.accept()
            with conn, open(bogus, "rb") as f:
                conn.sendall(json.dumps({"nonce": "cd" * 16}).encode())
                asked.append(json.loads(conn.recv(65536)))
                answer = {"open": [True], "verified": [sha], "proof": "00" * 32}
                socket.send_fds(conn, [json.dumps(answer).encode()], [f.fileno()])

        thread = threading.Thread(target=impostor)
        thread.start()
        wanted = [item(7, 0, tmp_path / "dest" / "big.bin", sha)]
        damaged: list[str] = []
        assert fetch_local.copy_in_place(grant, name, wanted, damaged) == wanted
        thread.join()
    assert not (tmp_path / "dest").exists() and damaged == []
    # What it was sent is of no use to log in with.
    assert grant.password not in json.dumps(asked)
