"""``requirements`` and ``rank``: ClassAd expressions of a job over a worker's attributes.

The language is HTCondor's ClassAd language (:mod:`.classad`). A requirements
expression is evaluated with the job's attributes as ``MY`` and the worker's as
``TARGET`` (a bare name is looked up in the job, then in the worker, as HTCondor
does), and a job matches only where it evaluates to ``true``: UNDEFINED and ERROR
do not match.

A bare name that is neither a standard machine attribute (:data:`MACHINE_ATTRIBUTES`)
nor a job attribute (:data:`JOB_ATTRIBUTES`, or one the job defines) is refused at
submit time, naming its column: a typo would otherwise leave the job idle for ever.
An attribute a worker's administrator adds (``[attributes]`` in ``worker.toml``)
is named with its scope, ``TARGET.HasCVMFS``; an attribute no worker has is
UNDEFINED there, as in HTCondor.

Attributes of a worker (see :func:`worker_ad`): ``Name``, ``Machine``, ``Cpus``,
``Memory`` (MB), ``Disk`` (KB), ``GPUs`` (what the worker offers; ``Gpus`` is the same
name), ``TotalCpus``, ``TotalMemory``, ``TotalDisk``, ``TotalGPUs``, ``OpSys``
(``LINUX``), ``OpSysAndVer`` (``Ubuntu22``, ``AlmaLinux9``), ``OpSysName``,
``OpSysMajorVer``, ``OpSysVer``, ``OpSysLongName``, ``Arch`` (``X86_64``, ``aarch64``),
``LoadAvg`` (one minute), ``GpuMemory`` (MB of its smallest GPU, 0 without),
``CUDACapability``, ``CUDAGlobalMemoryMb``, ``AvailableGPUs`` (one ad per GPU) and
``CUDAMaxSupportedVersion`` (where it has GPUs), ``HasJobDeferral``, the container
runtimes (``HasContainer``, ``HasDocker``, ``HasSingularity``, ``HasApptainer``,
``HasPodman``, ``HasBubblewrap``, ``HasDockerURL``, ``HasSIF``, ``HasSandboxImage``,
``ContainerRuntimes`` and each one's version), ``WorkerId``, and what its administrator adds.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from scheduler.matching.classad import (
    ERROR,
    UNDEFINED,
    Ad,
    ClassAdError,
    Expression,
    Value,
    compile_expression,
)

__all__ = [
    "JOB_ATTRIBUTES",
    "MACHINE_ATTRIBUTES",
    "REQUIREMENT_ATTRIBUTES",
    "Value",
    "Requirement",
    "RequirementsError",
    "compile_requirements",
    "normal_arch",
    "rank_value",
    "worker_ad",
]

#: Standard machine attributes (lower case): those a worker advertises, and those of
#: HTCondor's machine ads a worker here lacks (UNDEFINED, as on a pool without them).
MACHINE_ATTRIBUTES = frozenset({
    "name", "machine", "cpus", "memory", "disk", "gpus", "totalcpus", "totalmemory",
    "totaldisk", "totalgpus", "opsys", "opsysandver", "opsysname", "opsysmajorver",
    "opsysver", "opsyslongname", "opsysshortname", "opsyslegacy", "arch", "loadavg",
    "gpumemory", "workerid", "cudacapability", "cudaglobalmemorymb", "cudadevicename",
    "hasdocker", "hassingularity", "hasapptainer", "detectedcpus", "detectedmemory",
    "detectedgpus", "totalslots", "slotid", "slottype", "state", "activity", "start",
    "filesystemdomain", "uiddomain", "hasfiletransfer", "condorloadavg", "totalloadavg",
    "keyboardidle", "consoleidle", "kflops", "mips", "virtualmemory", "condorversion",
    "condorplatform", "checkpointplatform", "hasvm", "ismachine", "mytype", "targettype",
    "dockerversion", "singularityversion", "has_singularity", "has_docker",
    "gpus_capability", "gpus_globalmemorymb", "gpus_devicename", "cudadriverversion",
    "cudaruntimeversion", "availablegpus", "cudamaxsupportedversion", "hasjobdeferral",
    "hascontainer", "hasdockerurl", "hassif", "hassandboximage", "haspodman",
    "hasbubblewrap", "containerruntimes", "podmanversion", "apptainerversion",
    "bubblewrapversion",
})  # fmt: skip
#: Job attributes (lower case) a job's expressions may name without ``MY.``.
JOB_ATTRIBUTES = frozenset({
    "requestcpus", "requestmemory", "requestdisk", "requestgpus", "cmd", "arguments",
    "args", "iwd", "jobprio", "maxretries", "clusterid", "procid", "owner", "user",
    "jobstatus", "numjobstarts", "exitcode", "exitbysignal", "qdate", "jobuniverse",
    "jobbatchname", "enteredcurrentstatus", "remotewallclocktime", "memoryusage",
    "diskusage", "imagesize", "holdreasoncode", "holdreasonsubcode", "currenttime",
    "out", "err", "in", "userlog",
})  # fmt: skip
#: Every name a requirements expression may use bare.
REQUIREMENT_ATTRIBUTES = MACHINE_ATTRIBUTES | JOB_ATTRIBUTES
_ARCH = {"x86_64": "X86_64", "amd64": "X86_64", "aarch64": "aarch64", "arm64": "aarch64"}
_EMPTY: dict[str, Value] = {}

#: A submit-time error in a requirements expression (names the column).
RequirementsError = ClassAdError


def normal_arch(arch: str) -> str:
    """``uname -m`` as HTCondor's ``Arch`` spells it."""
    return _ARCH.get(arch.lower(), arch)


