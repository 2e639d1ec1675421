"""Per-user upload limit and spool quota, against a real scheduler and FTP server."""

from __future__ import annotations

import json
import warnings
from collections.abc import Collection
from pathlib import Path

import pytest
from conftest import TestCluster, wait_until, write

# pyftpdlib (imported with the spool) imports asyncore, deprecated in Python 3.11.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from scheduler import quota as quota_module
    from scheduler.quota import human, parse_size
    from scheduler.retention import tree_size
    from scheduler.state import SchedulerState


def queued(cluster: TestCluster, env: dict[str, str] | None = None) -> list[dict]:
    out = cluster.run("dq", "--json", "--all", env=env or cluster.env())
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_upload_limit_refuses_a_large_submission(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    cluster = make_cluster(workers=0, scheduler_args=("--upload-limit", "200K"))
    write(tmp_path / "job.sh", "#!/bin/sh\n", True)
    (tmp_path / "big.bin").write_bytes(b"x" * 300_000)
    (tmp_path / "small.bin").write_bytes(b"x" * 100_000)
    write(tmp_path / "big.sub", "executable = job.sh\ntransfer_input_files = big.bin\nqueue\n")
    write(tmp_path / "small.sub", "executable = job.sh\ntransfer_input_files = small.bin\nqueue\n")
    out = cluster.run("dsub", "big.sub", cwd=tmp_path)
    # Refused by the FTP server as the bytes arrive, or at submit, which sees the
    # upload still running (the jobs are queued while their inputs upload).
    assert out.returncode == 1, out.stderr
    assert "Upload limit exceeded" in out.stderr or "more than the upload limit" in out.stderr
    assert "Traceback" not in out.stderr
    assert queued(cluster) == []
    # Nothing of the refused upload stays in the spool (only the spool's identity).
    spool = cluster.config.spool_dir
    wait_until(lambda: [f.name for f in spool.rglob("*") if f.is_file()] == [".identity"])
    out = cluster.run("dsub", "small.sub", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert [j["state"] for j in queued(cluster)] == ["idle"]


def test_spool_quota_per_user_and_freed_by_retention(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    # Results are cleaned about 4 s after a job ends.
    cluster = make_cluster(
        workers=1, scheduler_args=("--spool-quota", "500K", "--keep-results", "0.00005")
    )
    write(tmp_path / "out.sh", "#!/bin/sh\nhead -c 450000 /dev/zero > big.out\n", True)
    write(tmp_path / "out.sub", "executable = out.sh\ntransfer_output_files = big.out\nqueue\n")
    write(tmp_path / "job.sh", "#!/bin/sh\n", True)
    (tmp_path / "in.bin").write_bytes(b"x" * 100_000)
    write(tmp_path / "in.sub", "executable = job.sh\ntransfer_input_files = in.bin\nqueue\n")
    assert cluster.run("dsub", "--wait", "out.sub", cwd=tmp_path).returncode == 0
    # 450 KB of results kept: 100 KB more does not fit in 500 KB.
    out = cluster.run("dsub", "in.sub", cwd=tmp_path)
    assert out.returncode == 1, out.stdout
    assert "limit exceeded" in out.stderr or "spool quota exceeded" in out.stderr, out.stderr
    # Another user's quota is their own.
    add = cluster.run("dfarm", "user", "add", "bob", "--home", cluster.config.home)
    bob = cluster.env(DFARM_TOKEN=add.stdout.strip().splitlines()[-1])
    assert cluster.run("dsub", "in.sub", cwd=tmp_path, env=bob).returncode == 0
    # Once retention cleans the results, the space is the user's again.
    wait_until(
        lambda: cluster.run("dsub", "in.sub", cwd=tmp_path).returncode == 0,
        timeout=60,
        what="the quota to be freed by retention",
    )
    assert "job(s) cleaned after" in cluster.log("scheduler")


def test_a_user_over_quota_is_told_before_uploading(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    cluster = make_cluster(workers=1, scheduler_args=("--spool-quota", "100K"))
    write(tmp_path / "out.sh", "#!/bin/sh\nhead -c 150000 /dev/zero > big.out\n", True)
    write(tmp_path / "out.sub", "executable = out.sh\ntransfer_output_files = big.out\nqueue\n")
    assert cluster.run("dsub", "--wait", "out.sub", cwd=tmp_path).returncode == 0
    out = cluster.run("dsub", "out.sub", cwd=tmp_path)
    assert out.returncode == 1
    assert "spool quota exceeded: your inputs and results take 146.5 KiB of 100.0 KiB" in out.stderr
    assert len(queued(cluster)) == 1


@pytest.mark.parametrize(
    ("text", "size"), [("0", 0), ("10GB", 10 * 2**30), ("512M", 512 * 2**20), ("200K", 204800)]
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_human() -> None:
    assert (human(100), human(150_000), human(3 * 2**30)) == ("100 B", "146.5 KiB", "3.0 GiB")


def test_reservations_expire_after_their_ttl_on_the_given_clock() -> None:
    from scheduler.reservations import Reservations

    now = [1000.0]
    reservations = Reservations(ttl=60, clock=lambda: now[0])
    reservations.add(1, now[0])
    reservations.add(2, now[0] + 30)
    reservations.add(3, now[0])
    reservations.submitted(3)  # its first part came: no longer a reservation
    assert reservations.due(1059.0) == []
    assert reservations.due(1060.0) == [1]
    assert 1 not in reservations and 2 in reservations
    assert reservations.due(2000.0) == [2]
    assert reservations.due(3000.0) == []


def test_usage_walks_only_the_folders_of_the_users_clusters_still_in_the_spool(
    state: SchedulerState, monkeypatch: pytest.MonkeyPatch
) -> None:
    quota = state.quota
    clusters = [state.store.clusters.reserve_cluster(o, 0.0) for o in ("ann", "ann", "bob", "ann")]
    kept, cleaned, others, uploading = clusters
    write(state.spool.input_dir(kept) / "in.dat", "x" * 100)
    write(state.spool.job_dir(kept, 0) / "out.dat", "y" * 50)
    write(state.spool.input_dir(others) / "in.dat", "z" * 1000)
    state.spool.grant_upload(uploading, "127.0.0.1", max_bytes=4000)
    write(state.spool.input_dir(uploading) / "part.dat", "w" * 10)
    walked: list[Path] = []

    def recording(root: Path, skip: Collection[str] = ()) -> int:
        walked.append(root)
        return tree_size(root, skip)

    monkeypatch.setattr(quota_module, "tree_size", recording)
    room = state.spool.upload_room(uploading)
    assert 0 < room <= 4000
    assert quota.usage("ann") == 150 + 10 + room
    assert quota.usage("ann", but=uploading) == 150 + 10
    assert quota.usage("bob") == 1000
    # Neither the folder retention removed nor another user's is looked at.
    names = {path.name for path in walked}
    assert names == {str(kept), str(uploading), str(others)} and str(cleaned) not in names
    assert walked.count(state.spool.root / str(others)) == 1  # bob's measure only


def test_a_cluster_at_rest_is_walked_once_until_retention_removes_files(
    state: SchedulerState, monkeypatch: pytest.MonkeyPatch
) -> None:
    quota = state.quota
    at_rest, busy = (state.store.clusters.reserve_cluster("ann", 0.0) for _ in range(2))
    state.reservations.add(busy, 0.0)  # its jobs may still bring files
    write(state.spool.input_dir(at_rest) / "in.dat", "x" * 100)
    write(state.spool.job_dir(at_rest, 0) / "out.dat", "y" * 50)
    write(state.spool.input_dir(busy) / "in.dat", "z" * 10)
    walked: list[str] = []

    def recording(root: Path, skip: Collection[str] = ()) -> int:
        walked.append(root.name)
        return tree_size(root, skip)

    monkeypatch.setattr(quota_module, "tree_size", recording)
    assert [quota.usage("ann") for _ in range(3)] == [160] * 3
    assert walked.count(str(at_rest)) == 1 and walked.count(str(busy)) == 3
    write(state.spool.input_dir(busy) / "more.dat", "w" * 5)
    assert quota.usage("ann") == 165  # a busy cluster's files counted as they come
    # Retention removes the job's results, and says so: the folder is walked again.
    state.spool.clear_job_dir(at_rest, 0)
    state.retention.removed([at_rest])
    assert quota.usage("ann") == 115 and walked.count(str(at_rest)) == 2
    # A folder removed whole is no longer counted, without being told.
    state.spool.remove_cluster(at_rest)
    assert quota.usage("ann") == 15
    # Its reservation submitted and its jobs gone, the other is at rest too.
    state.reservations.submitted(busy)
    assert [quota.usage("ann") for _ in range(2)] == [15, 15]
    assert walked.count(str(busy)) == 7  # once more, then kept
