"""Unit tests for the spool's FTP server and its grants (``scheduler.staging``),
exercised with ``ftplib`` against a real server, and for the submission checks
(``scheduler.submission``)."""

from __future__ import annotations

import ftplib
import hashlib
import io
import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from scheduler.protocol import FtpGrant, InputFile, JobSpec
from scheduler.submission import SubmissionError, check_submission
from scheduler.transport.ftp import ftp_session
from scheduler.transport.hashing import HashingWriter

# pyftpdlib imports asyncore/asynchat, deprecated in Python 3.11: not ours to fix.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from pyftpdlib.authorizers import AuthenticationFailed

    from scheduler.ftp_grants import READ, READ_WRITE, WRITE, Grant, GrantAuthorizer, Rule
    from scheduler.staging import Spool

HOST = "127.0.0.1"
DATA = b"input bytes\n"
SHA = hashlib.sha256(DATA).hexdigest()


@contextmanager
def connect(grant: FtpGrant) -> Iterator[ftplib.FTP]:
    with ftplib.FTP(timeout=10) as ftp:
        ftp.connect(grant.host, grant.port)
        ftp.login(grant.user, grant.password)
        yield ftp


def login_fails(grant: FtpGrant, password: str | None = None) -> bool:
    with ftplib.FTP(timeout=10) as ftp:
        ftp.connect(grant.host, grant.port)
        try:
            ftp.login(grant.user, grant.password if password is None else password)
        except ftplib.error_perm as exc:
            assert str(exc).startswith("530")
            return True
        return False


def stor(ftp: ftplib.FTP, name: str, data: bytes) -> None:
    ftp.storbinary(f"STOR {name}", io.BytesIO(data))


def retr(ftp: ftplib.FTP, name: str) -> bytes:
    out = io.BytesIO()
    ftp.retrbinary(f"RETR {name}", out.write)
    return out.getvalue()


def refused(action, *args) -> bool:
    """Whether the server refused ``action`` with a permanent (5xx) error."""
    try:
        action(*args)
    except ftplib.error_perm:
        return True
    return False


