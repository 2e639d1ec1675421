"""Nothing a user supplies escapes its directory: submit files, forged submissions,
FTP commands and files a job produces (real processes)."""

from __future__ import annotations

import contextlib
import ftplib
import hashlib
import io
import json
from pathlib import Path

import pytest
from conftest import TestCluster, write

from control_node.client import Client
from control_node.connection import DfarmError
from scheduler import protocol as p


def client(cluster: TestCluster) -> Client:
    return Client(token=cluster.token, scheduler=f"127.0.0.1:{cluster.access.port}")


def test_input_paths_land_in_the_sandbox_by_their_name(
    cluster: TestCluster, tmp_path: Path
) -> None:
    write(tmp_path / "secret.txt", "mine\n")
    folder = tmp_path / "sub"
    write(folder / "job.sh", "#!/bin/sh\ncat secret.txt; ls\n", True)
    write(folder / "job.sub", "executable = job.sh\ntransfer_input_files = ../secret.txt\nqueue\n")
    out = cluster.run("dsub", "--wait", "--per-job", "job.sub", cwd=folder)
    assert out.returncode == 0, out.stderr
    assert cluster.run("dfetch", "--per-job", "1.0", cwd=tmp_path).returncode == 0
    stdout = (tmp_path / "1.0" / "stdout").read_text()
    assert stdout.startswith("mine\n") and "secret.txt" in stdout.splitlines()[1:]


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        ({"inputs": "../../etc/passwd"}, "is not a plain file name"),
        ({"inputs": "/etc/passwd"}, "is not a plain file name"),
        ({"inputs": "."}, "is not a plain file name"),
        ({"sha256": "../../../etc/passwd"}, "has no valid sha256"),
        ({"outputs": "../escape.txt"}, "leaves the job's directory"),
        ({"outputs": "/etc/passwd"}, "leaves the job's directory"),
        ({"outputs": "a/../../b"}, "leaves the job's directory"),
        ({"result_file": "../r.txt"}, "is not a plain file name"),
        ({"stdin": "/etc/passwd"}, "is not an input"),
    ],
)
def test_forged_submissions_naming_paths_outside_are_refused(
    cluster: TestCluster, change: dict[str, str], refusal: str
) -> None:
    """A client that skips the submit-file parser and sends its own specs."""
    data = b"#!/bin/sh\necho hi\n"
    sha = change.get("sha256", hashlib.sha256(data).hexdigest())
    name = change.get("inputs", "job.sh")
    spec = p.JobSpec(
        executable=name,
        inputs=[p.InputFile(name=name, sha256=sha, size=len(data))],
        transfer_output_files=[change["outputs"]] if "outputs" in change else None,
        result_file=change.get("result_file"),
        stdin=change.get("stdin"),
    )
    with client(cluster) as c:
        created = c.conn.request(p.NewCluster())
        assert isinstance(created, p.ClusterCreated)
        with pytest.raises(DfarmError, match=refusal):
            c.conn.request(
                p.SubmitJobs(
                    cluster=created.cluster,
                    submit_file="x.sub",
                    jobs=[spec],
                    files={hashlib.sha256(data).hexdigest(): p.pack_bytes(data)},
                )
            )
    assert json.loads(cluster.run("dq", "--json", "--all").stdout) == []


def test_upload_grant_cannot_leave_its_input_dir(cluster: TestCluster, tmp_path: Path) -> None:
    write(tmp_path / "job.sh", "#!/bin/sh\n", True)
    write(tmp_path / "job.sub", "executable = job.sh\nqueue\n")
    assert cluster.run("dsub", "job.sub", cwd=tmp_path).returncode == 0
    spool = cluster.config.spool_dir
    with client(cluster) as c:
        created = c.conn.request(p.NewCluster())
    assert isinstance(created, p.ClusterCreated)
    grant = created.upload
    ftp = ftplib.FTP()
    ftp.connect(grant.host, grant.port, timeout=20)
    ftp.login(grant.user, grant.password)
    try:
        # ".." stops at the grant's root: a file lands in its own input dir, or nowhere.
        for target in ("../../1/input/x", "/1/input/x", "../../../escape", "/etc/x"):
            with contextlib.suppress(ftplib.error_perm):
                ftp.storbinary(f"STOR {target}", io.BytesIO(b"evil"))
        for command in ("RETR ../../1/input", "LIST /", "NLST ..", "MKD ../../evil"):
            with pytest.raises(ftplib.error_perm):
                ftp.sendcmd(command) if command.startswith("MKD") else ftp.retrlines(command)
        with pytest.raises(ftplib.error_perm):
            ftp.rename("../../1/input", "stolen")
        ftp.storbinary("STOR ok.bin", io.BytesIO(b"fine"))  # its own directory: allowed
    finally:
        ftp.close()
    mine = spool / str(created.cluster) / "input"
    landed = [f for f in spool.rglob("*") if f.is_file() and f.read_bytes() == b"evil"]
    assert all(f.parent == mine for f in landed), landed
    assert sorted(f.name for f in (spool / "1" / "input").iterdir()) == [
        hashlib.sha256(b"#!/bin/sh\n").hexdigest()
    ]
    assert (spool / str(created.cluster) / "input" / "ok.bin").read_bytes() == b"fine"


def test_links_a_job_plants_are_not_followed(cluster: TestCluster, tmp_path: Path) -> None:
    secret = write(tmp_path / "outside" / "secret.txt", "not for the job\n")
    write(tmp_path / "job.sh", f"#!/bin/sh\nln -s {secret} leak.txt\n"
          f"ln -s {secret.parent} dir\necho done\n", True)  # fmt: skip
    # Default outputs: links are not sent back.
    write(tmp_path / "all.sub", "executable = job.sh\nqueue\n")
    assert cluster.run("dsub", "--wait", "--per-job", "all.sub", cwd=tmp_path).returncode == 0
    assert cluster.run("dfetch", "--per-job", "1.0", "--dest", tmp_path / "got").returncode == 0
    got = tmp_path / "got" / "1.0"
    assert (got / "stdout").read_text() == "done\n"
    assert not any("not for the job" in f.read_text() for f in got.rglob("*") if f.is_file())
    # Declared outputs through a link: the job is held, nothing is sent.
    for n, name in enumerate(("leak.txt", "dir/secret.txt"), start=2):
        write(
            tmp_path / f"{n}.sub", f"executable = job.sh\ntransfer_output_files = {name}\nqueue\n"
        )
        out = cluster.run("dsub", "--wait", "--per-job", f"{n}.sub", cwd=tmp_path)
        assert out.returncode == 1
        assert f"held: transfer_output_files: '{name}' is a link out of the sandbox" in out.stdout