def worker_ad(
    *,
    name: str,
    worker_id: int,
    cpus: int,
    memory_mb: int,
    gpus: int,
    disk_kb: int,
    hostname: str = "",
    opsys: str = "",
    arch: str = "",
    load_avg: float = 0.0,
    gpu_memory_mb: int = 0,
    extra: Mapping[str, Value] | None = None,
) -> dict[str, Value]:
    """A worker's attributes as requirements see them (keys in lower case); ``extra``
    (what the worker advertises beyond these) never hides one of them."""
    ad: dict[str, Value] = {k.lower(): v for k, v in (extra or {}).items()}
    ad.update({
        "name": name,
        "machine": hostname or name,
        "cpus": cpus,
        "memory": memory_mb,
        "disk": disk_kb,
        "gpus": gpus,
        "totalcpus": cpus,
        "totalmemory": memory_mb,
        "totaldisk": disk_kb,
        "totalgpus": gpus,
        "opsys": opsys.upper(),
        "arch": normal_arch(arch),
        "loadavg": load_avg,
        "gpumemory": gpu_memory_mb,
        "workerid": worker_id,
    })  # fmt: skip
    return ad


@dataclass(frozen=True)
class Requirement:
    """A compiled requirements expression: :meth:`matches` says whether a worker
    satisfies it; ``needs_job`` whether it names any attribute of the job; ``unknown``
    the names (as written) that are neither standard machine attributes nor the job's:
    as in HTCondor they are UNDEFINED on a worker that does not advertise them, and
    the submit side warns of each (a typo leaves a job idle)."""

    text: str
    expression: Expression
    needs_job: bool
    unknown: tuple[str, ...] = ()

    def evaluate(self, ad: Ad, job: Ad = _EMPTY) -> Value:
        """The value on the worker ``ad`` for the job ``job``."""
        return self.expression.evaluate(job, ad)

    def matches(self, ad: Ad, job: Ad = _EMPTY) -> bool:
        return self.expression.evaluate(job, ad) is True


@functools.lru_cache(maxsize=1024)
def _compile(text: str, known: frozenset[str]) -> Requirement:
    expression = compile_expression(text)
    needs_job = False
    unknown: list[str] = []
    for (scope, name), column in sorted(expression.columns.items(), key=lambda i: i[1]):
        if scope == "my" or (scope == "" and name not in MACHINE_ATTRIBUTES):
            needs_job = True
        if scope == "" and name not in REQUIREMENT_ATTRIBUTES and name not in known:
            unknown.append(text[column - 1 : column - 1 + len(name)])
    return Requirement(text, expression, needs_job, tuple(unknown))


def compile_requirements(text: str, job_attributes: Iterable[str] = ()) -> Requirement:
    """Parse ``text``; raises :class:`RequirementsError` naming the column of the fault.
    ``job_attributes`` are the job's own attributes (``+Name``), which it may name bare."""
    return _compile(text, frozenset(a.lower() for a in job_attributes))


_compile_rank = functools.lru_cache(maxsize=256)(compile_expression)


def rank_value(expr: str, job_ad: Ad, machine_ad: Ad) -> float:
    """A job's ``rank`` on a worker: the value as a real, 0.0 where it is not a number
    (UNDEFINED, ERROR, a string, an expression this evaluator cannot read), as
    HTCondor ranks."""
    try:
        value = _compile_rank(expr).evaluate(job_ad, machine_ad)
    except ClassAdError:
        return 0.0
    if value is UNDEFINED or value is ERROR or not isinstance(value, int | float):
        return 0.0
    return float(value)