def files_under(root: Path) -> dict[str, bytes | None]:
    """Every path below ``root`` with the content of the regular files."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() and not p.is_symlink() else None)
        for p in sorted(root.rglob("*"))
    }


def populate(spool: Spool, cluster: int, procs: int = 2) -> None:
    """Inputs and the results of ``procs`` finished jobs for ``cluster``."""
    spool.input_dir(cluster).mkdir(parents=True, exist_ok=True)
    (spool.input_dir(cluster) / SHA).write_bytes(DATA)
    for proc in range(procs):
        path = spool.job_dir(cluster, proc)
        (path / "outputs").mkdir(parents=True, exist_ok=True)
        (path / "stdout").write_bytes(f"stdout of {cluster}.{proc}\n".encode())
        (path / "outputs" / "result.txt").write_bytes(f"result of {cluster}.{proc}\n".encode())


# ----------------------------------------------------------------------------- upload grants


def test_upload_grant_can_store_inputs(spool: Spool) -> None:
    grant = spool.grant_upload(5, HOST)
    assert (grant.host, grant.port) == (HOST, spool.port)
    assert spool.input_dir(5).is_dir()
    with connect(grant) as ftp:
        stor(ftp, SHA, DATA)
        stor(ftp, "b" * 64, b"")
    assert (spool.input_dir(5) / SHA).read_bytes() == DATA
    assert (spool.input_dir(5) / ("b" * 64)).read_bytes() == b""


def test_upload_grant_cannot_read_or_list(spool: Spool) -> None:
    grant = spool.grant_upload(5, HOST)
    (spool.input_dir(5) / SHA).write_bytes(DATA)
    with connect(grant) as ftp:
        assert refused(retr, ftp, SHA)
        assert refused(ftp.retrlines, "LIST")
        assert refused(ftp.nlst)
        assert refused(ftp.size, SHA)
        assert refused(ftp.delete, SHA)
        assert refused(ftp.mkd, "sub")
    assert files_under(spool.input_dir(5)) == {SHA: DATA}


def test_upload_grant_never_rewrites_a_stored_file(spool: Spool) -> None:
    """Workers on the spool's file system link stored inputs into sandboxes: an
    upload onto one, from its start or resumed (REST), is refused."""
    grant = spool.grant_upload(5, HOST)
    stored = spool.input_dir(5) / SHA
    with connect(grant) as ftp:
        stor(ftp, SHA, DATA)
        inode = stored.stat().st_ino
        assert refused(stor, ftp, SHA, b"other")
        assert refused(ftp.storbinary, f"STOR {SHA}", io.BytesIO(b"other"), 8192, None, 2)
    assert files_under(spool.input_dir(5)) == {SHA: DATA}
    assert stored.stat().st_ino == inode
    # A job's own results may be sent again.
    with connect(spool.grant_job(5, 0, HOST, ttl=60)) as ftp:
        ftp.mkd("0")
        stor(ftp, "0/stdout", b"first")
        stor(ftp, "0/stdout", b"again")
    assert (spool.job_dir(5, 0) / "stdout").read_bytes() == b"again"


def test_upload_grant_cannot_rename(spool: Spool) -> None:
    """The scheduler names uploads by their hash (see scheduler.arrivals): a client
    renames nothing, inside its input folder or out of it."""
    grant = spool.grant_upload(5, HOST)
    with connect(grant) as ftp:
        stor(ftp, "part-0", DATA)
        for target in (SHA, "../escaped", "/escaped", "../../5/escaped"):
            assert refused(ftp.rename, "part-0", target)
    assert files_under(spool.input_dir(5)) == {"part-0": DATA}
    assert not (spool.root / "escaped").exists() and not (spool.root / "5" / "escaped").exists()


def test_upload_grant_is_confined_to_its_input_dir(spool: Spool, tmp_path: Path) -> None:
    populate(spool, 6)
    grant = spool.grant_upload(5, HOST)
    outside = tmp_path / "outside"
    before = files_under(tmp_path)
    with connect(grant) as ftp:
        # ".." from the root stays at the root.
        with suppress(ftplib.error_perm):
            ftp.cwd("..")
        assert ftp.pwd() == "/"
        assert refused(ftp.cwd, "../6")
        assert refused(ftp.cwd, "/6/input")
        assert refused(retr, ftp, f"../../6/input/{SHA}")
        for name in ("../x", "/etc/x", "../../x", "../../../x", f"{outside}", "../../6/input/x"):
            with suppress(ftplib.error_perm):
                stor(ftp, name, b"escape")
        stor(ftp, "probe", b"probe")
    after = files_under(tmp_path)
    inside = str(spool.input_dir(5).relative_to(tmp_path))
    changed = {k for k in set(before) | set(after) if before.get(k, 0) != after.get(k, 0)}
    # Whatever the server did with the names above, it wrote only below the input dir.
    assert changed, "the probe upload should have landed"
    assert all(k == inside or k.startswith(inside + "/") for k in changed), changed
    assert (spool.input_dir(5) / "probe").read_bytes() == b"probe"
    assert not outside.exists()
    assert not Path("/etc/x").exists()


# ----------------------------------------------------------------------------- job grants


@pytest.fixture
def job_grant(spool: Spool) -> FtpGrant:
    populate(spool, 7, procs=2)
    populate(spool, 8, procs=1)
    spool.clear_job_dir(7, 0)
    (spool.job_dir(7, 0) / "outputs").mkdir(parents=True)  # as the worker's MKD does
    return spool.grant_job(7, 0, HOST, ttl=60)


def test_job_grant_reads_inputs_but_cannot_write_them(spool: Spool, job_grant: FtpGrant) -> None:
    with connect(job_grant) as ftp:
        assert retr(ftp, f"input/{SHA}") == DATA
        assert retr(ftp, f"/input/{SHA}") == DATA
        assert [Path(name).name for name in ftp.nlst("input")] == [SHA]
        assert refused(stor, ftp, "input/new", b"x")
        assert refused(stor, ftp, f"input/{SHA}", b"poisoned")
        assert refused(ftp.delete, f"input/{SHA}")
        assert refused(ftp.mkd, "input/sub")
        stor(ftp, "0/outputs/evil", b"poisoned")
        # Moving one's own output over a shared input is refused too.
        assert refused(ftp.rename, "0/outputs/evil", f"input/{SHA}")
    assert (spool.input_dir(7) / SHA).read_bytes() == DATA
    assert sorted(p.name for p in spool.input_dir(7).iterdir()) == [SHA]


def test_job_grant_writes_its_own_results(spool: Spool, job_grant: FtpGrant) -> None:
    with connect(job_grant) as ftp:
        stor(ftp, "0/stdout", b"out")
        stor(ftp, "0/stderr", b"err")
        stor(ftp, "0/outputs/a.txt", b"a")
        ftp.mkd("0/outputs/dir")
        stor(ftp, "0/outputs/dir/b.txt", b"b")
        ftp.cwd("/0/outputs")
        stor(ftp, "c.txt", b"c")
        assert retr(ftp, "a.txt") == b"a"
    job = spool.job_dir(7, 0)
    assert files_under(job) == {
        "outputs": None,
        "outputs/a.txt": b"a",
        "outputs/c.txt": b"c",
        "outputs/dir": None,
        "outputs/dir/b.txt": b"b",
        "stderr": b"err",
        "stdout": b"out",
    }


def test_job_grant_cannot_touch_other_procs_or_clusters(
    spool: Spool, job_grant: FtpGrant, tmp_path: Path
) -> None:
    before = files_under(tmp_path)
    other = spool.job_dir(7, 1)
    with connect(job_grant) as ftp:
        assert refused(retr, ftp, "1/stdout")
        assert refused(retr, ftp, "/1/outputs/result.txt")
        assert refused(retr, ftp, "0/../1/stdout")
        assert refused(stor, ftp, "1/stdout", b"overwritten")
        assert refused(stor, ftp, "1/outputs/new", b"new")
        assert refused(ftp.delete, "1/stdout")
        assert refused(ftp.nlst, "1")
        assert refused(ftp.mkd, "2")
        assert refused(stor, ftp, "top-level", b"x")
        assert refused(ftp.rename, "1/stdout", "0/stolen")
        # Other clusters are outside the grant's root: names clamp below it.
        assert refused(retr, ftp, f"../8/input/{SHA}")
        assert refused(retr, ftp, "/../8/0/stdout")
        assert refused(stor, ftp, "../8/0/stdout", b"overwritten")
        assert refused(ftp.cwd, "../8")
    assert (other / "stdout").read_bytes() == b"stdout of 7.1\n"
    assert files_under(tmp_path) == before


# ----------------------------------------------------------------------------- fetch grants


def test_fetch_grant_reads_only_its_jobs(spool: Spool, tmp_path: Path) -> None:
    populate(spool, 7, procs=2)
    populate(spool, 8, procs=1)
    grant = spool.grant_fetch([(7, 0), (8, 0)], HOST)
    before = files_under(tmp_path)
    with connect(grant) as ftp:
        assert retr(ftp, "7/0/stdout") == b"stdout of 7.0\n"
        assert retr(ftp, "/7/0/outputs/result.txt") == b"result of 7.0\n"
        assert retr(ftp, "8/0/stdout") == b"stdout of 8.0\n"
        ftp.cwd("7/0")
        assert sorted(ftp.nlst()) == ["outputs", "stdout"]
        ftp.cwd("/")
        assert refused(retr, ftp, "7/1/stdout")
        assert refused(retr, ftp, f"7/input/{SHA}")
        assert refused(ftp.nlst)  # cannot enumerate the spool
        assert refused(ftp.nlst, "7")
        assert refused(ftp.nlst, "7/1")
    assert files_under(tmp_path) == before


def test_fetch_grant_cannot_write(spool: Spool, tmp_path: Path) -> None:
    populate(spool, 7, procs=1)
    grant = spool.grant_fetch([(7, 0)], HOST)
    before = files_under(tmp_path)
    with connect(grant) as ftp:
        assert refused(stor, ftp, "7/0/stdout", b"overwritten")
        assert refused(stor, ftp, "7/0/outputs/new", b"new")
        assert refused(stor, ftp, "new", b"new")
        assert refused(ftp.delete, "7/0/stdout")
        assert refused(ftp.mkd, "7/0/dir")
        assert refused(ftp.rmd, "7/0/outputs")
        assert refused(ftp.rename, "7/0/stdout", "7/0/renamed")
        assert refused(ftp.sendcmd, "APPE 7/0/stdout")
    assert files_under(tmp_path) == before


def test_symlink_out_of_the_spool_cannot_be_read(spool: Spool, tmp_path: Path) -> None:
    populate(spool, 7, procs=1)
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"top secret\n")
    secret_dir = tmp_path / "secret-dir"
    secret_dir.mkdir()
    (secret_dir / "inner.txt").write_bytes(b"inner secret\n")
    job = spool.job_dir(7, 0)
    (job / "leak").symlink_to(secret)
    (job / "outputs" / "leak").symlink_to(secret)
    (job / "leakdir").symlink_to(secret_dir)
    fetch = spool.grant_fetch([(7, 0)], HOST)
    with connect(fetch) as ftp:
        assert retr(ftp, "7/0/stdout") == b"stdout of 7.0\n"
        assert refused(retr, ftp, "7/0/leak")
        assert refused(retr, ftp, "7/0/outputs/leak")
        assert refused(retr, ftp, "7/0/leakdir/inner.txt")
        assert refused(ftp.cwd, "7/0/leakdir")
    work = spool.grant_job(7, 0, HOST, ttl=60)
    with connect(work) as ftp:
        assert refused(retr, ftp, "0/leak")
        assert refused(retr, ftp, "0/leakdir/inner.txt")
        assert refused(stor, ftp, "0/leakdir/planted", b"x")
        assert refused(stor, ftp, "0/leak", b"overwritten")
    assert secret.read_bytes() == b"top secret\n"
    assert sorted(p.name for p in secret_dir.iterdir()) == ["inner.txt"]


# ----------------------------------------------------------------------------- lifetime


def test_expired_grant_cannot_log_in(spool: Spool) -> None:
    grant = spool.grant_upload(5, HOST, ttl=0.01)
    time.sleep(0.05)
    assert login_fails(grant)


def test_revoked_grant_cannot_log_in(spool: Spool) -> None:
    grant = spool.grant_upload(5, HOST)
    with connect(grant) as ftp:
        stor(ftp, "before", b"x")
    spool.revoke(grant)
    assert login_fails(grant)
    assert not spool.authorizer.has_user(grant.user)


def test_wrong_password_and_unknown_user(spool: Spool) -> None:
    grant = spool.grant_upload(5, HOST)
    assert login_fails(grant, password=grant.password + "x")
    assert login_fails(FtpGrant(host=HOST, port=spool.port, user="nobody", password="pw"))
    assert not login_fails(grant)


def test_grants_are_distinct(spool: Spool) -> None:
    a, b = spool.grant_upload(5, HOST), spool.grant_upload(5, HOST)
    assert a.user != b.user
    assert a.password != b.password
    assert login_fails(FtpGrant(host=HOST, port=spool.port, user=a.user, password=b.password))


def test_expire_removes_only_expired_grants(spool: Spool) -> None:
    short = spool.grant_upload(5, HOST, ttl=0.01)
    short2 = spool.grant_fetch([(5, 0)], HOST, ttl=0.01)
    long = spool.grant_upload(5, HOST, ttl=3600)
    time.sleep(0.05)
    assert spool.authorizer.expire(time.time()) == 2
    assert not spool.authorizer.has_user(short.user)
    assert not spool.authorizer.has_user(short2.user)
    assert spool.authorizer.has_user(long.user)
    assert spool.authorizer.expire(time.time()) == 0
    with connect(long) as ftp:
        stor(ftp, "still-works", b"x")
    assert spool.authorizer.expire(time.time() + 7200) == 1
    assert not spool.authorizer.has_user(long.user)


def test_an_extended_grant_outlives_its_ttl_and_a_revoked_one_stays_gone(spool: Spool) -> None:
    kept = spool.grant_job(5, 0, HOST, ttl=0.5)
    gone = spool.grant_job(5, 1, HOST, ttl=0.5)
    spool.revoke(gone)
    spool.authorizer.extend([kept.user, gone.user], time.time() + 3600)
    assert spool.authorizer.expire(time.time() + 1) == 0
    assert not login_fails(kept)
    assert login_fails(gone)


def test_clear_job_dir_forgets_previous_attempt(spool: Spool) -> None:
    populate(spool, 7, procs=2)
    spool.clear_job_dir(7, 0)
    spool.clear_job_dir(7, 5)  # nothing there: not an error
    assert not spool.job_dir(7, 0).exists()
    assert (spool.job_dir(7, 1) / "stdout").exists()
    assert (spool.input_dir(7) / SHA).read_bytes() == DATA


def test_job_grant_creates_its_result_folders(spool: Spool) -> None:
    """Workers create <proc>/ and <proc>/outputs/ only when they have large files."""
    populate(spool, 7, procs=1)
    spool.clear_job_dir(7, 3)
    with connect(spool.grant_job(7, 3, HOST, ttl=60)) as ftp:
        ftp.mkd("3")
        ftp.mkd("3/outputs")
        stor(ftp, "3/outputs/big.bin", DATA)
        assert refused(ftp.mkd, "0/outputs/x")
        assert refused(ftp.mkd, "4")
        assert refused(ftp.mkd, "elsewhere")
    assert (spool.job_dir(7, 3) / "outputs" / "big.bin").read_bytes() == DATA
    assert not spool.job_dir(7, 4).exists()


# ----------------------------------------------------------------------------- has_perm

ROOT = Path("/spool")


def authorizer(*rules: Rule, expires_in: float = 60.0) -> GrantAuthorizer:
    auth = GrantAuthorizer()
    auth.add(Grant("u", "pw", str(ROOT), rules, time.time() + expires_in))
    return auth


def test_has_perm_longest_prefix_wins() -> None:
    auth = authorizer(Rule(ROOT / "1", READ_WRITE), Rule(ROOT / "1" / "input", READ))
    assert auth.has_perm("u", "w", str(ROOT / "1" / "0" / "stdout"))
    assert auth.has_perm("u", "r", str(ROOT / "1" / "0" / "stdout"))
    assert auth.has_perm("u", "r", str(ROOT / "1" / "input" / "x"))
    assert not auth.has_perm("u", "w", str(ROOT / "1" / "input" / "x"))
    assert not auth.has_perm("u", "d", str(ROOT / "1" / "input"))
    # Order of the rules does not matter.
    auth = authorizer(Rule(ROOT / "1" / "input", READ), Rule(ROOT / "1", READ_WRITE))
    assert not auth.has_perm("u", "w", str(ROOT / "1" / "input" / "x"))
    assert auth.has_perm("u", "w", str(ROOT / "1" / "x"))


def test_has_perm_matches_whole_path_components() -> None:
    auth = authorizer(Rule(ROOT / "1" / "0", READ))
    assert auth.has_perm("u", "r", str(ROOT / "1" / "0" / "stdout"))
    assert auth.has_perm("u", "r", str(ROOT / "1" / "0"))
    assert not auth.has_perm("u", "r", str(ROOT / "1" / "00" / "stdout"))
    assert not auth.has_perm("u", "r", str(ROOT / "1" / "0x"))
    assert not auth.has_perm("u", "r", str(ROOT / "10" / "0" / "stdout"))


def test_has_perm_directories_on_the_way_allow_only_enter() -> None:
    auth = authorizer(Rule(ROOT / "1" / "0", READ_WRITE))
    for way in (ROOT, ROOT / "1", Path("/")):
        assert auth.has_perm("u", "e", str(way))
        for perm in "lrwmdfa":
            assert not auth.has_perm("u", perm, str(way)), (perm, way)
    # A sibling is not on the way.
    assert not auth.has_perm("u", "e", str(ROOT / "2"))
    assert not auth.has_perm("u", "e", str(ROOT / "1" / "1"))
    assert not auth.has_perm("u", "e", "/elsewhere")


def test_has_perm_without_path() -> None:
    auth = authorizer(Rule(ROOT / "in", WRITE))
    assert auth.has_perm("u", "w")
    assert not auth.has_perm("u", "r")
    assert auth.get_perms("u") == "".join(sorted(WRITE))


def test_unknown_or_expired_user_has_no_perms() -> None:
    auth = authorizer(Rule(ROOT, READ_WRITE))
    assert not auth.has_perm("nobody", "e", str(ROOT))
    assert not auth.has_perm("nobody", "r")
    assert auth.get_perms("nobody") == ""
    expired = authorizer(Rule(ROOT, READ_WRITE), expires_in=-1)
    assert not expired.has_perm("u", "r", str(ROOT / "x"))
    assert expired.get_perms("u") == ""


def test_validate_authentication() -> None:
    auth = authorizer(Rule(ROOT, READ))
    auth.validate_authentication("u", "pw", None)
    assert auth.get_home_dir("u") == str(ROOT)
    with pytest.raises(AuthenticationFailed):
        auth.validate_authentication("u", "pw2", None)
    with pytest.raises(AuthenticationFailed):
        auth.validate_authentication("v", "pw", None)
    with pytest.raises(AuthenticationFailed):
        authorizer(Rule(ROOT, READ), expires_in=-1).validate_authentication("u", "pw", None)
    auth.revoke("u")
    with pytest.raises(AuthenticationFailed):
        auth.validate_authentication("u", "pw", None)


# ----------------------------------------------------------------------------- submissions


@pytest.fixture
def input_dir(tmp_path: Path) -> Path:
    path = tmp_path / "input"
    path.mkdir()
    return path


def upload(input_dir: Path, name: str, data: bytes) -> InputFile:
    sha = hashlib.sha256(data).hexdigest()
    (input_dir / sha).write_bytes(data)
    return InputFile(name=name, sha256=sha, size=len(data))


def valid_spec(input_dir: Path, **changes: object) -> JobSpec:
    fields: dict[str, object] = {
        "executable": "run.sh",
        "arguments": ["--in", "data.txt"],
        "environment": {"OMP_NUM_THREADS": "4", "_X1": ""},
        "stdin": "data.txt",
        "inputs": [
            upload(input_dir, "run.sh", b"#!/bin/sh\ncat\n"),
            upload(input_dir, "data.txt", b"data\n"),
            upload(input_dir, "copy of data.txt", b"data\n"),
        ],
        "transfer_output_files": ["out.txt", "results/a.csv", "./b"],
    }
    fields.update(changes)
    return JobSpec(**fields)  # type: ignore[arg-type]


def rejected(specs: list[JobSpec], input_dir: Path) -> str:
    with pytest.raises(SubmissionError) as info:
        check_submission(specs, input_dir)
    return str(info.value)


def test_valid_submission(input_dir: Path) -> None:
    specs = [valid_spec(input_dir), valid_spec(input_dir, stdin=None, transfer_output_files=None)]
    assert check_submission(specs, input_dir) == []


def test_notify_user_without_smtp_returns_a_mail_warning(input_dir: Path) -> None:
    asks = valid_spec(input_dir, notify_user="alice@example.org", notification="Complete")
    specs = [valid_spec(input_dir), asks]
    [warning] = check_submission(specs, input_dir)
    assert "no SMTP server configured" in warning
    assert check_submission(specs, input_dir, mail=True) == []


@pytest.mark.parametrize(
    "address", ["not-an-address", "a@b.org\nBcc: evil@example.org", "a@b.org, c@d.org", "a@"]
)
def test_notify_user_must_be_one_plain_address(input_dir: Path, address: str) -> None:
    message = rejected(
        [valid_spec(input_dir, notify_user=address)],
        input_dir,
    )
    assert "job 0: notify_user: invalid e-mail address" in message


def test_notification_must_be_known(input_dir: Path) -> None:
    message = rejected([valid_spec(input_dir, notification="Sometimes")], input_dir)
    assert "notification must be one of Never, Complete, Error, Always" in message


def test_empty_submission(input_dir: Path) -> None:
    assert "no jobs" in rejected([], input_dir)


@pytest.mark.parametrize(
    "sha", ["", "abc", "g" * 64, "A" * 64, "a" * 63, "a" * 65, "../" + "a" * 61]
)
def test_bad_sha256(input_dir: Path, sha: str) -> None:
    spec = valid_spec(input_dir)
    inputs = [*spec.inputs, InputFile(name="extra.bin", sha256=sha, size=0)]
    message = rejected([valid_spec(input_dir, inputs=inputs)], input_dir)
    assert message == "job 0: input 'extra.bin' has no valid sha256"


def test_missing_upload(input_dir: Path) -> None:
    missing = InputFile(name="big.dat", sha256=hashlib.sha256(b"never").hexdigest(), size=5)
    spec = valid_spec(input_dir)
    message = rejected([valid_spec(input_dir, inputs=[*spec.inputs, missing])], input_dir)
    assert message == "job 0: input 'big.dat' was not uploaded"


def test_upload_that_is_a_directory_or_symlink(input_dir: Path, tmp_path: Path) -> None:
    spec = valid_spec(input_dir)
    as_dir = InputFile(name="d", sha256=hashlib.sha256(b"d").hexdigest(), size=0)
    (input_dir / as_dir.sha256).mkdir()
    message = rejected([valid_spec(input_dir, inputs=[*spec.inputs, as_dir])], input_dir)
    assert "'d' was not uploaded" in message
    (tmp_path / "elsewhere").write_bytes(b"link")
    as_link = InputFile(name="l", sha256=hashlib.sha256(b"link").hexdigest(), size=4)
    (input_dir / as_link.sha256).symlink_to(tmp_path / "elsewhere")
    message = rejected([valid_spec(input_dir, inputs=[*spec.inputs, as_link])], input_dir)
    assert "'l' was not uploaded" in message


def test_size_mismatch(input_dir: Path) -> None:
    good = upload(input_dir, "data.txt", b"12345")
    bad = InputFile(name="data.txt", sha256=good.sha256, size=6)
    spec = valid_spec(input_dir)
    inputs = [spec.inputs[0], bad]
    message = rejected([valid_spec(input_dir, inputs=inputs)], input_dir)
    assert message == "job 0: input 'data.txt' has 5 bytes, expected 6"


def test_size_mismatch_in_a_later_proc(input_dir: Path) -> None:
    first = valid_spec(input_dir)
    run, data = first.inputs[0], first.inputs[1]
    wrong = InputFile(name=data.name, sha256=data.sha256, size=data.size + 1)
    second = valid_spec(input_dir, inputs=[run, wrong])
    assert rejected([first, second], input_dir).startswith("job 1: input 'data.txt' has")


@pytest.mark.parametrize(
    "name",
    ["/abs", "..", ".", "", "bad\x01name", "tab\tname", "new\nline", "x" * 256]
    + ["a/", "a//b", "a/../b", "../a", "a/./b", "d/" + "x" * 256, "/".join("d" * 40)],
)
def test_unsafe_input_names(input_dir: Path, name: str) -> None:
    spec = valid_spec(input_dir)
    extra = upload(input_dir, name, b"extra")
    message = rejected([valid_spec(input_dir, inputs=[*spec.inputs, extra])], input_dir)
    assert message == f"job 0: input {name!r} is not a plain file name"


@pytest.mark.parametrize("name", ["del\x7fname", "nel\x85name", "csi\x9bname"])
def test_other_control_characters_in_input_names(input_dir: Path, name: str) -> None:
    spec = valid_spec(input_dir)
    extra = upload(input_dir, name, b"extra")
    with pytest.raises(SubmissionError, match="not a plain file name"):
        check_submission([valid_spec(input_dir, inputs=[*spec.inputs, extra])], input_dir)


def test_plain_names_are_accepted(input_dir: Path) -> None:
    spec = valid_spec(input_dir)
    names = ["...", "..x", ".hidden", "with space", "ünïcødé", "x" * 255, "a\\b"]
    extra = [upload(input_dir, name, name.encode()) for name in names]
    assert check_submission([valid_spec(input_dir, inputs=[*spec.inputs, *extra])], input_dir) == []


def test_duplicate_input_names(input_dir: Path) -> None:
    spec = valid_spec(input_dir)
    dup = upload(input_dir, "data.txt", b"other data\n")
    message = rejected([valid_spec(input_dir, inputs=[*spec.inputs, dup])], input_dir)
    assert message == "job 0: two inputs have the same name"


def test_executable_must_be_an_input(input_dir: Path) -> None:
    message = rejected([valid_spec(input_dir, executable="/bin/sh")], input_dir)
    assert message == "job 0: the executable '/bin/sh' is not an input"
    message = rejected([valid_spec(input_dir, executable="missing.sh")], input_dir)
    assert "'missing.sh' is not an input" in message


def test_stdin_must_be_an_input(input_dir: Path) -> None:
    message = rejected([valid_spec(input_dir, stdin="/etc/passwd")], input_dir)
    assert message == "job 0: the input file '/etc/passwd' is not an input"


@pytest.mark.parametrize(
    "output", ["..", "../x", "a/../../x", "a/..", "/etc/passwd", "/x", "", ".", "a\x00b", "a\nb"]
)
def test_outputs_that_leave_the_job_dir(input_dir: Path, output: str) -> None:
    message = rejected([valid_spec(input_dir, transfer_output_files=["ok.txt", output])], input_dir)
    assert message == f"job 0: output {output!r} leaves the job's directory"


@pytest.mark.parametrize("name", ["1A", "A-B", "", "A B", "A=B", "Ä", "\nA"])
def test_bad_environment_names(input_dir: Path, name: str) -> None:
    message = rejected([valid_spec(input_dir, environment={"OK": "1", name: "x"})], input_dir)
    assert message == f"job 0: invalid environment variable name {name!r}"


def test_environment_name_with_trailing_newline(input_dir: Path) -> None:
    with pytest.raises(SubmissionError, match="invalid environment variable name"):
        check_submission([valid_spec(input_dir, environment={"A\n": "x"})], input_dir)


@pytest.mark.parametrize("changes", [{"request_cpus": 0}, {"request_gpus": -1}])
def test_bad_requests(input_dir: Path, changes: dict) -> None:
    assert "request_cpus" in rejected([valid_spec(input_dir, **changes)], input_dir)


# ----------------------------------------------------------------------------- worker cache


def test_worker_cache_fetches_a_large_input_and_checks_its_hash(
    spool: Spool, tmp_path: Path
) -> None:
    """Over real FTP, in several 4 MiB blocks (each hashed in a helper thread while it
    is written): the right content is cached; a file that does not match the hash it
    was asked for is refused and leaves nothing behind."""
    from worker_node.transfer import InputCache, TransferError

    data = os.urandom(9 << 20)  # two full buffers and a partial one
    sha = hashlib.sha256(data).hexdigest()
    spool.input_dir(3).mkdir(parents=True)
    (spool.input_dir(3) / sha).write_bytes(data)
    cache = InputCache(tmp_path / "cache")
    grant = spool.grant_job(3, 0, HOST, ttl=60)
    wanted = InputFile(name="big.bin", sha256=sha, size=len(data))
    with ftp_session(grant) as ftp:
        assert cache.fetch(ftp, f"input/{sha}", wanted).read_bytes() == data
        forged = InputFile(name="forged.bin", sha256="0" * 64, size=len(data))
        with pytest.raises(TransferError, match="'forged.bin' does not match its hash"):
            cache.fetch(ftp, f"input/{sha}", forged)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [sha]
    assert cache.missing([wanted, forged]) == [forged]


def test_an_input_is_cached_before_it_is_known_as_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another job's thread, which reads what is cached without the lock, never finds
    an input known but not yet in place."""
    from scheduler.protocol.wire import pack_bytes
    from worker_node.transfer import InputCache

    cache = InputCache(tmp_path / "cache")
    data = b"#!/bin/sh\n"
    sha = hashlib.sha256(data).hexdigest()
    seen = []
    real_replace = Path.replace

    def replace(self: Path, target: Path) -> Path:
        seen.append(cache.missing([InputFile(name="job.sh", sha256=sha, size=len(data))]))
        return real_replace(self, target)

    monkeypatch.setattr(Path, "replace", replace)
    cache.add_inline({sha: pack_bytes(data)})
    assert len(seen) == 1 and seen[0]  # still missing while it was moved in place
    path, inode = cache.entry(sha)
    assert path.read_bytes() == data and path.stat().st_ino == inode


