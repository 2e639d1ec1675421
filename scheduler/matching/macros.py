"""``$$(NAME)`` in a job's arguments and environment: the attributes of the worker the
job is matched to, substituted when it is dispatched there (as HTCondor substitutes
``$$(ATTR)`` from the matched machine's ClassAd). ``$$(NAME:default)`` gives a default.

``$$([expression])`` is a ClassAd expression, evaluated with the job's ad as ``MY`` and
the worker's as ``TARGET`` (``$$([TARGET.Memory * 0.9])``), its value written as
``string()`` writes it (a string without its quotes), as HTCondor substitutes it.

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
from scheduler.matching.classad import Ad, ClassAdError, compile_expression
from scheduler.matching.classad_values import as_text
from scheduler.matching.job_ad import job_ad
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
    job = job_ad(spec) if any("$$([" in text for text in texts) else {}

    def value(m: re.Match[str]) -> str:
        found = attrs.get(m.group(1).lower())
        if found:
            return found
        if m.group(2) is not None:
            return m.group(2)
        return "" if found is not None else m.group(0)

    def substitute(text: str) -> str:
        return _REF.sub(value, _expressions(text, job, slots.attributes))

    return dataclasses.replace(
        spec,
        arguments=[substitute(a) for a in _rejoined(spec.arguments)],
        environment={k: substitute(v) for k, v in spec.environment.items()},
    )


def _rejoined(arguments: list[str]) -> list[str]:
    """The arguments with each ``$$([expression])`` that blanks split over several
    made one again: HTCondor substitutes in the arguments' text, then splits it."""
    out: list[str] = []
    for arg in arguments:
        if out and _open_expression(out[-1]):
            out[-1] += " " + arg
        else:
            out.append(arg)
    return out


def _open_expression(text: str) -> bool:
    """Whether ``text`` has a ``$$([`` whose ``)`` is not in it."""
    i = 0
    while (j := text.find("$$([", i)) >= 0:
        end = _closing(text, j + 2)
        if end is None:
            return True
        i = end + 1
    return False


def _closing(text: str, at: int) -> int | None:
    """The index of the ``)`` that closes the ``(`` at ``at`` (strings skipped)."""
    depth, quote, i = 0, False, at
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == '"':
                quote = False
        elif c == '"':
            quote = True
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def _expressions(text: str, job: Ad, machine: Ad) -> str:
    """``text`` with each ``$$([expression])`` replaced by its value on this worker."""
    out, i = [], 0
    while (j := text.find("$$([", i)) >= 0:
        end = _closing(text, j + 2)
        if end is None or text[end - 1] != "]":
            out.append(text[i : j + 4])
            i = j + 4
            continue
        try:
            value = as_text(compile_expression(text[j + 4 : end - 1]).evaluate(job, machine))
        except ClassAdError:
            value = text[j : end + 1]
        out += [text[i:j], value]
        i = end + 1
    out.append(text[i:])
    return "".join(out)
