"""Which workers could ever run a job, and in plain words why none can.

Used by the scheduler (at submit and for ``dq -analyze``) and by ``dsub
--dry-run`` on the control node, so both give the same answer. "Ever" means
with the worker empty: its whole cpus, memory and GPUs, its free disk.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from scheduler.matching.classad import Expression, compile_expression
from scheduler.matching.gpu_ads import available_gpus
from scheduler.matching.job_ad import JobRequests, job_ad
from scheduler.matching.rank import rank_of
from scheduler.matching.requirements import (
    RequirementsError,
    Value,
    compile_requirements,
    rank_value,
    worker_ad,
)
from scheduler.protocol.records import WorkerInfo, WorkerMetrics

__all__ = [
    "Capacity",
    "Requests",
    "capacity_of",
    "describe_requests",
    "format_mb",
    "advertised",
    "machine_ad",
    "never_reasons",
    "Shape",
    "shape_of",
]


class Requests(JobRequests, Protocol):
    """What a job asks for (a ``JobSpec`` or a parsed submit-file proc)."""

    @property
    def requirements(self) -> str | None: ...
    @property
    def machine(self) -> str | None: ...
    @property
    def attributes(self) -> dict[str, str]: ...


#: What decides where a job fits (see :func:`shape_of`).
Shape = tuple[str | None, int, int | None, int | None, int, str | None, str | None, str | None]


def shape_of(s: Requests) -> Shape:
    """What decides where a job fits; jobs with one shape fit the same slots. Where
    the requirements read the job's own attributes (``MY.``), those are part of it.
    Its ``rank`` is too: a ranked job goes where it ranks best, not wherever a job of
    its requests fits (a worker queues no ranked job behind a running one). Kept on
    the spec (a frozen record, shared by the procs of a cluster): it is asked for
    several times per job."""
    kept = getattr(s, "__dict__", None)
    if kept is not None and (shape := kept.get("_shape")) is not None:
        return shape
    shape = (
        rank_of(s),
        s.request_cpus,
        s.request_memory,
        s.request_disk,
        s.request_gpus,
        s.requirements,
        s.machine,
        _own_attributes(s),
    )
    if kept is not None:
        kept["_shape"] = shape
    return shape


def _own_attributes(s: Requests) -> str | None:
    """The job's ad, as text, when its requirements read it; else None."""
    if s.requirements is None:
        return None
    try:
        rule = compile_requirements(s.requirements, s.attributes)
    except RequirementsError:
        return None
    return repr(sorted(job_ad(s).items())) if rule.needs_job else None


@dataclass(frozen=True)
class Capacity:
    """What one worker offers when empty, and its attributes."""

    worker_id: int
    name: str
    cpus: int
    memory_mb: int
    gpus: int
    disk_kb: int
    ad: dict[str, Value]


def machine_ad(
    name: str, worker_id: int, cpus: int, memory_mb: int, gpus: int, metrics: WorkerMetrics | None
) -> dict[str, Value]:
    """A worker's attributes for ``requirements``, from what it registered and reports."""
    m = metrics
    return worker_ad(
        name=name,
        worker_id=worker_id,
        cpus=cpus,
        memory_mb=memory_mb,
        gpus=gpus,
        disk_kb=(m.disk_free_mb * 1024) if m else 0,
        hostname=m.hostname if m else "",
        opsys=m.os if m else "",
        arch=m.arch if m else "",
        load_avg=m.load_avg[0] if m and m.load_avg else 0.0,
        gpu_memory_mb=min((g.memory_mb for g in m.gpus), default=0) if m else 0,
        extra=advertised(m) if m else None,
    )


