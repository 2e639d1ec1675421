"""The parts of self-checkpointing: the submit keys, the checkpoint's tar, the run
time lost to evictions and the table that keeps it all."""

from __future__ import annotations

import ftplib
import io
import os
import signal
import stat
import tarfile
from pathlib import Path

import pytest

from control_node.submit_errors import SubmitFileError
from control_node.submit_file import parse_submit_file
from scheduler.checkpoint_table import wall_lost
from scheduler.effects import Effects
from scheduler.job_records import Job
from scheduler.protocol import CheckpointFile, JobEvent, JobSpec, JobState
from scheduler.quota import Quota
from scheduler.retention import Retention
from scheduler.schema import MIGRATIONS, _job_checkpoints
from scheduler.staging import Spool
from scheduler.store import Store
from worker_node.checkpoint import DEFAULT_VACATE_TIME, Policy, pack, policy, unpack
from worker_node.spool_link import SpoolLink


def test_a_job_without_checkpoint_exit_code_does_not_checkpoint() -> None:
    assert policy({}) is None
    assert policy({"KillSig": '"SIGUSR1"'}) is None


def test_the_checkpoint_keys_as_htcondor_stores_them() -> None:
    assert policy({"SuccessCheckpointExitCode": "85"}) == Policy(85, None, signal.SIGTERM,
                                                          DEFAULT_VACATE_TIME)  # fmt: skip
    rules = policy({
        "SuccessCheckpointExitCode": "77",
        "TransferCheckpoint": '"state.json, out/"',
        "KillSig": '"SIGUSR1"',
        "JobMaxVacateTime": "30",
    })  # fmt: skip
    assert rules == Policy(77, ["state.json", "out/"], signal.SIGUSR1, 30.0)
    assert policy({"SuccessCheckpointExitCode": "85", "KillSig": '"2"'}).kill_sig == signal.SIGINT  # type: ignore[union-attr]
    assert policy({"SuccessCheckpointExitCode": "85", "KillSig": '"HUP"'}).kill_sig == signal.SIGHUP  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"SuccessCheckpointExitCode": "yes"}, "checkpoint_exit_code: 'yes' is not an integer"),
        ({"SuccessCheckpointExitCode": "0"}, "checkpoint_exit_code: 0 is not an exit code"),
        ({"SuccessCheckpointExitCode": "300"}, "checkpoint_exit_code: 300 is not an exit code"),
        ({"SuccessCheckpointExitCode": "85", "KillSig": '"SIGNOPE"'}, "kill_sig: unknown signal"),
        ({"SuccessCheckpointExitCode": "85", "JobMaxVacateTime": "-1"}, "job_max_vacate_time"),
        (
            {"SuccessCheckpointExitCode": "1", "TransferCheckpoint": '"../x"'},
            "not below the sandbox",
        ),
        (
            {"SuccessCheckpointExitCode": "1", "TransferCheckpoint": '"/etc"'},
            "not below the sandbox",
        ),
    ],
)
def test_unusable_checkpoint_keys_are_refused(attributes: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        policy(attributes)


def test_dsub_refuses_a_bad_checkpoint_key_on_its_line(tmp_path: Path) -> None:
    (tmp_path / "run.sh").write_text("#!/bin/sh\n")
    sub = tmp_path / "job.sub"
    sub.write_text("executable = run.sh\ncheckpoint_exit_code = 85\nkill_sig = SIGNOPE\nqueue\n")
    with pytest.raises(SubmitFileError) as caught:
        parse_submit_file(sub, cluster=1, cwd=str(tmp_path))
    assert "job.sub:3" in str(caught.value) and "kill_sig: unknown signal" in str(caught.value)
    sub.write_text(
        "executable = run.sh\ncheckpoint_exit_code = 85\nkill_sig = SIGUSR2\n"
        "transfer_checkpoint_files = a, b\njob_max_vacate_time = 20\nqueue\n"
    )
    (proc,) = parse_submit_file(sub, cluster=1, cwd=str(tmp_path)).procs
    assert proc.attributes["SuccessCheckpointExitCode"] == "85"
    assert proc.attributes["TransferCheckpoint"] == '"a, b"'
    assert proc.attributes["KillSig"] == '"SIGUSR2"'


def test_checkpoint_keys_without_an_exit_code_are_said_to_do_nothing(tmp_path: Path) -> None:
    (tmp_path / "run.sh").write_text("#!/bin/sh\n")
    sub = tmp_path / "job.sub"
    sub.write_text("executable = run.sh\ntransfer_checkpoint_files = a\nqueue\n")
    warnings = parse_submit_file(sub, cluster=1, cwd=str(tmp_path)).warnings
    assert any("job.sub:2" in w and "only for a job that sets checkpoint_exit_code" in w
               for w in warnings), warnings  # fmt: skip


def test_a_checkpoint_holds_what_changed_and_never_writes_through_an_input(
    tmp_path: Path,
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "input").write_text("the input\n")
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    os.link(cache / "input", sandbox / "data.txt")
    (sandbox / "state.json").write_text('{"count": 3}')
    (sandbox / "out").mkdir()
    (sandbox / "out" / "part").write_text("x")
    staged = {"data.txt": (cache / "input").stat().st_ino}
    archive = tmp_path / "ckpt.tar"
    pack(sandbox, staged, None, archive)
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == ["out", "out/part", "state.json"]
    # The job rewrote an input: the checkpoint has the new one, restored in place of the
    # link, and the cache entry it was linked to is untouched.
    (sandbox / "data.txt").unlink()
    (sandbox / "data.txt").write_text("rewritten\n")
    pack(sandbox, staged, None, archive)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    os.link(cache / "input", fresh / "data.txt")
    staged_fresh = dict(staged)
    unpack(archive, fresh, staged_fresh, None)
    assert (fresh / "data.txt").read_text() == "rewritten\n"
    assert (cache / "input").read_text() == "the input\n"
    assert staged_fresh == {} and (fresh / "state.json").read_text() == '{"count": 3}'
    assert (fresh / "out" / "part").read_text() == "x"


@pytest.mark.parametrize("with_filter", [True, False])
def test_a_checkpoint_is_unpacked_as_data_with_or_without_tarfile_filters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_filter: bool
) -> None:
    """Pythons before 3.11.4 (a worker that is not root may run one) have no
    extraction filters: the same checks are made without them."""
    if not with_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)

    def archive(*members: tuple[tarfile.TarInfo, bytes]) -> Path:
        path = tmp_path / "ckpt.tar"
        with tarfile.open(path, "w") as tar:
            for info, data in members:
                tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
        return path

    def entry(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644,
              link: str = "", data: bytes = b"") -> tuple[tarfile.TarInfo, bytes]:  # fmt: skip
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.linkname, info.size = kind, mode, link, len(data)
        return info, data

    good = tmp_path / f"good-{with_filter}"
    good.mkdir()
    state = entry("state.json", mode=0o6777, data=b"{}")
    unpack(archive(state, entry("latest", tarfile.SYMTYPE, link="state.json")), good, {}, None)
    assert (good / "latest").read_text() == "{}"
    assert stat.S_IMODE((good / "state.json").stat().st_mode) & 0o7022 == 0
    for bad in (
        entry("out", tarfile.SYMTYPE, link="../../etc/passwd"),
        entry("abs", tarfile.SYMTYPE, link="/etc/passwd"),
        entry("fifo", tarfile.FIFOTYPE),
    ):
        folder = tmp_path / f"bad-{bad[0].name}-{with_filter}"
        folder.mkdir()
        with pytest.raises(tarfile.TarError):
            unpack(archive(bad), folder, {}, None)
        assert not os.path.lexists(folder / bad[0].name)


