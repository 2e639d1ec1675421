"""The results of a parameter sweep, summarized: what ``dresults`` prints and exports.

A job's result is a dict of numbers (``{"value": x}`` for a job that printed one
number). A job that finished without a result (non-zero exit, signal, held, removed,
or output that is not a number) is a *failure*: it is counted, never averaged as 0.
Jobs still idle or running are *pending*.

>>> sweep = Sweep(client.jobs(["42"], states=[]))
>>> sweep.summary()["value"].mean
"""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from scheduler import protocol as p

__all__ = ["Summary", "Sweep", "histogram_lines", "number_or_text", "summarize"]

PENDING = {p.JobState.IDLE.value, p.JobState.RUNNING.value}
FIXED_COLUMNS = frozenset({"job", "state", "owner", "worker", "status"})


@dataclass(frozen=True)
class Summary:
    """Summary statistics of one result key (``sd`` is the sample standard deviation,
    quartiles are linear interpolation between order statistics, as NumPy's default)."""

    count: int
    mean: float
    sd: float | None
    cv: float | None
    min: float
    q1: float
    median: float
    q3: float
    max: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(values: list[float]) -> Summary | None:
    """The summary of a list of numbers; None when it is empty."""
    if not values:
        return None
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else None
    cv = sd / abs(mean) if sd is not None and mean != 0 else None
    if len(values) > 1:
        q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    else:
        q1 = median = q3 = values[0]
    return Summary(len(values), mean, sd, cv, min(values), q1, median, q3, max(values))


def histogram_lines(values: list[float], bins: int | None = None, width: int = 40) -> list[str]:
    """A histogram drawn with block characters, one line per bin."""
    if not values:
        return []
    low, high = min(values), max(values)
    if bins is None:
        bins = max(1, min(20, math.ceil(math.log2(len(values)) + 1)))  # Sturges
    if high == low:
        return [f"{_num(low):>12} {'█' * width} {len(values)}"]
    step = (high - low) / bins
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int((v - low) / step))] += 1
    top = max(counts)
    lines = []
    for i, n in enumerate(counts):
        edge = (
            f"[{_num(low + i * step)}, {_num(low + (i + 1) * step)}{']' if i == bins - 1 else ')'}"
        )
        bar = "█" * round(n / top * width) if n else ""
        lines.append(f"{edge:>24} {bar:<{width}} {n}")
    return lines


_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")


def number_or_text(text: str) -> int | float | str:
    """A parameter as JSON gives it: ``0.05`` and ``3`` as numbers, anything else
    (``big``, ``1_000``, ``nan``, ``007``) as the text it is."""
    if not _NUMBER.fullmatch(text):
        return text
    if text.lstrip("-").isdigit():
        return int(text)
    number = float(text)
    return number if math.isfinite(number) else text


def _num(x: float) -> str:
    return f"{x:.4g}"


class Sweep:
    """The jobs of one cluster with their parameters and results."""

    def __init__(self, jobs: list[p.JobInfo]):
        self.jobs = jobs
        self.params = list(dict.fromkeys(k for j in jobs for k in j.params))
        self.keys = list(dict.fromkeys(k for j in jobs if j.result for k in j.result))
        # Column names of rows(): a parameter or key that clashes with another column
        # is prefixed, so no value hides another.
        self.param_columns = {k: f"param.{k}" if k in FIXED_COLUMNS else k for k in self.params}
        taken = FIXED_COLUMNS | set(self.param_columns.values())
        self.key_columns = {k: f"result.{k}" if k in taken else k for k in self.keys}

    @property
    def columns(self) -> list[str]:
        """The fields of every row, in order."""
        return [
            "job", "state", "owner", "worker", *self.param_columns.values(),
            *self.key_columns.values(), "status",
        ]  # fmt: skip

    @property
    def done(self) -> list[p.JobInfo]:
        return [j for j in self.jobs if j.result is not None]

    @property
    def failures(self) -> list[p.JobInfo]:
        return [j for j in self.jobs if j.result is None and j.state not in PENDING]

    @property
    def pending(self) -> list[p.JobInfo]:
        return [j for j in self.jobs if j.state in PENDING]

    def values(self, key: str) -> list[float]:
        return [j.result[key] for j in self.done if j.result and key in j.result]

    def summary(self) -> dict[str, Summary]:
        out = {}
        for key in self.keys:
            s = summarize(self.values(key))
            if s is not None:
                out[key] = s
        return out

    def contributions(self, field: str) -> list[tuple[str, int, int]]:
        """(owner or worker, results, failures) for each one that ran a job."""
        results = Counter(getattr(j, field) or "-" for j in self.done)
        failed = Counter(getattr(j, field) or "-" for j in self.failures)
        names = sorted(set(results) | set(failed))
        return [(name, results[name], failed[name]) for name in names]

    def status(self, job: p.JobInfo) -> str:
        """``ok``, ``pending`` (idle or running) or why there is no result."""
        if job.result is not None:
            return "ok"
        if job.state in PENDING:
            return job.state
        if job.state == p.JobState.HELD.value:
            return f"held: {job.hold_reason}"
        if job.state == p.JobState.REMOVED.value:
            return "removed"
        return job.result_error or "no result"

    def rows(self) -> list[dict[str, Any]]:
        """One flat record per job: id, state, owner, worker, params, result keys, status."""
        rows = []
        for j in self.jobs:
            row: dict[str, Any] = {"job": j.id, "state": j.state, "owner": j.owner}
            row["worker"] = j.worker or ""
            row.update({c: j.params.get(k, "") for k, c in self.param_columns.items()})
            row.update({c: (j.result or {}).get(k) for k, c in self.key_columns.items()})
            row["status"] = self.status(j)
            rows.append(row)
        return rows

    def report(self) -> dict[str, Any]:
        """Everything ``dresults --json`` prints."""
        rows = [
            {**row, **{c: number_or_text(row[c]) for c in self.param_columns.values()}}
            for row in self.rows()
        ]
        return {
            "jobs": rows,
            "params": self.params,
            "keys": self.keys,
            "count": len(self.jobs),
            "results": len(self.done),
            "failures": len(self.failures),
            "pending": len(self.pending),
            "summary": {k: s.as_dict() for k, s in self.summary().items()},
            "by_user": [
                dict(zip(("user", "results", "failures"), c, strict=True))
                for c in self.contributions("owner")
            ],  # fmt: skip
            "by_worker": [
                dict(zip(("worker", "results", "failures"), c, strict=True))
                for c in self.contributions("worker")
            ],  # fmt: skip
        }