def advertised(m: WorkerMetrics) -> dict[str, Value]:
    """What a worker advertises beyond its resources: the attributes it reports
    (operating system, container runtimes, its administrator's), HTCondor's
    ``GPUs`` and, where it has GPUs, their CUDA capability and memory and each GPU's
    ad (``AvailableGPUs``); ``HasJobDeferral``: the scheduler starts a job with a
    ``deferral_time`` no sooner."""
    ad: dict[str, Value] = dict(m.attributes)
    ad["HasJobDeferral"] = True
    if m.gpus:
        cuda = ad.get("CUDAMaxSupportedVersion")
        ad["AvailableGPUs"] = available_gpus(m.gpus, cuda if isinstance(cuda, int) else None)
        capabilities = [g.capability for g in m.gpus if g.capability]
        if capabilities:
            ad["CUDACapability"] = min(capabilities)
        ad["CUDAGlobalMemoryMb"] = min(g.memory_mb for g in m.gpus)
        ad["CUDADeviceName"] = m.gpus[0].name
    ad["TotalSlots"] = 1
    ad["DetectedGPUs"] = len(m.gpus)
    ad["DetectedCpus"] = m.threads
    ad["DetectedMemory"] = m.memory_total_mb
    return ad


def capacity_of(info: WorkerInfo) -> Capacity:
    """The capacity of a worker as ``dstat --json`` lists it."""
    ad = machine_ad(
        info.name, info.id, info.cpus_total, info.memory_total_mb, info.gpus_total, info.metrics
    )
    return Capacity(
        worker_id=info.id,
        name=info.name,
        cpus=info.cpus_total,
        memory_mb=info.memory_total_mb,
        gpus=info.gpus_total,
        disk_kb=info.metrics.disk_free_mb * 1024,
        ad=ad,
    )


def format_mb(mb: int) -> str:
    """``16384`` -> ``"16 GB"``, ``1536`` -> ``"1.5 GB"``, ``512`` -> ``"512 MB"``."""
    if mb >= 1024:
        return f"{mb / 1024:.3g} GB" if mb < 1024 * 1024 else f"{mb / 1024**2:.3g} TB"
    return f"{mb} MB"


def _fits(req: Requests, c: Capacity) -> bool:
    if req.machine is not None and req.machine not in (c.name, str(c.worker_id)):
        return False
    if req.requirements is not None:
        try:
            rule = compile_requirements(req.requirements, req.attributes)
        except RequirementsError:
            return False
        if not rule.matches(c.ad, job_ad(req) if rule.needs_job else {}):
            return False
    return (
        req.request_cpus <= c.cpus
        and (req.request_memory or 0) <= c.memory_mb
        and req.request_gpus <= c.gpus
        and (req.request_disk or 0) <= c.disk_kb
    )


def never_reasons(req: Requests, workers: list[Capacity]) -> tuple[list[str], list[str]]:
    """The workers that could run the job when empty (the highest first by the job's
    ``rank``, if it has one), and (when none) why not."""
    fitting = [c for c in workers if _fits(req, c)]
    rank = rank_of(req)
    if rank is not None:
        job = job_ad(req)
        fitting.sort(key=lambda c: -rank_value(rank, job, c.ad))  # stable: ties keep order
    if fitting:
        return [c.name for c in fitting], []
    if not workers:
        return [], ["no worker is connected"]
    reasons: list[str] = []
    pool = workers
    if req.machine is not None:
        pool = [c for c in workers if req.machine in (c.name, str(c.worker_id))]
        if not pool:
            return [], [f"the job is pinned to worker {req.machine!r}, which is not connected"]
    cpus = max(c.cpus for c in pool)
    if req.request_cpus > cpus:
        reasons.append(f"no worker has {req.request_cpus} cpus; largest has {cpus}")
    memory = max(c.memory_mb for c in pool)
    if (req.request_memory or 0) > memory:
        reasons.append(
            f"no worker has {format_mb(req.request_memory or 0)} of memory;"
            f" largest is {format_mb(memory)}"
        )
    gpus = max(c.gpus for c in pool)
    if req.request_gpus > gpus:
        reasons.append(
            "no worker has a GPU"
            if gpus == 0
            else f"no worker has {req.request_gpus} GPUs; largest has {gpus}"
        )
    disk = max(c.disk_kb for c in pool)
    if (req.request_disk or 0) > disk:
        reasons.append(
            f"no worker has {format_mb((req.request_disk or 0) // 1024)} of free disk;"
            f" largest has {format_mb(disk // 1024)}"
        )
    if req.requirements is not None:
        try:
            rule = compile_requirements(req.requirements, req.attributes)
        except RequirementsError as exc:
            return [], [f"requirements: {exc}"]
        job = job_ad(req)
        if not any(rule.matches(c.ad, job) for c in pool):
            reasons += _missing_resources(req, pool) + _deferral(job) + _container(req, pool)
            reasons.append(f"no worker satisfies the requirements ({req.requirements})")
    if not reasons:
        reasons.append(f"no single worker has everything the job asks for together ({_asks(req)})")
    return [], reasons


