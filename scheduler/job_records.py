"""A job as the scheduler holds it, and how it maps to a row of the ``jobs`` table."""

from __future__ import annotations

import functools
import json
import operator
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from scheduler.protocol import (
    CheckpointFile,
    JobInfo,
    JobSpec,
    JobState,
    format_job_id,
    from_wire,
    json_text,
    record,
)


@dataclass(frozen=True)
class JobResult:
    """What a finished job produced: its numbers, or why there are none."""

    value: dict[str, float] | None
    error: str | None


@dataclass
class Job:
    """A job as the scheduler holds it; a row of the ``jobs`` table."""

    cluster: int
    proc: int
    owner: str
    state: JobState
    spec: JobSpec
    submit_time: float
    start_time: float | None = None
    end_time: float | None = None
    worker: str | None = None
    attempt: int = 0
    num_starts: int = 0
    exit_code: int | None = None
    exit_signal: int | None = None
    wall_time: float | None = None
    cpu_time: float | None = None
    hold_reason: str | None = None
    #: HTCondor's HoldReasonCode and HoldReasonSubCode, where the hold set them (a
    #: policy's); None: derived from the reason.
    hold_code: int | None = None
    hold_subcode: int | None = None
    output_files: list[str] = field(default_factory=list)
    #: Set when the job completes (kept in ``job_results``, not in this row).
    result: JobResult | None = None
    #: ``MemoryUsage`` (MB): its attempt's peak, as its worker reports it (not in the row).
    memory_usage: int | None = None
    #: Its latest checkpoint and what led to it (``job_checkpoints``, not in the row).
    checkpoint: CheckpointFile | None = None
    checkpoints: int = 0
    checkpoint_time: float | None = None
    wall_lost: float = 0.0
    resumes: int = 0

    @functools.cached_property
    def id(self) -> str:
        """``CLUSTER.PROC``, made once: neither ever changes."""
        return format_job_id(self.cluster, self.proc)

    def info(self, result: JobResult | None = None, **extra: Any) -> JobInfo:
        """The record users see, with its result (``result``, else the one it holds)
        and ``extra`` fields the job does not hold (``total_run_time``)."""
        fields = self.wire_info(result)
        fields.update(extra)
        fields["arguments"] = list(self.spec.arguments)
        fields["output_files"] = list(self.output_files)
        fields["params"] = dict(self.spec.params)
        fields["attributes"] = dict(self.spec.attributes)
        return record(JobInfo, fields, wire=fields)

    def wire_info(self, result: JobResult | None = None) -> dict[str, Any]:
        """:meth:`info` as it goes on the wire (``to_wire``), built straight from the
        job (its lists are the job's own, not copies)."""
        result = result or self.result
        state = self.state
        spec = self.spec
        return {
            "id": self.id,
            "cluster": self.cluster,
            "proc": self.proc,
            "owner": self.owner,
            "state": state.value,
            "submit_time": self.submit_time,
            "start_time": self.start_time,
            "end_time": self.end_time,
            # Where it ran last is not where it is (dq, dstat).
            "worker": None if state is JobState.IDLE or state is JobState.HELD else self.worker,
            "exit_code": self.exit_code,
            "exit_signal": self.exit_signal,
            "wall_time": self.wall_time,
            "cpu_time": self.cpu_time,
            "num_starts": self.num_starts,
            "hold_reason": self.hold_reason,
            "hold_code": self.hold_code,
            "hold_subcode": self.hold_subcode,
            "executable": spec.executable,
            "arguments": spec.arguments,
            "output_files": self.output_files,
            "mail": "",
            "total_run_time": None,
            "params": spec.params,
            "result": None if result is None else result.value,
            "result_error": None if result is None else result.error,
            "attributes": spec.attributes,
            "request_cpus": spec.request_cpus,
            "request_memory": spec.request_memory,
            "request_disk": spec.request_disk,
            "request_gpus": spec.request_gpus,
            "memory_usage": self.memory_usage,
            "checkpoints": self.checkpoints,
            "checkpoint_time": self.checkpoint_time,
            "checkpoint_size": None if self.checkpoint is None else self.checkpoint.size,
            "wall_lost": self.wall_lost,
            "resumes": self.resumes,
            "max_retries": spec.max_retries,
        }


#: Columns that change after submission; the others are written once.
_MUTABLE_COLUMNS = [
    "state",
    "start_time",
    "end_time",
    "worker",
    "attempt",
    "num_starts",
    "exit_code",
    "exit_signal",
    "wall_time",
    "cpu_time",
    "hold_reason",
    "hold_code",
    "hold_subcode",
    "output_files",
]
_ALL_COLUMNS = ["cluster", "proc", "owner", "spec", "submit_time", *_MUTABLE_COLUMNS]
_JOB_COLUMNS = ", ".join(_ALL_COLUMNS)
_INSERT_EVENT = "INSERT INTO job_events (cluster, proc, time, event, detail) VALUES (?,?,?,?,?)"
_UPDATE_JOB = (
    f"UPDATE jobs SET {', '.join(f'{c}=?' for c in _MUTABLE_COLUMNS)} WHERE cluster=? AND proc=?"
)


_MUTABLE_GET = operator.attrgetter(*_MUTABLE_COLUMNS)
_STATE_AT = _MUTABLE_COLUMNS.index("state")
_OUTPUTS_AT = _MUTABLE_COLUMNS.index("output_files")
_STATE_TEXT = {state: state.value for state in JobState}


def _mutable_values(job: Job) -> list[object]:
    """The changing columns of a job's row, as stored (the hot path of every change)."""
    values = list(_MUTABLE_GET(job))
    values[_STATE_AT] = _STATE_TEXT[job.state]
    outputs = job.output_files
    values[_OUTPUTS_AT] = json.dumps(outputs) if outputs else "[]"
    return values


def _column(job: Job, name: str) -> object:
    """A job attribute as stored in SQLite."""
    value = getattr(job, name)
    if name == "state":
        return value.value
    if name == "spec":
        return _spec_text(value)
    if name == "output_files":
        return json.dumps(value)
    return value


def _spec_text(spec: JobSpec) -> str:
    """A spec as stored, made once per spec object (the procs of a cluster mostly
    share one: see :func:`scheduler.protocol.shared_specs`)."""
    return json_text(spec)


def _jobs_from_rows(rows: Iterable[sqlite3.Row]) -> list[Job]:
    """Jobs from their rows; those whose specs were stored as the same text (the
    procs of most clusters) share one spec object, as they did when submitted."""
    specs: dict[str, JobSpec] = {}
    return [_job_from_row(row, specs) for row in rows]


def _job_from_row(row: sqlite3.Row, specs: dict[str, JobSpec]) -> Job:
    text = row["spec"]
    spec = specs.get(text)
    if spec is None:
        spec = specs[text] = from_wire(JobSpec, json.loads(text), "spec")
    return Job(
        cluster=row["cluster"],
        proc=row["proc"],
        owner=row["owner"],
        state=JobState(row["state"]),
        spec=spec,
        submit_time=row["submit_time"],
        start_time=row["start_time"],
        end_time=row["end_time"],
        worker=row["worker"],
        attempt=row["attempt"],
        num_starts=row["num_starts"],
        exit_code=row["exit_code"],
        exit_signal=row["exit_signal"],
        wall_time=row["wall_time"],
        cpu_time=row["cpu_time"],
        hold_reason=row["hold_reason"],
        hold_code=row["hold_code"],
        hold_subcode=row["hold_subcode"],
        output_files=json.loads(row["output_files"]),
    )
