"""``dfarm scheduler --tls``: the socket protocol and FTP over TLS, the certificate
pinned by workers and clients (real processes)."""

from __future__ import annotations

import ftplib
import hashlib
import json
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import TestCluster, wait_until, write

from control_node.client import Client
from scheduler import protocol as p
from scheduler.transport.tls import client_context, fingerprint


def cert_fingerprint(cluster: TestCluster) -> str:
    pem = (cluster.config.home / "tls.crt").read_text()
    return fingerprint(ssl.PEM_cert_to_DER_cert(pem))


def test_jobs_and_files_travel_over_tls(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    # The worker shares the spool's disk, but is told to use FTP as one elsewhere would.
    cluster = make_cluster(workers=1, scheduler_args=("--tls",), worker_args=("--always-ftp",))
    record = p.AccessRecord.load(cluster.config.access_path)
    assert record.tls_fingerprint == cert_fingerprint(cluster)
    assert (cluster.config.home / "tls.key").stat().st_mode & 0o077 == 0
    assert record.tls_fingerprint in cluster.log("scheduler")
    # Large input and output: both go over FTPS.
    (tmp_path / "in.bin").write_bytes(b"y" * 200_000)
    write(tmp_path / "job.sh", "#!/bin/sh\nsha256sum in.bin > sum.txt\n"
          "head -c 300000 /dev/zero > big.out\n", True)  # fmt: skip
    write(tmp_path / "job.sub", "executable = job.sh\ntransfer_input_files = in.bin\n"
          "transfer_output_files = sum.txt, big.out\nqueue\n")  # fmt: skip
    out = cluster.run("dsub", "--wait", "job.sub", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert cluster.run("dfetch", "1.0", cwd=tmp_path).returncode == 0
    digest = hashlib.sha256(b"y" * 200_000).hexdigest()
    assert (tmp_path / "1.0" / "sum.txt").read_text().split()[0] == digest
    assert (tmp_path / "1.0" / "big.out").stat().st_size == 300_000


def test_plain_peers_and_wrong_pins_are_refused(
    make_cluster,  # noqa: ANN001
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster = make_cluster(workers=0, scheduler_args=("--tls",))
    port = cluster.access.port
    # A client that does not know the scheduler speaks TLS is told what to do.
    out = cluster.run(
        "dq",
        env=cluster.env(
            DFARM_HOME=str(tmp_path), DFARM_SCHEDULER=f"127.0.0.1:{port}", DFARM_TOKEN=cluster.token
        ),
    )
    assert out.returncode == 1 and "set DFARM_TLS_FINGERPRINT" in out.stderr, out.stderr
    # A peer that speaks the plain protocol gets no answer.
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        hello = p.Hello(role="control", version=p.PROTOCOL_VERSION, name="x", nonce="n")
        sock.sendall(p.encode(hello))
        sock.settimeout(20)
        try:
            reply = sock.recv(100)
        except ConnectionResetError:
            reply = b""
        assert b"challenge" not in reply
    # A client pinning another certificate stops before sending anything.
    wrong = "AB:" * 31 + "AB"
    out = cluster.run("dq", env=cluster.env(DFARM_TLS_FINGERPRINT=wrong))
    assert out.returncode == 1 and "is not the pinned one" in out.stderr
    assert "Traceback" not in out.stderr
    # So does a worker.
    worker = cluster.add_worker("w9", "--tls-fingerprint", wrong)
    cluster.expected_exits.add("w9")
    assert worker.wait(timeout=30) == 1
    assert "is not the pinned one" in cluster.log("w9")
    # FTP without TLS is refused, even with a valid grant.
    monkeypatch.setenv("DFARM_TLS_FINGERPRINT", cert_fingerprint(cluster))
    with Client(token=cluster.token, scheduler=f"127.0.0.1:{port}") as c:
        assert c.conn.endpoint.tls_fingerprint == cert_fingerprint(cluster)
        created = c.conn.request(p.NewCluster())
    assert isinstance(created, p.ClusterCreated)
    grant = created.upload
    assert grant.tls_fingerprint == cert_fingerprint(cluster)
    ftp = ftplib.FTP()
    ftp.connect(grant.host, grant.port, timeout=20)
    try:
        with pytest.raises(ftplib.error_perm, match="TLS"):
            ftp.login(grant.user, grant.password)
    finally:
        ftp.close()
    assert cluster.run("dq").returncode == 0


def test_certificate_is_kept_across_restarts_and_files_can_be_given(
    make_cluster,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    cluster = make_cluster(workers=0, scheduler_args=("--tls",))
    first = cluster.access.tls_fingerprint
    cluster.stop(grace=5)
    cluster.start_scheduler("--tls")
    assert cluster.access.tls_fingerprint == first
    assert json.loads(cluster.run("dq", "--json").stdout) == []
    cluster.stop(grace=5)
    # Given files: those are served; a key that does not match is refused in words.
    cert, key = cluster.config.home / "tls.crt", cluster.config.home / "tls.key"
    given = tmp_path / "given"
    given.mkdir()
    (given / "c.pem").write_text(cert.read_text())
    (given / "k.pem").write_text(key.read_text())
    cluster.start_scheduler("--tls-cert", str(given / "c.pem"), "--tls-key", str(given / "k.pem"))
    assert cluster.access.tls_fingerprint == first
    cluster.stop(grace=5)
    (given / "bad.pem").write_text("not a key\n")
    out = subprocess.run(
        [sys.executable, "-m", "scheduler", "--home", str(cluster.config.home), "--host",
         "127.0.0.1", "--port", "0", "--log-file", "-", "--tls-cert", str(given / "c.pem"),
         "--tls-key", str(given / "bad.pem")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 1
    assert f"cannot use TLS certificate {given / 'c.pem'}" in out.stderr
    assert "Traceback" not in out.stderr


def test_doctor_checks_a_tls_scheduler(make_cluster) -> None:  # noqa: ANN001
    cluster = make_cluster(workers=0, scheduler_args=("--tls",))
    pin = cluster.access.tls_fingerprint
    assert pin is not None
    as_user = cluster.run("dfarm", "doctor")
    assert as_user.returncode == 0, as_user.stdout + as_user.stderr
    assert "TLS certificate pinned" in as_user.stdout and "received intact" in as_user.stdout
    # On the scheduler node, a worker check takes the address and pin from access.json.
    as_worker = cluster.run(
        "dfarm", "doctor", "--worker", "--secret-file", cluster.config.secret_path
    )
    assert as_worker.returncode == 0, as_worker.stdout + as_worker.stderr
    assert "TLS certificate pinned" in as_worker.stdout
    wrong = cluster.run("dfarm", "doctor", env=cluster.env(DFARM_TLS_FINGERPRINT="AB" * 32))
    assert wrong.returncode == 1 and "[FAIL] 2. scheduler reachable: TLS with" in wrong.stdout
    assert "is not the pinned one" in wrong.stdout
    for out in (as_user, as_worker, wrong):
        assert "Traceback" not in out.stdout + out.stderr


def test_the_web_dashboard_is_served_over_https(make_cluster) -> None:  # noqa: ANN001
    cluster = make_cluster(workers=0, scheduler_args=("--tls", "--web-port", "0"))
    url = str(wait_until(cluster.web_url, what="the dashboard's address"))
    assert url.startswith("https://127.0.0.1:")
    context = client_context()
    with urllib.request.urlopen(url + "login", context=context, timeout=20) as page:
        assert page.status == 200
    port = int(url.rstrip("/").rpartition(":")[2])
    pem = ssl.get_server_certificate(("127.0.0.1", port))
    assert fingerprint(ssl.PEM_cert_to_DER_cert(pem)) == cluster.access.tls_fingerprint
    with pytest.raises((urllib.error.URLError, ConnectionError)):  # no plain HTTP
        urllib.request.urlopen(url.replace("https", "http") + "login", timeout=20)
