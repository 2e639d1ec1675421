"""A job's own attributes, as its ``requirements`` see them under ``MY`` (HTCondor's names).

Beside the attributes dfarm sets itself, a job's ad holds the attributes its submit
file gives (``+Name``, ``MY.Name`` and the keys stored under HTCondor's names, such as
``Rank``): a constant is its value, an expression naming attributes stays an
expression, evaluated where it is used with the job as MY (as in HTCondor's job ad).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Protocol

from scheduler.matching.classad import ERROR, ClassAdError, Expression, Value, compile_expression

__all__ = ["JobRequests", "attribute_value", "job_ad"]


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


@functools.lru_cache(maxsize=4096)
def attribute_value(text: str) -> Value | Expression:
    """A stored attribute's ClassAd text as an ad holds it: the value of a constant,
    else the compiled expression (ERROR where this evaluator cannot compile it)."""
    try:
        expression = compile_expression(text)
    except ClassAdError:
        return ERROR
    if expression.columns or "(" in text:  # names an attribute, or calls a function
        return expression
    return expression.evaluate()


def job_ad(spec: JobRequests) -> dict[str, Value | Expression]:
    """The job's attributes (keys in lower case); absent ones are UNDEFINED. Those
    dfarm sets itself win over a stored attribute of the same name."""
    ad: dict[str, Value | Expression] = {}
    attributes = getattr(spec, "attributes", None)
    if isinstance(attributes, Mapping):
        for name, text in attributes.items():
            ad[str(name).lower()] = attribute_value(str(text))
    ad |= {
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
