"""What condor_submit 24 derives from submit keys: requirement clauses and attributes.

Some keys mean more than an attribute of their own: HTCondor adds a clause to the
job's ``Requirements`` and attributes for it to name, and ``success_exit_code`` and
``retry_until`` fold into ``OnExitRemove``. This module does the same, checked
against HTCondor's own submit code:

- ``request_<name>`` (a custom machine resource): ``Request<name>`` and
  ``TARGET.<name> >= Request<name>``;
- ``require_gpus`` or ``gpus_minimum_capability``/``gpus_maximum_capability``/
  ``gpus_minimum_memory`` (with ``request_gpus`` > 0): ``RequireGPUs``, a constraint on
  one GPU's ad, and ``countMatches(MY.RequireGPUs,TARGET.AvailableGPUs) >= RequestGPUs``;
- ``cuda_version``: ``CUDAVersion`` (``x.y`` as ``1000 x + y``, as HTCondor 24 writes it) and
  ``CUDAVersion <= TARGET.CUDAMaxSupportedVersion``;
- ``deferral_time``: ``DeferralTime``, ``DeferralWindow`` (default 0),
  ``DeferralPrepTime`` (default 300), ``ScheddInterval`` and HTCondor's clause, which
  lets the job match from ``DeferralPrepTime + ScheddInterval`` seconds before its time;
- ``success_exit_code``/``retry_until``: ``JobMaxRetries`` defaults to 2 and
  ``OnExitRemove`` becomes ``NumJobCompletions > JobMaxRetries || ExitCode is <success>``
  ``|| <retry_until>`` (``|| <on_exit_remove>`` when the file sets one); so does
  ``on_exit_remove`` with ``max_retries``.

The clauses come after the file's own ``requirements`` (parenthesised), in HTCondor's order.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_MAX_RETRIES",
    "DERIVED_KEYS",
    "DerivedError",
    "Derived",
    "SCHEDD_INTERVAL",
    "cuda_version",
    "derive",
]

#: The keys read here (beside ``request_<name>``, ``deferral_time`` and ``success_exit_code``,
#: also stored under their own names).
DERIVED_KEYS = frozenset({
    "require_gpus", "gpus_minimum_capability", "gpus_maximum_capability",
    "gpus_minimum_memory", "cuda_version", "deferral_window", "deferral_prep_time",
    "retry_until",
})  # fmt: skip
#: ``JobMaxRetries`` when ``success_exit_code`` or ``retry_until`` is set and
#: ``max_retries`` is not (HTCondor's DEFAULT_JOB_MAX_RETRIES).
DEFAULT_MAX_RETRIES = 2
#: The ``ScheddInterval`` a job ad holds (HTCondor's default SCHEDD_INTERVAL, seconds).
SCHEDD_INTERVAL = 300
_DEFERRAL_CLAUSE = (
    "TARGET.HasJobDeferral && (((time() + ScheddInterval) >= (DeferralTime - DeferralPrepTime))"
    " && (time() < (DeferralTime + DeferralWindow)))"
)
_CUDA = re.compile(r"\s*([0-9]+)(?:\.([0-9]+))?\s*")
_INT = re.compile(r"\s*[+-]?[0-9]+\s*")
_MEMORY = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([KMGT]?)B?\s*", re.IGNORECASE)


class DerivedError(Exception):
    """A derived key's value HTCondor refuses: ``key`` and the message."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(key, message)
        self.key, self.message = key, message


@dataclass
class Derived:
    """The requirements with the derived clauses, the attributes to add and
    ``JobMaxRetries`` (None: as the file says)."""

    requirements: str | None
    attributes: dict[str, str] = field(default_factory=dict)
    max_retries: int | None = None


def cuda_version(text: str) -> int:
    """``x`` or ``x.y`` as HTCondor's ``CUDAVersion``: 1000 x + y (so 11.2 is 11002)."""
    m = _CUDA.fullmatch(text)
    if not m:
        raise ValueError(
            "cuda_version must be of the form 'x' or 'x.y', where x and y are positive integers"
        )
    return int(m[1]) * 1000 + int(m[2] or 0)


