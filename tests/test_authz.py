"""Users confined to their own jobs and files; admins act on all (real processes)."""

from __future__ import annotations

import ftplib
import json
from pathlib import Path

import pytest
from conftest import TestCluster, wait_until, write

from control_node.client import Client
from control_node.connection import NotFound
from scheduler import protocol as p

#: What alice's job carries (arguments, environment, output) that nobody else may see.
SECRET_WORDS = ("topsecret",)


def add_user(cluster: TestCluster, name: str, *extra: str) -> dict[str, str]:
    out = cluster.run("dfarm", "user", "add", name, *extra, "--home", cluster.config.home)
    assert out.returncode == 0, out.stderr
    return cluster.env(DFARM_TOKEN=out.stdout.strip().splitlines()[-1])


def jobs_of(cluster: TestCluster, env: dict[str, str], *args: str) -> dict[str, dict]:
    out = cluster.run("dq", "--json", "--all", *args, env=env)
    assert out.returncode == 0, out.stderr
    return {j["id"]: j for j in json.loads(out.stdout)}


def big_output_job(tmp_path: Path, name: str, words: str) -> Path:
    """A job whose output is too large to travel inline: its results go over FTP."""
    folder = tmp_path / name
    write(folder / "job.sh", "#!/bin/sh\necho \"$1 $SECRET_ENV\"\n"
          "head -c 200000 /dev/zero > big.out\necho 'value = 7' > result.txt\n", True)  # fmt: skip
    write(folder / "job.sub", f"executable = job.sh\narguments = {words}\n"
          f"environment = SECRET_ENV={words}-env\n"
          "transfer_output_files = big.out\nqueue\n")  # fmt: skip
    return folder


def completed(cluster: TestCluster, env: dict[str, str], job_id: str) -> bool:
    return jobs_of(cluster, env).get(job_id, {}).get("state") == "completed"