@pytest.mark.parametrize("sizes", [[10], [1 << 20, 3 << 20, 5], [0, 2 << 20]])
def test_hashing_writer_writes_and_hashes_every_block(sizes: list[int]) -> None:
    blocks = [os.urandom(size) for size in sizes]
    out = io.BytesIO()
    with HashingWriter(out.write) as sink:
        for block in blocks:
            sink(memoryview(block))
    whole = b"".join(blocks)
    assert out.getvalue() == whole
    assert sink.digest.hexdigest() == hashlib.sha256(whole).hexdigest()


def test_directory_input_names_stay_below_the_sandbox(input_dir: Path) -> None:
    spec = valid_spec(input_dir)
    names = ["dir_a/in.txt", "dir_a/sub/deep.txt", "with space/x"]
    extra = [upload(input_dir, name, name.encode()) for name in names]
    assert check_submission([valid_spec(input_dir, inputs=[*spec.inputs, *extra])], input_dir) == []


def test_an_input_cannot_be_a_file_and_a_folder(input_dir: Path) -> None:
    spec = valid_spec(input_dir)
    extra = [upload(input_dir, "d", b"file"), upload(input_dir, "d/x", b"in the folder")]
    message = rejected([valid_spec(input_dir, inputs=[*spec.inputs, *extra])], input_dir)
    assert message == "job 0: input 'd' is both a file and a folder"


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://example.org/data/set.tar.gz", True),
        ("http://127.0.0.1:8080/a%20b.txt?x=1", True),
        ("osdf:///ospool/ap20/data/common.tar.gz", True),
        ("https://example.org/", False),
        ("https://example.org/%2e%2e", False),
        ("https://example.org/a%2fb", False),
        ("not a url", False),
        ("https://example.org/new\nline", False),
    ],
)
def test_url_inputs_must_name_a_sandbox_file(input_dir: Path, url: str, ok: bool) -> None:
    spec = valid_spec(input_dir, url_inputs=[url])
    if ok:
        assert check_submission([spec], input_dir) == []
    else:
        assert rejected([spec], input_dir) == f"job 0: URL input {url!r} names no file"


def test_a_url_input_cannot_take_a_staged_input_name(input_dir: Path) -> None:
    spec = valid_spec(input_dir, url_inputs=["https://example.org/data.txt"])
    assert rejected([spec], input_dir) == "job 0: two inputs have the same name"