def _megabytes(text: str) -> str:
    """``gpus_minimum_memory`` in MB (a bare number is MB)."""
    m = _MEMORY.fullmatch(text)
    if not m:
        return text
    scale = {"": 1, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}[m[2].upper()]
    return str(int(float(m[1]) * scale + 0.999999))


def derive(
    get: Callable[[str], str | None],
    requirements: str | None,
    requests: Iterable[str],
    request_gpus: int,
) -> Derived:
    """What the keys ``get`` returns (expanded values, None where unset) add to a job
    whose own ``requirements`` and custom resource requests (the names of
    ``request_<name>``) are given. Raises :class:`DerivedError`."""
    out = Derived(requirements)
    clauses = [f"(TARGET.{name} >= Request{name})" for name in sorted(requests, key=str.lower)]
    if request_gpus > 0:
        require = _require_gpus(get, out.attributes)
        if require:
            out.attributes["RequireGPUs"] = require
            clauses.append("(countMatches(MY.RequireGPUs,TARGET.AvailableGPUs) >= RequestGPUs)")
    cuda = get("cuda_version")
    if cuda:
        try:
            out.attributes["CUDAVersion"] = str(cuda_version(cuda))
        except ValueError as e:
            raise DerivedError("cuda_version", str(e)) from None
        clauses.append("CUDAVersion <= TARGET.CUDAMaxSupportedVersion")
    if get("deferral_time"):
        for key, attr, default in (
            ("deferral_window", "DeferralWindow", "0"),
            ("deferral_prep_time", "DeferralPrepTime", "300"),
        ):
            out.attributes[attr] = get(key) or default
        out.attributes["ScheddInterval"] = str(SCHEDD_INTERVAL)
        clauses.append(_DEFERRAL_CLAUSE)
    if clauses:
        mine = [f"({requirements})"] if requirements else []
        out.requirements = " && ".join(mine + clauses)
    _retries(get, out)
    return out


def _require_gpus(get: Callable[[str], str | None], attributes: dict[str, str]) -> str | None:
    """``RequireGPUs``: ``require_gpus`` as written, else the clauses of the
    ``gpus_*`` keys (their attributes added to ``attributes``)."""
    parts = []
    for key, attr, test in (
        ("gpus_minimum_capability", "GPUsMinCapability", "Capability >= GPUsMinCapability"),
        ("gpus_maximum_capability", "GPUsMaxCapability", "Capability <= GPUsMaxCapability"),
        ("gpus_minimum_memory", "GPUsMinMemory", "GlobalMemoryMb >= GPUsMinMemory"),
    ):
        value = get(key)
        if value:
            attributes[attr] = _megabytes(value) if key == "gpus_minimum_memory" else value
            parts.append(test)
    return get("require_gpus") or " && ".join(parts) or None


def _operand(expr: str) -> str:
    """``expr`` as an operand of ``||``: parenthesised only where it has an operator
    that binds less tightly (``?:``), as HTCondor writes it."""
    return f"({expr})" if "?" in expr else expr


def _retries(get: Callable[[str], str | None], out: Derived) -> None:
    """``success_exit_code``, ``retry_until`` and ``max_retries`` with ``on_exit_remove``:
    JobMaxRetries and OnExitRemove (``max_retries`` alone: the scheduler retries)."""
    success, until = get("success_exit_code"), get("retry_until")
    own, max_retries = get("on_exit_remove"), get("max_retries")
    if not success and not until and not (own and max_retries):
        return
    if not max_retries:
        out.max_retries = DEFAULT_MAX_RETRIES
    terms = ["NumJobCompletions > JobMaxRetries"]
    terms.append("ExitCode is JobSuccessExitCode" if success else "ExitCode is 0")
    if until:
        terms.append(f"ExitCode is {int(until)}" if _INT.fullmatch(until) else _operand(until))
    if own:
        terms.append(_operand(own))
    out.attributes["OnExitRemove"] = " || ".join(terms)