#: ``Request<name>`` attributes that are no custom resource.
_STANDARD_REQUESTS = frozenset({"requestcpus", "requestmemory", "requestdisk", "requestgpus"})


def _missing_resources(req: Requests, pool: list[Capacity]) -> list[str]:
    """A reason for each custom resource (``request_<name>``) the job asks for that
    no worker advertises (an attribute ``<name>`` of its ``[attributes]``)."""
    reasons = []
    for attr in req.attributes:
        low = attr.lower()
        if not low.startswith("request") or low in _STANDARD_REQUESTS:
            continue
        name = attr[len("request") :]
        if name and not any(name.lower() in c.ad for c in pool):
            reasons.append(
                f"no worker advertises the resource '{name}' (request_{name}): a worker"
                f" offers it with the attribute {name} ([attributes] in worker.toml)"
            )
    return reasons


#: What a container job's requirements need of a worker, and how to say it is missing.
_CONTAINER_NEEDS = {
    "hasdocker": "no worker has docker (universe = docker needs a docker daemon)",
    "hasdockerurl": "no worker can pull a registry image (podman, docker or apptainer)",
    "hassif": "no worker runs .sif images (apptainer or singularity)",
    "hassandboximage": "no worker runs an image directory or tar (bubblewrap, podman, apptainer)",
}
_HAS = re.compile(r"\bhas[a-z]+\b")


def _container(req: Requests, pool: list[Capacity]) -> list[str]:
    """Why a job that asks for a container matches no worker, if that is why."""
    named = set(_HAS.findall((req.requirements or "").lower()))
    if not named & ({"hascontainer"} | set(_CONTAINER_NEEDS)):
        return []
    if not any(c.ad.get("hascontainer") is True for c in pool):
        return ["no worker has a container runtime"]
    for attr, why in _CONTAINER_NEEDS.items():
        if attr in named and not any(c.ad.get(attr) is True for c in pool):
            return [why]
    return []


_NOT_YET = compile_expression("time() + ScheddInterval < DeferralTime - DeferralPrepTime")
_FROM = compile_expression("DeferralTime - DeferralPrepTime - ScheddInterval")
_MISSED = compile_expression("time() >= DeferralTime + DeferralWindow")


def _deferral(job: Mapping[str, Value | Expression]) -> list[str]:
    """Why a job with a ``deferral_time`` matches no worker now, if that is why."""
    if "deferraltime" not in job:
        return []
    if _NOT_YET.evaluate(job) is True:
        start = _FROM.evaluate(job)
        when = (
            time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(start))
            if isinstance(start, int | float) and not isinstance(start, bool)
            else "later"
        )
        return [
            f"its deferral_time is ahead: it can match from {when}"
            " (DeferralTime - DeferralPrepTime - ScheddInterval)"
        ]
    if _MISSED.evaluate(job) is True:
        return ["its deferral_time and deferral_window have passed: it never matches"]
    return []


def describe_requests(req: Requests) -> str:
    """The resources a job asks for, in words: ``4 cpus, 2.0 GB of memory, 1 GPUs``."""
    parts = [f"{req.request_cpus} cpus"]
    if req.request_memory:
        parts.append(f"{format_mb(req.request_memory)} of memory")
    if req.request_gpus:
        parts.append(f"{req.request_gpus} GPUs")
    if req.request_disk:
        parts.append(f"{format_mb(req.request_disk // 1024)} of disk")
    return ", ".join(parts)


def _asks(req: Requests) -> str:
    asks = describe_requests(req)
    return f"{asks}, requirements {req.requirements}" if req.requirements else asks
