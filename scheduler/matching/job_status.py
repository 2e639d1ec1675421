"""A job's ClassAd as HTCondor names it (``JobStatus``, ``NumJobStarts``, ``HoldReasonCode``
...), built from the record users see; what ``dq -af``/``-constraint``/``-long`` and the
job policies evaluate."""

from __future__ import annotations

from scheduler.matching.classad import (
    ERROR,
    Expression,
    Value,
    unparse,
)
from scheduler.matching.classad_values import lookup
from scheduler.matching.job_ad import attribute_value
from scheduler.protocol import JobInfo

__all__ = ["JOB_STATUS", "hold_reason_code", "quote_arguments", "status_ad", "status_attributes"]

#: HTCondor's ``JobStatus`` codes.
JOB_STATUS = {"idle": 1, "running": 2, "removed": 3, "completed": 4, "held": 5}

#: HTCondor's ``HoldReasonCode`` for each way dfarm holds a job, by a prefix of the reason.
_HOLD_CODES = [
    ("held by ", 1),  # UserRequest (dhold)
    ("submitted on hold", 15),  # SubmittedOnHold (dsub with hold = true)
    ("periodic_hold", 3),  # JobPolicy
    ("on_exit_hold", 3),
]
#: Words of other reasons and the code HTCondor gives the same fault.
_HOLD_WORDS = [
    ("allowed_job_duration", 46),  # JobDurationExceeded
    ("memory limit exceeded", 34),  # JobOutOfResources
    ("input", 13),  # TransferInputError
    ("output", 12),  # TransferOutputError
    ("working directory", 14),  # IwdError
]
#: Code for a failure to start the job (FailedToCreateProcess), dfarm's other holds.
_STARTER_FAILED = 6


def hold_reason_code(reason: str) -> int:
    """HTCondor's ``HoldReasonCode`` for a job held with ``reason``."""
    for prefix, code in _HOLD_CODES:
        if reason.startswith(prefix):
            return code
    lowered = reason.lower()
    for word, code in _HOLD_WORDS:
        if word in lowered:
            return code
    return _STARTER_FAILED


def quote_arguments(arguments: list[str]) -> str:
    """``arguments`` in HTCondor's new argument syntax (single quotes around any with
    a space or a quote, a quote inside doubled)."""
    out = []
    for arg in arguments:
        if arg == "" or any(c in arg for c in " \t'\""):
            out.append("'" + arg.replace("'", "''") + "'")
        else:
            out.append(arg)
    return " ".join(out)


def _base(info: JobInfo) -> dict[str, Value]:
    """The attributes the scheduler knows, in HTCondor's names (lower case)."""
    status = JOB_STATUS[info.state]
    ad: dict[str, Value] = {
        "clusterid": info.cluster,
        "procid": info.proc,
        "globaljobid": info.id,
        "owner": info.owner,
        "user": info.owner,
        "jobstatus": status,
        "qdate": int(info.submit_time),
        "numjobstarts": info.num_starts,
        "cmd": info.executable,
        "arguments": quote_arguments(info.arguments),
        "args": " ".join(info.arguments),
        "completiondate": 0,
        "remotewallclocktime": float(
            info.total_run_time if info.total_run_time is not None else info.wall_time or 0.0
        ),
        "remoteusercpu": float(info.cpu_time or 0.0),
    }
    ad["requestcpus"] = info.request_cpus
    ad["requestgpus"] = info.request_gpus
    if info.request_memory is not None:
        ad["requestmemory"] = info.request_memory
    if info.request_disk is not None:
        ad["requestdisk"] = info.request_disk
    if info.start_time is not None:
        ad["jobstartdate"] = ad["jobcurrentstartdate"] = int(info.start_time)
    if info.state == "completed":
        ad["completiondate"] = int(info.end_time or info.submit_time)
        ad["exitbysignal"] = info.exit_signal is not None
        if info.exit_signal is not None:
            ad["exitsignal"] = info.exit_signal
    if info.exit_code is not None:
        ad["exitcode"] = info.exit_code
    if info.memory_usage is not None:
        ad["memoryusage"] = info.memory_usage
    if info.max_retries:  # as condor_submit: only where it was given
        ad["jobmaxretries"] = info.max_retries
    if info.checkpoints:  # a self-checkpointing job's (scheduler.checkpoints)
        ad["numckpts"] = info.checkpoints
        ad["lastckpttime"] = int(info.checkpoint_time or 0)
    if info.state == "running":
        entered = info.start_time
    elif info.state == "idle":
        entered = info.submit_time if info.num_starts == 0 else info.end_time
    else:
        entered = info.end_time
    ad["enteredcurrentstatus"] = int(entered if entered is not None else info.submit_time)
    if info.worker:
        ad["remotehost" if info.state == "running" else "lastremotehost"] = info.worker
    if info.state == "held" and info.hold_reason is not None:
        ad["holdreason"] = info.hold_reason
        code = info.hold_code
        ad["holdreasoncode"] = hold_reason_code(info.hold_reason) if code is None else code
        ad["holdreasonsubcode"] = info.hold_subcode or 0
    return ad


def status_ad(info: JobInfo) -> dict[str, Value]:
    """The job's ClassAd, keys in lower case: what the scheduler knows under HTCondor's
    names, and the job's own attributes (``JobSpec.attributes``) evaluated in it (the
    scheduler's attributes win over a custom one of the same name)."""
    base = _base(info)
    working: dict[str, Value | Expression] = {
        name.lower(): attribute_value(text) for name, text in info.attributes.items()
    }
    working.update(base)
    ad: dict[str, Value] = {}
    for name in working:
        value = lookup(name, working, {})
        ad[name] = ERROR if value is None else value
    return ad


#: HTCondor's spelling of the attributes :func:`status_ad` adds.
_NAMES = {
    name.lower(): name
    for name in [
        "ClusterId",
        "ProcId",
        "GlobalJobId",
        "Owner",
        "User",
        "JobStatus",
        "QDate",
        "NumJobStarts",
        "Cmd",
        "Arguments",
        "Args",
        "CompletionDate",
        "RemoteWallClockTime",
        "RemoteUserCpu",
        "JobStartDate",
        "JobCurrentStartDate",
        "ExitBySignal",
        "ExitSignal",
        "ExitCode",
        "EnteredCurrentStatus",
        "RemoteHost",
        "LastRemoteHost",
        "HoldReason",
        "HoldReasonCode",
        "HoldReasonSubCode",
        "RequestCpus",
        "RequestMemory",
        "RequestDisk",
        "RequestGpus",
        "MemoryUsage",
        "NumCkpts",
        "LastCkptTime",
        "JobMaxRetries",
    ]
}


def status_attributes(info: JobInfo) -> list[tuple[str, str]]:
    """Every attribute of the job as ``(Name, ClassAd text)``, sorted by name: the
    scheduler's values written as ClassAd writes them, the job's own attributes as the
    expressions it was given (as ``condor_q -long`` shows them)."""
    own = {name.lower(): (name, text) for name, text in info.attributes.items()}
    rows = {key: (_NAMES[key], unparse(value)) for key, value in _base(info).items()}
    for key, row in own.items():
        rows.setdefault(key, row)
    return sorted(rows.values(), key=lambda row: row[0].lower())
