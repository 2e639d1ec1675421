"""Notification mail through a real SMTP server (aiosmtpd on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import TestCluster, wait_until, write
from smtp_server import SmtpServer, free_port, self_signed

Cluster = Callable[..., TestCluster]


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


def dq_all(cluster: TestCluster) -> list[dict[str, object]]:
    result = cluster.run("dq", "--all", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def mail_state(cluster: TestCluster, job_id: str) -> str:
    return next(str(j["mail"]) for j in dq_all(cluster) if j["id"] == job_id)


def test_completed_job_sends_one_mail_with_its_details(
    make_cluster: Cluster, smtp: SmtpServer, tmp_path: Path
) -> None:
    cluster = make_cluster(workers=1, scheduler_args=smtp.args())
    script = "#!/bin/sh\nfor i in $(seq 1 30); do echo out line $i; done\necho oops >&2\n"
    write(tmp_path / "run.sh", script, executable=True)
    write(tmp_path / "job.sub", "executable = run.sh\nemail = me@example.org\n")
    result = cluster.run("dsub", "--wait", "job.sub", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr
    wait_until(lambda: smtp.inbox.count() == 1, what="the job's mail")
    (mail,) = smtp.inbox.mails
    assert mail.recipients == ["me@example.org"]
    assert mail.sender == "farm@example.org"
    assert mail.message["To"] == "me@example.org"
    assert mail.message["Subject"] == "[dfarm] job 1.0 completed: run.sh (exit code 0)"
    assert mail.message["Auto-Submitted"] == "auto-generated"
    body = mail.body
    assert "Job 1.0 completed." in body
    fields = ("Executable: run.sh", "Worker: w1", "Submitted: 20", "Started: 20", "Ended: 20",
              "Wall time: 0+00:00:0", "CPU time: 0+00:00:0", "Exit code: 0")  # fmt: skip
    for field in fields:
        name, value = field.split(": ")
        assert re.search(rf"{name}:\s+{re.escape(value)}", body), field
    assert "out line 30" in body and "out line 11" in body and "out line 10\n" not in body
    assert "Last lines of stderr:\n  oops" in body
    assert "dfetch 1.0" in body
    wait_until(lambda: mail_state(cluster, "1.0") == "sent", what="mail state 'sent' in dq")


def test_a_large_stdout_is_quoted_from_the_spool(
    make_cluster: Cluster, smtp: SmtpServer, tmp_path: Path
) -> None:
    cluster = make_cluster(workers=1, scheduler_args=smtp.args())
    script = "#!/bin/sh\nseq 1 40000\necho the end\n"  # over 64 KiB: staged over FTP
    write(tmp_path / "run.sh", script, executable=True)
    write(tmp_path / "job.sub", "executable = run.sh\nemail = me@example.org\n")
    assert cluster.run("dsub", "--wait", "job.sub", cwd=tmp_path).returncode == 0
    wait_until(lambda: smtp.inbox.count() == 1, what="the job's mail")
    assert "  39999\n  40000\n  the end\n" in smtp.inbox.mails[0].body


def test_error_notification_mails_failures_only(
    make_cluster: Cluster, smtp: SmtpServer, tmp_path: Path
) -> None:
    cluster = make_cluster(workers=1, scheduler_args=smtp.args())
    write(tmp_path / "ok.sh", "#!/bin/sh\necho fine\n", executable=True)
    write(tmp_path / "bad.sh", "#!/bin/sh\necho broken >&2\nexit 3\n", executable=True)
    common = "notify_user = me@example.org\nnotification = Error\nqueue\n"
    write(tmp_path / "ok.sub", "executable = ok.sh\n" + common)
    write(tmp_path / "bad.sub", "executable = bad.sh\n" + common)
    assert cluster.run("dsub", "--wait", "ok.sub", cwd=tmp_path).returncode == 0
    assert cluster.run("dsub", "--wait", "bad.sub", cwd=tmp_path).returncode == 1
    # Mails leave in order: once the failure's mail is in, the success would be too.
    wait_until(lambda: smtp.inbox.count() >= 1, what="the failure's mail")
    (mail,) = smtp.inbox.mails
    assert mail.message["Subject"] == "[dfarm] job 2.0 failed: bad.sh (exit code 3)"
    assert re.search(r"Exit code:\s+3", mail.body) and "broken" in mail.body
    assert mail_state(cluster, "1.0") == ""


def test_cluster_of_twenty_sends_one_digest(
    make_cluster: Cluster, smtp: SmtpServer, tmp_path: Path
) -> None:
    cluster = make_cluster(workers=2, slots=2, scheduler_args=smtp.args())
    write(tmp_path / "job.sh", '#!/bin/sh\n[ "$1" = 7 ] && exit 2\necho $1\n', executable=True)
    write(tmp_path / "job.sub", "executable = job.sh\narguments = $(Process)\n"
          "notify_user = me@example.org\nnotification = Complete\nqueue 20\n")  # fmt: skip
    assert cluster.run("dsub", "--wait", "job.sub", cwd=tmp_path).returncode == 1
    wait_until(lambda: smtp.inbox.count() >= 1, what="the digest")
    (mail,) = smtp.inbox.mails
    assert mail.message["Subject"] == "[dfarm] cluster 1 done: 20 jobs, 19 completed, 1 failed"
    body = mail.body
    assert "Total run time:" in body and "Mean run time:" in body and "Slowest jobs:" in body
    assert "Failed jobs:\n  1.7" in body and "exit code 2" in body
    assert "dfetch 1" in body
    wait_until(lambda: {j["mail"] for j in dq_all(cluster)} == {"sent"}, what="all 'sent'")


def test_notification_per_job_sends_one_mail_per_job(
    make_cluster: Cluster, smtp: SmtpServer, tmp_path: Path
) -> None:
    cluster = make_cluster(workers=1, slots=3, scheduler_args=smtp.args())
    write(tmp_path / "job.sh", "#!/bin/sh\necho $1\n", executable=True)
    write(tmp_path / "job.sub", "executable = job.sh\narguments = $(Process)\n"
          "notify_user = me@example.org\nnotification = Complete\nnotification_per_job = true\n"
          "queue 3\n")  # fmt: skip
    assert cluster.run("dsub", "--wait", "job.sub", cwd=tmp_path).returncode == 0
    wait_until(lambda: smtp.inbox.count() == 3, what="three mails")
    subjects = sorted(m.message["Subject"] for m in smtp.inbox.mails)
    assert subjects == [f"[dfarm] job 1.{i} completed: job.sh (exit code 0)" for i in range(3)]


def test_always_mails_a_hold(make_cluster: Cluster, smtp: SmtpServer, tmp_path: Path) -> None:
    cluster = make_cluster(workers=1, scheduler_args=smtp.args())
    write(tmp_path / "job.sh", "#!/bin/sh\necho no output file\n", executable=True)
    write(tmp_path / "job.sub", "executable = job.sh\nnotify_user = me@example.org\n"
          "transfer_output_files = out.txt\nnotification = Always\nqueue\n")  # fmt: skip
    cluster.run("dsub", "--wait", "job.sub", cwd=tmp_path)
    wait_until(lambda: smtp.inbox.count() >= 1, what="the hold's mail")
    (mail,) = smtp.inbox.mails
    assert mail.message["Subject"].startswith("[dfarm] job 1.0 held: job.sh (held: ")
    assert "Hold reason:" in mail.body


def test_always_mails_each_retry_and_the_end(
    make_cluster: Cluster, smtp: SmtpServer, tmp_path: Path
) -> None:
    cluster = make_cluster(workers=1, scheduler_args=(*smtp.args(), "--worker-timeout", "2"))
    gate = tmp_path / "go"
    write(tmp_path / "job.sh", f"#!/bin/sh\nwhile [ ! -e {gate} ]; do sleep 0.05; done\n", True)
    write(tmp_path / "job.sub", "executable = job.sh\nnotify_user = me@example.org\n"
          "notification = Always\nqueue\n")  # fmt: skip
    assert cluster.run("dsub", "job.sub", cwd=tmp_path).returncode == 0
    wait_until(lambda: any(j["state"] == "running" for j in dq_all(cluster)), what="running")
    cluster.expected_exits.add("w1")
    cluster.processes["w1"].send_signal(signal.SIGKILL)
    cluster.processes["w1"].wait()
    wait_until(lambda: smtp.inbox.count() >= 1, what="the retry's mail")
    assert smtp.inbox.mails[0].message["Subject"] == "[dfarm] job 1.0 requeued: job.sh"
    assert re.search(r"Requeued because:\s+worker w1 was lost", smtp.inbox.mails[0].body)
    cluster.add_worker("w2")
    gate.touch()
    wait_until(lambda: smtp.inbox.count() >= 2, what="the completion's mail")
    assert smtp.inbox.mails[1].message["Subject"].startswith("[dfarm] job 1.0 completed")
    assert re.search(r"Starts:\s+2", smtp.inbox.mails[1].body)


def test_refused_mail_is_delivered_after_a_retry(
    make_cluster: Cluster, smtp: SmtpServer, tmp_path: Path
) -> None:
    smtp.inbox.refuse = 2
    cluster = make_cluster(workers=1, scheduler_args=smtp.args())
    write(tmp_path / "run.sh", "#!/bin/sh\necho hi\n", executable=True)
    write(tmp_path / "job.sub", "executable = run.sh\nemail = me@example.org\n")
    assert cluster.run("dsub", "--wait", "job.sub", cwd=tmp_path).returncode == 0
    wait_until(lambda: smtp.inbox.count() == 1, what="the mail, after two refusals")
    assert smtp.inbox.refused == 2
    wait_until(lambda: mail_state(cluster, "1.0") == "sent", what="mail state 'sent'")
    log = cluster.log("scheduler")
    assert "not delivered (attempt 1): 451 4.3.0 mailbox busy" in log
    assert "mail about job 1.0 to me@example.org sent" in log


def test_jobs_complete_with_the_mail_server_down(make_cluster: Cluster, tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    args = ("--smtp-host", "127.0.0.1", "--smtp-port", str(port), "--mail-retry-delay", "0.1",
            "--mail-retry-for", "0.5")  # fmt: skip
    cluster = make_cluster(workers=1, scheduler_args=args)
    write(tmp_path / "run.sh", "#!/bin/sh\necho hi\n", executable=True)
    write(tmp_path / "job.sub", "executable = run.sh\nemail = me@example.org\nqueue 1\n")
    result = cluster.run("dsub", "--wait", "--per-job", "job.sub", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "1.0" / "stdout").read_text() == "hi\n"
    wait_until(lambda: mail_state(cluster, "1.0").startswith("failed: "), what="mail failed")
    assert "Connection refused" in mail_state(cluster, "1.0")
    assert "mail about job 1.0 to me@example.org given up after" in cluster.log("scheduler")
    history = cluster.run("dhistory", "-l", "1.0")
    assert history.returncode == 0, history.stderr
    assert re.search(r"^mail = failed: .*Connection refused", history.stdout, re.M), history.stdout
    # Another user sees the job in the queue, but not its mail (the error may name the address).
    added = cluster.run("dfarm", "user", "--home", cluster.config.home, "add", "bob")
    bob = cluster.env(DFARM_TOKEN=added.stdout.strip().splitlines()[-1])
    seen = cluster.run("dq", "--all", "--allusers", "--json", env=bob)
    assert [(j["id"], j["mail"]) for j in json.loads(seen.stdout)] == [("1.0", "")]


def test_a_hung_mail_server_does_not_hold_up_jobs(make_cluster: Cluster, tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts connections and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        cluster = make_cluster(workers=1, scheduler_args=("--smtp-host", "127.0.0.1",
                                                          "--smtp-port", str(port)))  # fmt: skip
        write(tmp_path / "run.sh", "#!/bin/sh\necho $1\n", executable=True)
        write(tmp_path / "job.sub", "executable = run.sh\narguments = $(Process)\n"
              "email = me@example.org\nnotification_per_job = true\nqueue 3\n")  # fmt: skip
        result = cluster.run("dsub", "--wait", "job.sub", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        # Every job finished while the first SMTP attempt still waits for a greeting.
        assert [j["mail"] for j in dq_all(cluster)] == ["pending"] * 3


def test_pending_mail_is_sent_after_a_scheduler_restart(
    make_cluster: Cluster, tmp_path: Path
) -> None:
    smtp = SmtpServer()
    args = smtp.args()[:-2] + ("--mail-retry-delay", "0.3")
    cluster = make_cluster(workers=1, scheduler_args=args)
    write(tmp_path / "run.sh", "#!/bin/sh\necho hi\n", executable=True)
    write(tmp_path / "job.sub", "executable = run.sh\nemail = me@example.org\n")
    assert cluster.run("dsub", "--wait", "job.sub", cwd=tmp_path).returncode == 0
    wait_until(lambda: mail_state(cluster, "1.0").startswith("pending: "), what="a failed try")
    cluster.processes["scheduler"].send_signal(signal.SIGKILL)
    cluster.processes["scheduler"].wait()
    smtp.start()
    try:
        cluster.start_scheduler(*args)
        wait_until(lambda: smtp.inbox.count() == 1, what="the mail after the restart")
        assert "1 mail(s) still to deliver" in cluster.log("scheduler")
        assert smtp.inbox.mails[0].message["X-Dfarm-Job"] == "1.0"
    finally:
        smtp.stop()


def test_no_smtp_server_gives_a_warning_at_submit(cluster: TestCluster, tmp_path: Path) -> None:
    write(tmp_path / "run.sh", "#!/bin/sh\necho hi\n", executable=True)
    write(tmp_path / "job.sub", "executable = run.sh\nemail = me@example.org\n")
    result = cluster.run("dsub", "job.sub", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "warning: this scheduler has no SMTP server configured" in result.stderr


def test_invalid_address_is_refused_at_submit(cluster: TestCluster, tmp_path: Path) -> None:
    write(tmp_path / "run.sh", "#!/bin/sh\necho hi\n", executable=True)
    write(tmp_path / "job.sub", "executable = run.sh\nemail = not-an-address\n")
    result = cluster.run("dsub", "job.sub", cwd=tmp_path)
    assert result.returncode != 0
    assert "job.sub" in result.stderr and "invalid e-mail address 'not-an-address'" in result.stderr
    assert "Traceback" not in result.stderr


def test_smtp_login_with_a_password_file_that_is_never_logged(
    make_cluster: Cluster, tmp_path: Path
) -> None:
    smtp = SmtpServer(login=("farm", "pw-Xq7-secret")).start()
    try:
        secret = write(tmp_path / "smtp.pw", "pw-Xq7-secret\n")
        secret.chmod(0o600)
        args = (*smtp.args(), "--smtp-user", "farm", "--smtp-password-file", str(secret),
                "--log-level", "DEBUG")  # fmt: skip
        cluster = make_cluster(workers=1, scheduler_args=args)
        write(tmp_path / "run.sh", "#!/bin/sh\necho hi\n", executable=True)
        write(tmp_path / "job.sub", "executable = run.sh\nemail = me@example.org\n")
        assert cluster.run("dsub", "--wait", "job.sub", cwd=tmp_path).returncode == 0
        wait_until(lambda: smtp.inbox.count() == 1, what="the mail")
        assert smtp.logins == ["farm"]
        assert "pw-Xq7-secret" not in cluster.log("scheduler")
    finally:
        smtp.stop()


def test_a_password_file_others_can_read_is_refused(tmp_path: Path) -> None:
    secret = write(tmp_path / "smtp.pw", "secret\n")
    secret.chmod(0o644)
    result = subprocess.run(
        [sys.executable, "-m", "scheduler", "--home", str(tmp_path / "home"), "--smtp-host",
         "127.0.0.1", "--smtp-user", "farm", "--smtp-password-file", str(secret)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert f"the SMTP password file {secret} is readable by others" in result.stderr
    assert "secret\n" not in result.stderr


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_mail_over_tls(make_cluster: Cluster, tmp_path: Path, security: str) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = self_signed(tmp_path)
    smtp = SmtpServer(tls=security, cert=(cert, key)).start()
    try:
        args = (*smtp.args(), "--smtp-security", security, "--smtp-ca-file", str(cert))
        cluster = make_cluster(workers=1, scheduler_args=args)
        write(tmp_path / "run.sh", "#!/bin/sh\necho hi\n", executable=True)
        write(tmp_path / "job.sub", "executable = run.sh\nemail = me@example.org\n")
        assert cluster.run("dsub", "--wait", "job.sub", cwd=tmp_path).returncode == 0
        wait_until(lambda: smtp.inbox.count() == 1, what=f"the mail over {security}")
    finally:
        smtp.stop()


def test_notification_without_an_address_mails_the_owners_registered_one(
    make_cluster: Cluster, smtp: SmtpServer, tmp_path: Path
) -> None:
    cluster = make_cluster(workers=1, scheduler_args=smtp.args())
    write(tmp_path / "run.sh", "#!/bin/sh\necho hi\n", executable=True)
    write(tmp_path / "job.sub", "executable = run.sh\nnotification = Complete\nqueue\n")
    home = cluster.config.home
    added = cluster.run("dfarm", "user", "--home", home, "add", "carol", "--email", "c@ex.org")
    carol = cluster.env(DFARM_TOKEN=added.stdout.strip().splitlines()[-1])
    result = cluster.run("dsub", "--wait", "job.sub", cwd=tmp_path, env=carol)
    assert result.returncode == 0 and "warning" not in result.stderr, result.stderr
    wait_until(lambda: smtp.inbox.count() == 1, what="the mail to carol")
    assert smtp.inbox.mails[0].recipients == ["c@ex.org"]
    added = cluster.run("dfarm", "user", "--home", home, "add", "dave")
    dave = cluster.env(DFARM_TOKEN=added.stdout.strip().splitlines()[-1])
    result = cluster.run("dsub", "job.sub", cwd=tmp_path, env=dave)
    assert result.returncode == 0, result.stderr
    assert "notification asks for mail but there is no address" in result.stderr


def _digest_link(cluster: TestCluster, tmp_path: Path, smtp: SmtpServer) -> str | None:
    """Run a cluster of two jobs that mails a digest; the web link the digest gives."""
    write(tmp_path / "run.sh", "#!/bin/sh\necho hi\n", executable=True)
    write(tmp_path / "job.sub", "executable = run.sh\nemail = me@example.org\nqueue 2\n")
    assert cluster.run("dsub", "--wait", "job.sub", cwd=tmp_path).returncode == 0
    wait_until(lambda: smtp.inbox.count() == 1, what="the cluster's digest")
    link = re.search(r"On the web:\s+(\S+)\n", smtp.inbox.mails[0].body)
    return link.group(1) if link else None


def test_mail_links_to_the_dashboard_at_its_fixed_port(
    make_cluster: Cluster, smtp: SmtpServer, tmp_path: Path
) -> None:
    port = free_port()
    cluster = make_cluster(workers=1, scheduler_args=(*smtp.args(), "--web-port", str(port)))
    link = _digest_link(cluster, tmp_path, smtp)
    assert link == f"http://127.0.0.1:{port}/jobs/1", smtp.inbox.mails[0].body
    log = cluster.log("scheduler")
    assert f"web dashboard on http://127.0.0.1:{port}/" in log
    assert f"mail: through 127.0.0.1:{smtp.port} (none) from farm@example.org" in log


def test_mail_has_no_link_to_an_ephemeral_dashboard_port(
    make_cluster: Cluster, smtp: SmtpServer, tmp_path: Path
) -> None:
    cluster = make_cluster(workers=1, scheduler_args=(*smtp.args(), "--web-port", "0"))
    assert _digest_link(cluster, tmp_path, smtp) is None, smtp.inbox.mails[0].body
    assert "dfetch 1" in smtp.inbox.mails[0].body
    assert "no link to the dashboard, its port is ephemeral" in cluster.log("scheduler")


def test_mail_links_to_the_web_url_setting(
    make_cluster: Cluster, smtp: SmtpServer, tmp_path: Path
) -> None:
    url = "https://farm.example.org/dfarm/"
    cluster = make_cluster(
        workers=1, scheduler_args=(*smtp.args(), "--web-port", "0", "--web-url", url)
    )
    assert _digest_link(cluster, tmp_path, smtp) == url + "jobs/1"
    assert f"mail: links to {url}jobs/{{job}}" in cluster.log("scheduler")


def test_the_scheduler_logs_that_mail_is_off(cluster: TestCluster) -> None:
    assert "mail: not configured (no --smtp-host)" in cluster.log("scheduler")


def test_dfarm_up_takes_mail_settings_from_the_environment(
    smtp: SmtpServer, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DFARM_")}
    env.update(DFARM_HOME=str(home), DFARM_SMTP_HOST="127.0.0.1",
               DFARM_SMTP_PORT=str(smtp.port), DFARM_MAIL_FROM="up@example.org")  # fmt: skip
    up = subprocess.Popen(
        [sys.executable, "-m", "control_node.cli.dfarm", "up", "--workers", "1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        assert up.stdout is not None and "dfarm is up" in up.stdout.readline()
        write(tmp_path / "run.sh", "#!/bin/sh\necho hi\n", executable=True)
        write(tmp_path / "job.sub", "executable = run.sh\nemail = me@example.org\nqueue\n")
        dsub = subprocess.run(
            [sys.executable, "-m", "control_node.cli.dsub", "--wait", "job.sub"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert dsub.returncode == 0 and "warning" not in dsub.stderr, dsub.stderr
        wait_until(lambda: smtp.inbox.count() == 1, what="the job's mail")
        assert smtp.inbox.mails[0].sender == "up@example.org"
    finally:
        up.send_signal(signal.SIGTERM)
        out, _ = up.communicate(timeout=30)
    assert up.returncode == 0 and "Traceback" not in out, out
