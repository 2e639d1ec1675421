"""A job's record, as users see it: built as a :class:`JobInfo`, or straight in its
wire form for the updates sent to those watching, it is the same."""

from __future__ import annotations

import dataclasses

import pytest

from scheduler import protocol as p
from scheduler.job_records import Job, JobResult
from scheduler.protocol import JobSpec, JobState

SPEC = JobSpec(executable="run.sh", arguments=["a", "b c"], params={"x": "1"})


def job(**changes: object) -> Job:
    base = Job(cluster=12, proc=3, owner="alice", state=JobState.IDLE, spec=SPEC, submit_time=5.0)
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize(
    "subject",
    [
        job(),
        job(state=JobState.HELD, worker="w1", hold_reason="no room", num_starts=1),
        job(state=JobState.RUNNING, worker="w1", start_time=6.0, num_starts=1),
        job(
            state=JobState.COMPLETED, worker="w2", start_time=6.0, end_time=9.5, exit_code=0,
            wall_time=3.5, cpu_time=1.25, output_files=["out.txt"],
            result=JobResult(value={"value": 2.5}, error=None),
        ),
        job(state=JobState.COMPLETED, exit_code=1, result=JobResult(value=None, error="exit 1")),
    ],
)  # fmt: skip
def test_wire_record_is_the_record_on_the_wire(subject: Job) -> None:
    update = p.encode(p.JobUpdate(job=subject.info()))
    built = p.JobInfo(**p.to_wire(subject.info()))  # by __init__: no wire form kept
    assert built == subject.info()
    assert p.encode(p.JobUpdate(job=built)) == update
    assert p.encode_wire({"job": subject.wire_info(), "type": p.JobUpdate.type}) == update
    decoded = p.decode(update[p.HEADER.size :])
    assert isinstance(decoded, p.JobUpdate) and decoded.job == subject.info()


def test_record_has_its_own_lists_and_an_idle_job_no_worker() -> None:
    subject = job(worker="w1", output_files=["o"])
    info = subject.info()
    assert info.worker is None and info.id == "12.3"
    wire = p.to_wire(info)
    wire["extra"] = 1  # the web adds fields to a record's wire form: a copy each time
    assert "extra" not in p.to_wire(info)
    info.arguments.append("z")
    info.output_files.append("z")
    assert SPEC.arguments == ["a", "b c"] and subject.output_files == ["o"]
