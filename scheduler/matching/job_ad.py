"""A job's own attributes, as its ``requirements`` see them under ``MY`` (HTCondor's names)."""

from __future__ import annotations

from typing import Protocol

from scheduler.matching.classad import Value

__all__ = ["job_ad"]


class JobRequests(Protocol):
    """What a job ad is made of (a ``JobSpec`` or a parsed submit-file proc)."""

    @property
    def request_cpus(self) -> int: ...
    @property
    def request_memory(self) -> int | None: ...
    @property
    def request_disk(self) -> int | None: ...
    @property
    def request_gpus(self) -> int: ...


def job_ad(spec: JobRequests) -> dict[str, Value]:
    """The job's attributes (keys in lower case); absent ones are UNDEFINED."""
    ad: dict[str, Value] = {
        "requestcpus": spec.request_cpus,
        "requestgpus": spec.request_gpus,
    }
    if spec.request_memory is not None:
        ad["requestmemory"] = spec.request_memory
    if spec.request_disk is not None:
        ad["requestdisk"] = spec.request_disk
    for attr, key in (("executable", "cmd"), ("initialdir", "iwd")):
        value = getattr(spec, attr, None)
        if isinstance(value, str):
            ad[key] = value
    for attr, key in (("priority", "jobprio"), ("max_retries", "maxretries")):
        value = getattr(spec, attr, None)
        if isinstance(value, int):
            ad[key] = value
    arguments = getattr(spec, "arguments", None)
    if isinstance(arguments, list):
        ad["arguments"] = " ".join(arguments)
    return ad
