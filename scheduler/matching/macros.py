"""``$$(NAME)`` in a job's arguments and environment: the attributes of the worker the
job is matched to, substituted when it is dispatched there (as HTCondor substitutes
``$$(ATTR)`` from the matched machine's ClassAd). ``$$(NAME:default)`` gives a default.

The names (``MACHINE_ATTRIBUTES``, case-insensitive) are ``Machine`` (host name),
``Name`` (worker name), ``Cpus``, ``Memory`` (MB), ``Disk`` (KB) and ``GPUs`` the job
holds there, ``OpSys`` and ``Arch`` of the worker, and ``TotalCpus``, ``TotalMemory``
(MB) and ``TotalGpus`` the worker offers; ``$$(DOLLARDOLLAR)`` is a literal ``$$``.
The submit-file parser refuses other names.
"""

from __future__ import annotations

import dataclasses
import re

from scheduler.matching.attributes import WorkerSlots
from scheduler.matching.requirements import normal_arch
from scheduler.protocol import JobSpec, WorkerMetrics

__all__ = ["match_spec", "worker_attributes"]

_REF = re.compile(r"\$\$\(([A-Za-z_][A-Za-z0-9_]*)(?::([^()]*))?\)")


def worker_attributes(
    spec: JobSpec, slots: WorkerSlots, metrics: WorkerMetrics | None
) -> dict[str, str]:
    """The values of ``$$(NAME)`` for ``spec`` running on this worker."""
    return {
        "machine": (metrics.hostname if metrics else "") or slots.name,
        "name": slots.name,
        "cpus": str(spec.request_cpus),
        "memory": str(spec.request_memory or slots.memory_mb),
        "disk": str(spec.request_disk or slots.disk_free_mb * 1024),
        "gpus": str(spec.request_gpus),
        "opsys": (metrics.os if metrics else "").upper(),
        "arch": normal_arch(metrics.arch if metrics else ""),
        "totalcpus": str(slots.cpus),
        "totalmemory": str(slots.memory_mb),
        "totalgpus": str(slots.gpus),
        "dollardollar": "$$",  # HTCondor's escape for a literal $$
    }


def match_spec(spec: JobSpec, slots: WorkerSlots, metrics: WorkerMetrics | None) -> JobSpec:
    """``spec`` with every ``$$(NAME)`` substituted for this worker (itself if none)."""
    texts = [*spec.arguments, *spec.environment.values()]
    if not any("$$(" in text for text in texts):
        return spec
    attrs = worker_attributes(spec, slots, metrics)

    def value(m: re.Match[str]) -> str:
        found = attrs.get(m.group(1).lower())
        if found:
            return found
        if m.group(2) is not None:
            return m.group(2)
        return "" if found is not None else m.group(0)

    return dataclasses.replace(
        spec,
        arguments=[_REF.sub(value, a) for a in spec.arguments],
        environment={k: _REF.sub(value, v) for k, v in spec.environment.items()},
    )