def test_other_users_see_only_ids_and_states_and_touch_nothing(
    make_cluster,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    cluster = make_cluster(workers=1)
    alice = cluster.env()
    bob = add_user(cluster, "bob")
    folder = big_output_job(tmp_path, "alice", "topsecret")
    assert cluster.run("dsub", "job.sub", cwd=folder).returncode == 0
    wait_until(lambda: completed(cluster, alice, "1.0"), timeout=60)

    # dq -allusers: ids, owner and state, never arguments, executable or results.
    for args in (("--allusers",), ("--allusers", "-l"), ("--allusers", "--json")):
        out = cluster.run("dq", "--all", *args, env=bob)
        assert out.returncode == 0 and "1.0" in out.stdout, out.stderr
        assert not any(word in out.stdout for word in SECRET_WORDS), out.stdout
        assert "job.sh" not in out.stdout
    seen = jobs_of(cluster, bob, "--allusers")["1.0"]
    assert (seen["owner"], seen["state"]) == (cluster.token.partition(":")[0], "completed")
    assert seen["arguments"] == [] and seen["executable"] == "" and seen["result"] is None
    assert "1.0" not in jobs_of(cluster, bob)  # without -allusers: only bob's own
    history = cluster.run("dhistory", "--user", "*", "--json", env=bob)
    assert history.returncode == 0 and "1.0" in history.stdout
    assert not any(word in history.stdout for word in SECRET_WORDS)

    # No command touches alice's job for bob.
    for command, *args in (("dfetch", "1.0"), ("dtail", "1.0"), ("drm", "1"), ("dhold", "1.0")):
        out = cluster.run(command, *args, cwd=tmp_path, env=bob)
        assert out.returncode == 1 and "no job of yours" in out.stderr, (command, out)
        assert not (tmp_path / "1.0").exists()
    with Client(token=bob["DFARM_TOKEN"], scheduler=f"127.0.0.1:{cluster.access.port}") as c:
        with pytest.raises(NotFound, match="no job of yours"):
            c.conn.request(p.FetchResults(ids=["1"]))
        # bob's own fetch grant reads bob's results, not alice's, whatever the path.
        own = big_output_job(tmp_path, "bob", "bobs-words")
        bob_cluster = c.submit(own / "job.sub", cwd=str(own))
        bob_cluster.wait(timeout=60)
        reply = c.conn.request(p.FetchResults(ids=[str(bob_cluster.id)]))
    assert isinstance(reply, p.JobResults) and reply.download is not None
    grant = reply.download
    ftp = ftplib.FTP()
    ftp.connect(grant.host, grant.port, timeout=20)
    ftp.login(grant.user, grant.password)
    try:
        got: list[bytes] = []
        ftp.retrbinary(f"RETR /{bob_cluster.id}/0/outputs/big.out", got.append)
        assert len(b"".join(got)) == 200000
        for path in ("/1/0/stdout", "/1/0/outputs/big.out", "../1/0/stdout", "/1/input"):
            with pytest.raises(ftplib.error_perm):
                ftp.retrbinary(f"RETR {path}", lambda _: None)
        with pytest.raises(ftplib.error_perm):
            ftp.nlst("/1/0")
    finally:
        ftp.close()
    # Alice's job is untouched and hers alone.
    assert completed(cluster, alice, "1.0")


def test_admin_acts_on_every_job(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    cluster = make_cluster(workers=1)
    alice = cluster.env()
    admin = add_user(cluster, "carol", "--admin")
    listed = cluster.run("dfarm", "user", "list", "--home", cluster.config.home)
    assert any(
        line.split()[:1] == ["carol"] and "admin" in line for line in listed.stdout.splitlines()
    )
    folder = big_output_job(tmp_path, "alice", "topsecret")
    assert cluster.run("dsub", "job.sub", cwd=folder).returncode == 0
    wait_until(lambda: completed(cluster, alice, "1.0"), timeout=60)
    seen = jobs_of(cluster, admin, "--allusers")["1.0"]
    assert seen["arguments"] == ["topsecret"] and seen["executable"]
    out = cluster.run("dfetch", "1.0", "--dest", tmp_path / "admin", env=admin)
    assert out.returncode == 0, out.stderr
    assert "topsecret" in (tmp_path / "admin" / "1.0" / "stdout").read_text()
    # Paths alice's submit file names are not written on the admin's machine.
    planted = tmp_path / "planted"
    write(folder / "paths.sub", f"executable = job.sh\noutput = {planted}.out\n"
          f"log = {planted}.log\nqueue\n")  # fmt: skip
    assert cluster.run("dsub", "paths.sub", cwd=folder).returncode == 0
    wait_until(lambda: completed(cluster, alice, "2.0"), timeout=60)
    out = cluster.run("dfetch", "2.0", "--dest", tmp_path / "admin", env=admin)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "admin" / "2.0" / "stdout").exists()
    assert not list(tmp_path.glob("planted*"))
    # A job of alice's that waits: the admin holds, releases and removes it.
    write(
        folder / "wait.sub", "executable = /bin/sleep\narguments = 300\nrequest_cpus = 64\nqueue\n"
    )
    assert cluster.run("dsub", "wait.sub", cwd=folder).returncode == 0
    for command, expected in (("dhold", "held"), ("drelease", "idle"), ("drm", "removed")):
        out = cluster.run(command, "3.0", env=admin)
        assert out.returncode == 0, out.stderr
        job = jobs_of(cluster, alice)["3.0"]
        assert job["state"] == expected
        if expected == "held":
            assert job["hold_reason"] == "held by carol"


def test_secrets_never_in_logs_json_or_command_lines(
    make_cluster,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    cluster = make_cluster(workers=1)
    folder = big_output_job(tmp_path, "alice", "words")
    assert cluster.run("dsub", "--wait", "job.sub", cwd=folder).returncode == 0
    outputs = [
        cluster.run(command, *args, cwd=tmp_path).stdout
        for command, *args in (("dq", "--json", "--all"), ("dstat", "--json"),
                               ("dhistory", "--json"), ("dfetch", "1.0", "--json"))
    ]  # fmt: skip
    with Client(token=cluster.token, scheduler=f"127.0.0.1:{cluster.access.port}") as c:
        reply = c.conn.request(p.FetchResults(ids=["1"]))
    assert isinstance(reply, p.JobResults) and reply.download is not None
    secrets = {
        "token": cluster.token.partition(":")[2],
        "pool secret": p.read_secret(cluster.config.secret_path).decode(),
        "FTP password": reply.download.password,
    }
    logs = [cluster.log(name) for name in cluster.processes]
    command_lines = [
        Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode(errors="replace")
        for proc in cluster.processes.values()
    ]
    for what, secret in secrets.items():
        for text in (*outputs, *logs, *command_lines):
            assert secret not in text, f"the {what} leaks"
