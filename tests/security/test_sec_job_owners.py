"""Two users' jobs on one root worker: bob's job cannot read alice's inputs, cache,
sandbox or results, by their paths or by walking the worker's folder (issue 23,
item 4, the worker's side)."""

from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import TestCluster, wait_until, write

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs a worker running as root")

#: Bob's job: every file below the worker's folder ($1), then the paths of alice's
#: sandbox ($2) and result ($3) by name. The runtime a root worker may build for
#: job accounts (an interpreter and dfarm's packages) is every account's to read.
SNOOP = """#!/bin/sh
find "$1" -path "$1/runtime" -prune -o -print 2>&1
find "$1" -path "$1/runtime" -prune -o -type f -exec cat {} + 2>&1
cat "$2"/* "$3" 2>&1
ls -la "$1" "$1"/* 2>&1
echo snooped
"""


@pytest.fixture
def accounts() -> Iterator[tuple[str, str]]:
    """Two user accounts of this machine, removed afterwards."""
    names = [f"dfsec{secrets.token_hex(3)}" for _ in range(2)]
    made = []
    try:
        for name in names:
            subprocess.run(["useradd", "-M", "-s", "/bin/sh", name], check=True)
            made.append(name)
        yield names[0], names[1]
    finally:
        for name in made:
            subprocess.run(["userdel", name], check=False)


def _token(cluster: TestCluster, name: str) -> dict[str, str]:
    add = cluster.run("dfarm", "user", "add", name, "--home", cluster.config.home)
    return cluster.env(DFARM_TOKEN=add.stdout.strip().splitlines()[-1])


def _state(cluster: TestCluster, env: dict[str, str], job: str) -> str:
    out = cluster.run("dq", "--json", "--all", env=env)
    return {j["id"]: j["state"] for j in json.loads(out.stdout)}.get(job, "")


@pytest.mark.parametrize("ftp", [False, True], ids=["spool-link", "ftp"])
def test_bob_reads_nothing_of_alices(
    accounts: tuple[str, str],  # first: removed once the cluster (its launchers) stopped
    make_cluster,  # noqa: ANN001
    tmp_path: Path,
    ftp: bool,
) -> None:
    cluster = make_cluster(workers=1, slots=2, worker_args=("--always-ftp",) if ftp else ())
    alice, bob = (_token(cluster, name) for name in accounts)
    mark = secrets.token_hex(6)
    a = tmp_path / "a"
    write(a / "small.txt", f"ALICE-{mark}-small\n")
    write(a / "big.bin", f"ALICE-{mark}-big\n" * 10000)  # larger than travels inline
    gate, started = tmp_path / "gate", tmp_path / "started"
    write(a / "job.sh", "#!/bin/sh\ncat small.txt big.bin > out.bin\n"
          f"[ \"$1\" = wait ] || exit 0\ntouch {started}\n"
          f"while [ ! -e {gate} ]; do sleep 0.05; done\n", True)  # fmt: skip
    inputs = "transfer_input_files = small.txt, big.bin\n"
    write(a / "done.sub", f"executable = job.sh\n{inputs}queue\n")
    write(a / "wait.sub", f"executable = job.sh\narguments = wait\n{inputs}queue\n")
    # Alice's 1.0 ends (its result is stored); her 2.0 runs on while bob's job looks.
    assert (
        cluster.run(
            "dsub", "--wait", "--per-job", "--per-job", "done.sub", cwd=a, env=alice
        ).returncode
        == 0
    )
    assert cluster.run("dsub", "wait.sub", cwd=a, env=alice).returncode == 0
    wait_until(started.exists, what="alice's second job")
    work = cluster.workers_dir / "w1"
    # Alice's stored result, where the worker linked it (over FTP the scheduler
    # writes it: its modes are the spool's, not the worker's).
    result = cluster.config.home / "spool" / "1" / "0" / "outputs" / "out.bin"
    if ftp:
        result = tmp_path / "none"
    write(tmp_path / "b" / "snoop.sh", SNOOP, True)
    write(tmp_path / "b" / "snoop.sub", "executable = snoop.sh\n"
          f"arguments = {work} {work}/jobs/2.0-1 {result}\nqueue\n")  # fmt: skip
    out = cluster.run(
        "dsub", "--wait", "--per-job", "--per-job", "snoop.sub", cwd=tmp_path / "b", env=bob
    )
    assert out.returncode == 0, out.stdout + out.stderr
    got = tmp_path / "got"
    assert (
        cluster.run("dfetch", "--per-job", "--per-job", "3.0", "--dest", got, env=bob).returncode
        == 0
    )
    seen = (got / "3.0" / "stdout").read_bytes().decode(errors="replace")
    assert seen.endswith("snooped\n") and "Permission denied" in seen
    assert f"ALICE-{mark}" not in seen
    gate.touch()
    wait_until(lambda: _state(cluster, alice, "2.0") == "completed", what="alice's job")
    # Alice gets her own results, whole.
    assert (
        cluster.run("dfetch", "--per-job", "--per-job", "2.0", "--dest", got, env=alice).returncode
        == 0
    )
    for result in (a / "1.0" / "out.bin", got / "2.0" / "out.bin"):  # 1.0's came with --wait
        assert result.read_text().count(f"ALICE-{mark}") == 10001
    # The caches: one folder per owner, the worker's alone, as is the cache itself.
    cache = work / "cache"
    folders = [cache, *(f for f in cache.iterdir())]
    assert len(folders) == 3  # alice's and bob's
    for folder in folders:
        st = folder.lstat()
        assert stat.S_ISDIR(st.st_mode) and st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o700