def test_transfer_checkpoint_files_names_what_is_kept(tmp_path: Path) -> None:
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    (sandbox / "state.json").write_text("{}")
    (sandbox / "big.tmp").write_text("scratch")
    archive = tmp_path / "ckpt.tar"
    pack(sandbox, {}, ["state.json"], archive)
    with tarfile.open(archive) as tar:
        assert tar.getnames() == ["state.json"]
    with pytest.raises(FileNotFoundError, match="'missing' is missing"):
        pack(sandbox, {}, ["state.json", "missing"], archive)


@pytest.mark.parametrize("name", ["../escape", "/etc/escape"])
def test_a_checkpoint_cannot_write_outside_the_sandbox(tmp_path: Path, name: str) -> None:
    archive = tmp_path / "evil.tar"
    payload = tmp_path / "payload"
    payload.write_text("x")
    with tarfile.open(archive, "w") as tar, open(payload, "rb") as f:
        member = tarfile.TarInfo(name)
        member.size = 1
        tar.addfile(member, f)
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    with pytest.raises(tarfile.TarError):
        unpack(archive, sandbox, {}, None)
    assert not (tmp_path / "escape").exists()


def test_a_link_in_a_checkpoint_cannot_point_outside(tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        link = tarfile.TarInfo("secret")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
        tar.addfile(link)
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    with pytest.raises(tarfile.TarError):
        unpack(archive, sandbox, {}, None)
    assert not os.path.lexists(sandbox / "secret")


def events(*pairs: tuple[float, str]) -> list[JobEvent]:
    return [JobEvent(time=t, event=name) for t, name in pairs]


def test_run_time_lost_counts_from_the_last_checkpoint_to_the_eviction() -> None:
    assert wall_lost(events((0, "submitted"), (10, "executing"), (50, "terminated"))) == 0
    story = events(
        (0, "submitted"),
        (10, "executing"), (20, "checkpointed"), (30, "checkpointed"), (45, "evicted"),
        (50, "executing"), (60, "evicted"),  # no checkpoint in this run: all of it lost
        (70, "executing"), (80, "checkpointed"), (80.5, "evicted"),  # vacated
        (90, "executing"), (95, "terminated"),
    )  # fmt: skip
    assert wall_lost(story) == 15 + 10 + 0.5


def test_the_table_keeps_a_jobs_checkpoint_across_a_restart(tmp_path: Path) -> None:
    assert (
        MIGRATIONS.index(_job_checkpoints) == len(MIGRATIONS) - 1 or _job_checkpoints in MIGRATIONS
    )
    store = Store(tmp_path / "db.sqlite")
    job = Job(cluster=1, proc=0, owner="a", state=JobState.RUNNING,
              spec=JobSpec(executable="x"), submit_time=0)  # fmt: skip
    job.checkpoint = CheckpointFile(name="1-1.tar", sha256="ab", size=10)
    job.checkpoints, job.checkpoint_time, job.wall_lost, job.resumes = 2, 5.0, 1.5, 1
    with store.transaction():
        store.checkpoints.save(job)
    store.close()
    again = Job(cluster=1, proc=0, owner="a", state=JobState.RUNNING,
                spec=JobSpec(executable="x"), submit_time=0)  # fmt: skip
    other = Job(cluster=1, proc=1, owner="a", state=JobState.RUNNING,
                spec=JobSpec(executable="x"), submit_time=0)  # fmt: skip
    store = Store(tmp_path / "db.sqlite")
    store.checkpoints.attach([again, other])
    store.close()
    assert (again.checkpoint, again.checkpoints, again.checkpoint_time) == (job.checkpoint, 2, 5.0)
    assert (again.wall_lost, again.resumes) == (1.5, 1)
    assert (other.checkpoint, other.checkpoints) == (None, 0)
    info = again.info()
    assert (info.checkpoints, info.checkpoint_size, info.wall_lost) == (2, 10, 1.5)


def test_a_jobs_grant_reaches_its_own_checkpoints_alone(spool: Spool, tmp_path: Path) -> None:
    folder = spool.checkpoint_dir(7, 0)
    folder.mkdir(parents=True)
    spool.checkpoint_dir(7, 1).mkdir()
    grant = spool.grant_job(7, 0, "127.0.0.1", ttl=60)
    with ftplib.FTP(timeout=10) as ftp:
        ftp.connect(grant.host, grant.port)
        ftp.login(grant.user, grant.password)
        ftp.storbinary("STOR checkpoints/0/1-1.tar", io.BytesIO(b"state"))
        got = io.BytesIO()
        ftp.retrbinary("RETR checkpoints/0/1-1.tar", got.write)
        with pytest.raises(ftplib.error_perm):
            ftp.storbinary("STOR checkpoints/1/1-1.tar", io.BytesIO(b"not mine"))
    assert got.getvalue() == (folder / "1-1.tar").read_bytes() == b"state"
    assert list(spool.checkpoint_dir(7, 1).iterdir()) == []


def test_checkpoints_count_in_the_quota_and_go_with_the_results(
    spool: Spool, tmp_path: Path
) -> None:
    store = Store(tmp_path / "db.sqlite")
    store.accounts.add_user("alice")
    cluster = store.clusters.reserve_cluster("alice", 1000.0)
    quota = Quota(store, spool, upload_limit=0, spool_quota=0)
    before = quota.usage("alice")
    folder = spool.checkpoint_dir(cluster, 0)
    folder.mkdir(parents=True)
    (folder / "1-1.tar").write_bytes(b"x" * 5000)
    assert quota.usage("alice") - before == 5000
    retention = Retention(store, spool, 60, lambda: 0.0, Effects())
    retention._remove([(cluster, 0)], [cluster])
    assert not (spool.root / str(cluster)).exists()
    store.close()


def test_a_worker_sharing_the_spool_links_its_checkpoints(spool: Spool, tmp_path: Path) -> None:
    link = SpoolLink.find(spool.share, tmp_path)
    assert link is not None
    archive = tmp_path / "ckpt.tar"
    archive.write_bytes(b"checkpoint bytes")
    with open(archive, "rb") as f:
        link.put_checkpoint(3, 0, "1-1.tar", f)
    stored = spool.checkpoint_dir(3, 0) / "1-1.tar"
    assert os.path.samefile(stored, archive)  # linked, not copied
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    got = bytearray()
    assert link.get_checkpoint(3, 0, "1-1.tar", got.extend)
    assert bytes(got) == b"checkpoint bytes"
    assert not link.get_checkpoint(3, 0, "missing.tar", got.extend)
    # A file linked elsewhere too is copied, never shared with its other name.
    os.link(archive, tmp_path / "other-name")
    with open(archive, "rb") as f:
        link.put_checkpoint(3, 0, "1-2.tar", f)
    assert not os.path.samefile(spool.checkpoint_dir(3, 0) / "1-2.tar", archive)
