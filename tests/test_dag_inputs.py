"""A DAG's nodes have no inputs folder of their own: their jobs read the DAG's
(``spool/<dag>/input``), through their FTP grant's ``input`` and the run message's
``inputs_from``. Checked against the spool's real FTP server, and on a real cluster
with an input too large to travel inline."""

from __future__ import annotations

import ftplib
import hashlib
import io
import json
from pathlib import Path

from conftest import TestCluster, write

from scheduler.protocol import FtpGrant
from scheduler.staging import Spool

HOST = "127.0.0.1"
DATA = b"the DAG's input\n"
SHA = hashlib.sha256(DATA).hexdigest()


def login(grant: FtpGrant) -> ftplib.FTP:
    ftp = ftplib.FTP(timeout=10)
    ftp.connect(grant.host, grant.port)
    ftp.login(grant.user, grant.password)
    return ftp


def retr(ftp: ftplib.FTP, name: str) -> bytes:
    out = io.BytesIO()
    ftp.retrbinary(f"RETR {name}", out.write)
    return out.getvalue()


def refused(action: object, *args: object) -> bool:
    try:
        action(*args)  # type: ignore[operator]
    except ftplib.error_perm:
        return True
    return False


def test_a_node_jobs_grant_reads_the_dags_inputs_and_nothing_else(spool: Spool) -> None:
    for cluster in (5, 9):  # 5: the DAG; 9: another cluster
        spool.input_dir(cluster).mkdir(parents=True)
        (spool.input_dir(cluster) / SHA).write_bytes(DATA)
    (spool.input_dir(9) / "other").write_bytes(b"not the DAG's")
    # Cluster 6 (a node of DAG 5) has no folder in the spool.
    ftp = login(spool.grant_job(6, 0, HOST, ttl=60, inputs=5))
    with ftp:
        assert retr(ftp, f"input/{SHA}") == DATA
        assert ftp.size(f"/input/{SHA}") == len(DATA)
        for name in ("input/other", "../9/input/other", "../5/input/" + SHA, "../../x"):
            assert refused(retr, ftp, name), name
        assert refused(ftp.storbinary, f"STOR input/{SHA}", io.BytesIO(b"changed"))
        assert refused(ftp.mkd, "input/sub")
        # Its results: the node's cluster folder is made with the first of them.
        ftp.mkd("0")
        ftp.storbinary("STOR 0/stdout", io.BytesIO(b"out"))
        assert refused(ftp.mkd, "1")
    assert (spool.job_dir(6, 0) / "stdout").read_bytes() == b"out"
    assert (spool.input_dir(5) / SHA).read_bytes() == DATA
    assert not spool.input_dir(6).exists()
    # A plain job's grant reads its own cluster's inputs.
    with login(spool.grant_job(9, 0, HOST, ttl=60)) as ftp:
        assert retr(ftp, "input/other") == b"not the DAG's"


def test_a_large_input_of_a_node_comes_from_the_dags_folder(
    cluster: TestCluster, tmp_path: Path
) -> None:
    big = bytes(range(256)) * 4096  # 1 MiB: too large to travel inline
    (tmp_path / "big.bin").write_bytes(big)
    write(
        tmp_path / "check.sh",
        '#!/bin/sh\nsha256sum big.bin | cut -d" " -f1\necho "$1" >> ' + f"{tmp_path}/ran\n",
        True,
    )
    write(
        tmp_path / "check.sub",
        "executable = check.sh\narguments = $(JOB)\ntransfer_input_files = big.bin\nqueue\n",
    )
    write(tmp_path / "big.dag", "JOB A check.sub\nJOB B check.sub\nPARENT A CHILD B\n")
    result = cluster.run("dsub_dag", "--wait", "big.dag", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "ran").read_text().split() == ["A", "B"]
    nodes = json.loads(cluster.run("dq", "-dag", "1", "--json").stdout)[0]["nodes"]
    want = hashlib.sha256(big).hexdigest()
    spool = cluster.config.home / "spool"
    for node in nodes:
        records = (tmp_path / f"{node['cluster']}.results.jsonl").read_text().splitlines()
        assert json.loads(records[0])["stdout"].strip() == want
        assert not (spool / str(node["cluster"]) / "input").exists()
