"""A hostile job swaps links to root-only files over its outputs while the root
worker collects them: the worker reads nothing but the job's own files, changes
no other file, and no process of the job outlives it (issue 23, item 1)."""

from __future__ import annotations

import json
import os
import pwd
import secrets
import signal
import stat
import threading
from pathlib import Path

import pytest
from conftest import TestCluster, wait_until, write
from job_processes import alive_as

from worker_node import sandbox_files

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs a worker running as root")

#: The job: an output, then a child in a session of its own, orphaned (double
#: fork), that keeps renaming a link to $1 and a file of its own over ``out``;
#: the job ends once the child has written its pid into the folder $2.
SWAPPER = """#!/bin/sh
head -c 100000 /dev/zero > out
( setsid sh -c '
    echo $$ > "$0/pid.$DFARM_JOB_ID"
    while :; do
        ln -sf "$1" l; mv -f l out
        head -c 100000 /dev/zero > o; mv -f o out
    done' "$2" "$1" & )
while [ ! -s "$2/pid.$DFARM_JOB_ID" ]; do :; done
echo started
"""


def _states(cluster: TestCluster) -> dict[str, dict[str, object]]:
    out = cluster.run("dq", "--json", "--all", "-l")
    return {j["id"]: j for j in json.loads(out.stdout)}


def test_swapped_links_never_leak_root_files(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    cluster = make_cluster(workers=1, slots=2)
    private = tmp_path / "private"
    private.mkdir(mode=0o711)  # the job may name what is inside, not read it
    root_only = write(private / "root-only.txt", f"ROOT-ONLY {secrets.token_hex(8)}\n")
    root_only.chmod(0o600)
    targets = {"secret": cluster.config.secret_path, "root-only": root_only}
    before = {name: os.stat(path) for name, path in targets.items()}
    contents = {path.read_bytes().strip() for path in targets.values()}
    marks = tmp_path / "marks"
    marks.mkdir(mode=0o777)
    marks.chmod(0o1777)
    write(tmp_path / "swap.sh", SWAPPER, True)
    # 8 jobs: declared outputs and the default (every new file), at both targets.
    for declared in ("transfer_output_files = out\n", ""):
        for name, target in targets.items():
            write(
                tmp_path / f"{name}{bool(declared)}.sub",
                f"executable = swap.sh\narguments = {target} {marks}\n{declared}queue 2\n",
            )
            assert cluster.run("dsub", f"{name}{bool(declared)}.sub", cwd=tmp_path).returncode == 0
    wait_until(
        lambda: (
            all(j["state"] in ("completed", "held") for j in _states(cluster).values())
            and len(_states(cluster)) == 8
        ),
        timeout=120,
        what="8 jobs ended",
    )
    nobody = pwd.getpwnam("nobody").pw_uid
    pids = [int(f.read_text()) for f in marks.iterdir()]
    survivors = [pid for pid in pids if alive_as(pid, nobody, cluster.workers_dir)]
    for pid in survivors:  # not left running if the test fails
        os.kill(pid, signal.SIGKILL)
    assert len(pids) == 8
    assert not survivors, "a job's child outlived it"
    for job_id, job in _states(cluster).items():
        if job["state"] == "held":
            assert "is a link out of the sandbox" in str(job["hold_reason"]), job
            continue
        got = tmp_path / "got"
        assert cluster.run("dfetch", job_id, "--dest", got).returncode == 0
        for f in (got / job_id).rglob("*"):
            if f.is_file():
                assert not any(c in f.read_bytes() for c in contents), f
    # The root-only files are as they were, and linked nowhere in the cluster's home.
    for name, path in targets.items():
        st = os.stat(path)
        assert (st.st_mode, st.st_uid, st.st_nlink) == (
            before[name].st_mode,
            before[name].st_uid,
            before[name].st_nlink,
        ), name
    inodes = {(st.st_dev, st.st_ino) for st in before.values()}
    for f in cluster.config.home.rglob("*"):
        st = f.lstat()
        if stat.S_ISREG(st.st_mode) and f not in targets.values():
            assert (st.st_dev, st.st_ino) not in inodes, f


def test_opening_never_follows_a_link_swapped_in_meanwhile(tmp_path: Path) -> None:
    """The opening itself, raced by a thread swapping a link over the file."""
    secret = write(tmp_path / "secret.txt", "SECRET\n")
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    (sandbox / "sub").mkdir()
    stop = threading.Event()

    def swap() -> None:
        while not stop.is_set():
            for target in ("out", "sub/out"):
                os.symlink(secret, sandbox / "l")
                os.replace(sandbox / "l", sandbox / target)
                (sandbox / "f").write_text("mine\n")
                os.replace(sandbox / "f", sandbox / target)
            os.symlink(tmp_path, sandbox / "l")
            os.replace(sandbox / "l", sandbox / "sub2")
            os.rename(sandbox / "sub2", sandbox / "l2")

    thread = threading.Thread(target=swap)
    thread.start()
    seen: set[str] = set()
    top = sandbox_files.open_dir(sandbox)
    try:
        for _ in range(2000):
            for name in ("out", "sub/out", "sub2/secret.txt"):
                try:
                    with sandbox_files.open_file(top, name, os.geteuid()) as f:
                        seen.add(f.read().decode())
                except sandbox_files.UnsafeFile as exc:
                    seen.add(exc.strerror or "")
    finally:
        stop.set()
        thread.join()
        os.close(top)
    assert "SECRET\n" not in seen
    assert "mine\n" in seen and "is a link out of the sandbox" in seen


def test_a_file_of_another_account_is_refused(tmp_path: Path) -> None:
    """A hard link to someone else's file (where the system allows one) is not read."""
    secret = write(tmp_path / "secret.txt", "SECRET\n")
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    os.link(secret, sandbox / "out")
    fifo = sandbox / "fifo"
    os.mkfifo(fifo)
    top = sandbox_files.open_dir(sandbox)
    try:
        nobody = pwd.getpwnam("nobody").pw_uid
        with pytest.raises(sandbox_files.UnsafeFile, match="belongs to another account"):
            sandbox_files.open_file(top, "out", nobody)
        with pytest.raises(sandbox_files.UnsafeFile, match="is not a plain file"):
            sandbox_files.open_file(top, "fifo", None)  # opened without blocking
        with pytest.raises(sandbox_files.UnsafeFile, match="link out of the sandbox"):
            sandbox_files.open_file(top, "../secret.txt", None)
    finally:
        os.close(top)
