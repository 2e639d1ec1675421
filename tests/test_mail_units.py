"""The mail rules, the composed messages and the settings, without a cluster."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import pytest

from scheduler.job_records import Job
from scheduler.jobs import JobTable
from scheduler.mail import compose, rules
from scheduler.mail.outbox import Mailer
from scheduler.mail.settings import MailConfig, MailConfigError, check_address, make_config
from scheduler.protocol import JobSpec, JobState
from scheduler.store import Store


def job(state: JobState = JobState.COMPLETED, proc: int = 0, **changes: object) -> Job:
    spec = JobSpec(executable="run.sh", notify_user="me@example.org", notification="Complete")
    fields: dict[str, object] = dict(
        cluster=5, proc=proc, owner="alice", state=state, spec=spec, submit_time=1000.0,
        start_time=1010.0, end_time=1070.0, worker="w1", exit_code=0, wall_time=60.0,
        cpu_time=12.5, num_starts=1,
    )  # fmt: skip
    fields.update(changes)
    return Job(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("notification", "mailed"),
    [
        ("Complete", {"completed", "failed"}),
        ("Error", {"failed", "held"}),
        ("Always", {"completed", "failed", "held", "requeued"}),
        ("Never", set()),
    ],
)
def test_notification_rules(notification: str, mailed: set[str]) -> None:
    reasons = {"completed", "failed", "held", "requeued"}
    assert {why for why in reasons if rules.mails_for(notification, why)} == mailed


def test_reasons_of_state_changes() -> None:
    assert rules.reason(job(), JobState.RUNNING) == "completed"
    assert rules.reason(job(exit_code=1), JobState.RUNNING) == "failed"
    assert rules.reason(job(exit_code=None, exit_signal=9), JobState.RUNNING) == "failed"
    assert rules.reason(job(JobState.HELD, hold_reason="x"), JobState.RUNNING) == "held"
    not_started = job(JobState.HELD, hold_reason="cannot execute 'a.py': Exec format error")
    assert rules.reason(not_started, JobState.RUNNING) == "failed"  # mailed as a failure
    assert rules.reason(job(JobState.IDLE), JobState.RUNNING) == "requeued"
    assert rules.reason(job(JobState.IDLE), JobState.HELD) is None  # a release
    assert rules.reason(job(JobState.RUNNING), JobState.IDLE) is None
    assert rules.reason(job(JobState.REMOVED), JobState.IDLE) is None


def test_error_digest_only_when_something_failed() -> None:
    assert not rules.digest_wanted("Error", [job(), job(proc=1)])
    assert rules.digest_wanted("Error", [job(), job(proc=1, exit_code=4)])
    assert rules.digest_wanted("Complete", [job()])
    assert not rules.digest_wanted("Complete", [job(JobState.REMOVED)])


def parsed(message: email.message.EmailMessage) -> email.message.EmailMessage:
    data = message.as_bytes()
    result = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(result, email.message.EmailMessage)
    return result


def test_no_header_injection_through_the_executable_name() -> None:
    evil = JobSpec(executable="run.sh\r\nBcc: victim@example.org\nX-Evil: 1", notify_user="a@b.org")
    message = compose.job_message(
        job(spec=evil), "completed", {}, sender="farm@example.org", recipient="me@example.org",
        job_url=None,
    )  # fmt: skip
    got = parsed(message)
    assert got["Bcc"] is None and got["X-Evil"] is None
    assert got["Subject"].startswith("[dfarm] job 5.0 completed: run.sh Bcc: victim@example.org")
    assert got["To"] == "me@example.org"


def test_an_address_with_a_line_break_cannot_become_a_recipient() -> None:
    with pytest.raises(ValueError):
        compose.job_message(
            job(), "completed", {}, sender="farm@example.org",
            recipient="me@example.org\r\nBcc: victim@example.org", job_url=None,
        )  # fmt: skip


@pytest.mark.parametrize(
    "address",
    ["not-an-address", "a@", "@b.org", "a b@c.org", '"a b"@c.org', "a@b.org\nBcc: c@d.org",
     "Joe <a@b.org>", "a@b.org,c@d.org", "x" * 250 + "@b.org"],
)  # fmt: skip
def test_bad_addresses(address: str) -> None:
    with pytest.raises(ValueError, match="invalid e-mail address"):
        check_address(address)


def test_good_addresses() -> None:
    for address in ("a.b+c@mail.example.org", "u@h", "x_y@[192.0.2.1]"):
        assert check_address(address) == address


def test_job_mail_has_the_link_and_the_tails() -> None:
    tails = {"stdout": compose.tail_text(b"".join(b"line %d\n" % i for i in range(100)))}
    message = compose.job_message(
        job(exit_code=None, exit_signal=9), "failed", tails, sender="farm@example.org",
        recipient="me@example.org", job_url="https://farm.example.org/jobs/{job}",
    )  # fmt: skip
    body = parsed(message).get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Signal:           9" in body and "Exit code" not in body
    assert "  line 99" in body and "  line 80" in body and "line 79\n" not in body
    assert "stderr: (empty)" in body
    assert "On the web:  https://farm.example.org/jobs/5.0" in body
    assert "CPU time:         0+00:00:12" in body


def test_digest_lists_slowest_and_failed_jobs() -> None:
    jobs = [job(proc=i, wall_time=10.0 * (i + 1)) for i in range(30)]
    jobs += [job(proc=30 + i, exit_code=1) for i in range(25)]
    jobs.append(job(JobState.HELD, proc=99, hold_reason="input missing", exit_code=None))
    message = compose.digest_message(
        5, jobs, sender="farm@example.org", recipient="me@example.org", job_url=None
    )
    got = parsed(message)
    assert got["Subject"] == "[dfarm] cluster 5 done: 56 jobs, 30 completed, 25 failed, 1 held"
    body = got.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Slowest jobs:\r\n  5.29" in body or "Slowest jobs:\n  5.29" in body
    assert "... and 6 more: dq --all 5" in body
    assert "dfetch 5" in body


def test_settings_hide_the_password_and_check_the_sender(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("hunter2\n")
    secret.chmod(0o600)
    config = make_config(host="mail", user="u", password_file=secret, sender="f@example.org")
    assert config.password == "hunter2" and "hunter2" not in repr(config)
    assert config.smtp_port == 25
    with pytest.raises(MailConfigError, match="From address"):
        make_config(host="mail", sender="nobody")
    with pytest.raises(MailConfigError, match="needs a password"):
        make_config(host="mail", user="u", password_env="DFARM_TEST_UNSET_PASSWORD")


def test_retry_delay_doubles_up_to_the_maximum() -> None:
    config = MailConfig(host="h", retry_initial=1.0, retry_max=5.0)
    assert [config.delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_submit_file_key_notification_per_job(tmp_path: Path) -> None:
    from control_node.submit_file import SubmitFileError, parse_submit_text

    (tmp_path / "run.sh").write_text("#!/bin/sh\n")
    text = "executable = run.sh\nnotify_user = a@b.org\nnotification_per_job = {}\nqueue 2\n"

    def parse(value: str) -> list[bool]:
        description = parse_submit_text(
            text.format(value), filename="j.sub", cluster=1, cwd=str(tmp_path)
        )
        return [proc.notification_per_job for proc in description.procs]

    assert parse("true") == [True, True] and parse("False") == [False, False]
    with pytest.raises(SubmitFileError, match="notification_per_job must be true or false"):
        parse("sometimes")


def test_a_cluster_sent_in_parts_gets_one_digest_after_its_last_part(tmp_path: Path) -> None:
    store = Store(tmp_path / "dfarm.db")
    mailer = Mailer(MailConfig(host="127.0.0.1", sender="dfarm@example.org"), store,
                    lambda cluster, proc: tmp_path / f"{cluster}.{proc}")  # fmt: skip
    jobs = JobTable(store, on_change=mailer.changed)
    cluster = store.clusters.reserve_cluster("alice", 1000.0)
    spec = JobSpec(executable="run.sh", notify_user="me@example.org", notification="Complete")

    def run_part(first: int, count: int, more: bool) -> None:
        with store.transaction():
            part = jobs.submit(cluster, "alice", "job.sub", [spec] * count, first)
            mailer.submitted(part, more=more)
            for job in part:
                jobs.start(job, "w1", 1001.0)
                jobs.transition(job, JobState.COMPLETED, "terminated", exit_code=0, wall_time=1.0)
        store.commit()

    def mails() -> list[str]:
        return [row["reason"] for row in store.query("SELECT reason FROM mail")]

    run_part(0, 3, more=True)
    assert mails() == []  # the first part is over, but more of the cluster is coming
    run_part(3, 2, more=False)
    assert mails() == ["digest"]
    (row,) = store.query("SELECT message FROM mail")
    assert "cluster 1 done: 5 jobs, 5 completed" in row["message"].decode()
    store.close()
