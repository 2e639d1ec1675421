"""The one mail of a DAG's end, through a real SMTP server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import TestCluster, wait_until, write
from smtp_server import SmtpServer
from test_dag_run import counting_job


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


def test_a_dag_that_ends_sends_one_mail_with_its_failed_nodes(
    make_cluster: Callable[..., TestCluster], smtp: SmtpServer, tmp_path: Path
) -> None:
    cluster = make_cluster(workers=1, scheduler_args=smtp.args())
    counting_job(tmp_path)
    write(
        tmp_path / "mail.dag",
        'JOB A count.sub\nVARS A code="0" good_at="1"\n'
        'JOB B count.sub\nVARS B code="6" good_at="9"\nPARENT A CHILD B\n',
    )
    result = cluster.run(
        "dsub_dag", "--wait", "--notify-user", "me@example.org", "mail.dag", cwd=tmp_path
    )
    assert result.returncode == 1, result.stdout + result.stderr
    wait_until(lambda: smtp.inbox.count() == 1, what="the DAG's mail")
    (mail,) = smtp.inbox.mails
    assert mail.recipients == ["me@example.org"]
    assert mail.message["Subject"] == "[dfarm] DAG 1 failed: 2 nodes, 1 done, 1 failed"
    assert "B: job" in mail.body and "exited with 6" in mail.body
    assert "Total time:" in mail.body
    # Error: only a DAG that fails sends one.
    write(tmp_path / "ok.dag", 'JOB C count.sub\nVARS C code="0" good_at="1"\n')
    done = cluster.run(
        "dsub_dag", "--wait", "--notify-user", "me@example.org", "--notification", "Error",
        "ok.dag", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0
    # A later DAG's mail comes, and no mail of the second one came before it.
    again = cluster.run(
        "dsub_dag", "--wait", "--notify-user", "me@example.org", "mail.dag", cwd=tmp_path
    )
    assert again.returncode == 1
    wait_until(lambda: smtp.inbox.count() >= 2, what="the third DAG's mail")
    assert smtp.inbox.count() == 2
    assert smtp.inbox.mails[1].message["Subject"].startswith("[dfarm] DAG 6 failed")
