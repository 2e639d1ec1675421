"""The views ``condor_q`` users know, over each job's ClassAd: ``-af`` (autoformat),
``-constraint``, ``-hold``, ``-run``, ``-long`` and the batch view."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from control_node.render import duration, run_time, tabulate, when
from scheduler import protocol as p
from scheduler.matching.classad import (
    ClassAdError,
    Expression,
    Value,
    compile_expression,
    unparse,
)
from scheduler.matching.classad_values import as_text, truth
from scheduler.matching.job_status import status_ad, status_attributes

__all__ = [
    "AutoFormat",
    "autoformat",
    "batch_table",
    "check_attributes",
    "constraint",
    "held_table",
    "long_classads",
    "matching",
    "parse_autoformat",
    "running_table",
]

#: The letters ``-af:`` takes (as condor_q): job id, labels, headers, strings quoted,
#: raw expressions, and the separators (comma, tab, newline; ``g`` a newline between jobs).
_AF_LETTERS = set("jlhVr,tng")


@dataclass(frozen=True)
class AutoFormat:
    """What ``-af[:OPTIONS] ATTR...`` asks for."""

    attributes: list[str]
    options: str = ""


def parse_autoformat(argv: list[str]) -> tuple[list[str], str]:
    """``argv`` with ``-af:OPTS``/``-autoformat:OPTS`` written as plain ``-af``, and the
    option letters given (argparse cannot read a flag with a suffix)."""
    out, options = [], ""
    for arg in argv:
        flag, colon, letters = arg.partition(":")
        if colon and flag in ("-af", "-autoformat", "--af", "--autoformat"):
            unknown = set(letters) - _AF_LETTERS
            if unknown:
                raise ValueError(
                    f"{arg}: unknown option {''.join(sorted(unknown))!r} "
                    f"(-af: takes {''.join(sorted(_AF_LETTERS))})"
                )
            out.append("-af")
            options += letters
        else:
            out.append(arg)
    return out, options


def constraint(text: str) -> Expression:
    """``-constraint``'s expression; raises ValueError naming the fault."""
    try:
        return compile_expression(text)
    except ClassAdError as exc:
        raise ValueError(f"-constraint {text!r}: {exc}") from None


def check_attributes(attributes: Sequence[str]) -> list[Expression]:
    """``-af``'s attributes compiled; raises ValueError naming a faulty one."""
    exprs = []
    for text in attributes:
        try:
            exprs.append(compile_expression(text))
        except ClassAdError as exc:
            raise ValueError(f"-af {text!r}: {exc}") from None
    return exprs


def matching(jobs: Sequence[p.JobInfo], expr: Expression | None) -> list[p.JobInfo]:
    """The jobs whose ad makes ``expr`` true (all when None)."""
    if expr is None:
        return list(jobs)
    return [j for j in jobs if truth(expr.evaluate(status_ad(j))) is True]


def _value_text(value: Value, quoted: bool) -> str:
    return unparse(value) if quoted else as_text(value)


def autoformat(jobs: Sequence[p.JobInfo], af: AutoFormat) -> str:
    """One line per job, each attribute's (or expression's) value, as ``condor_q -af``."""
    exprs = check_attributes(af.attributes)
    opts = af.options
    sep = "\n" if "n" in opts else "\t" if "t" in opts else ", " if "," in opts else " "
    lines = []
    if "h" in opts:
        lines.append(sep.join((["ID"] if "j" in opts else []) + af.attributes))
    for job in jobs:
        ad = status_ad(job)
        raw = dict((k.lower(), v) for k, v in status_attributes(job)) if "r" in opts else {}
        fields = [job.id] if "j" in opts else []
        for name, expr in zip(af.attributes, exprs, strict=True):
            if "r" in opts and name.lower() in raw:
                text = raw[name.lower()]
            else:
                text = _value_text(expr.evaluate(ad), "V" in opts)
            fields.append(f"{name} = {text}" if "l" in opts else text)
        lines.append(sep.join(fields) + ("\n" if "g" in opts else ""))
    return "\n".join(lines)


def long_classads(job: p.JobInfo) -> list[str]:
    """The job's ClassAd as ``Attr = value`` lines (strings quoted), as ``condor_q -l``."""
    return [f"{name} = {text}" for name, text in status_attributes(job)]


def held_table(jobs: Sequence[p.JobInfo]) -> str:
    """``condor_q -hold``: each held job, since when, and why."""
    rows = [
        (j.id, j.owner, when(j.end_time), j.hold_reason or "-")
        for j in jobs
        if j.state == p.JobState.HELD.value
    ]
    headers = ("ID", "OWNER", "HELD_SINCE", "HOLD_REASON")
    return tabulate(rows, headers=headers, tablefmt="plain", disable_numparse=True)


def running_table(jobs: Sequence[p.JobInfo], now: float) -> str:
    """``condor_q -run``: each running job and the worker it runs on."""
    rows = [
        (j.id, j.owner, when(j.submit_time), duration(run_time(j, now)), j.worker or "-")
        for j in jobs
        if j.state == p.JobState.RUNNING.value
    ]
    headers = ("ID", "OWNER", "SUBMITTED", "RUN_TIME", "HOST(S)")
    return tabulate(rows, headers=headers, tablefmt="plain", disable_numparse=True)


def _batch_key(job: p.JobInfo) -> tuple[str, str]:
    name = status_ad(job).get("jobbatchname")
    return job.owner, name if isinstance(name, str) else f"ID: {job.cluster}"


def _id_range(jobs: Sequence[p.JobInfo]) -> str:
    first, last = jobs[0], jobs[-1]
    if first.id == last.id:
        return first.id
    if first.cluster == last.cluster:
        return f"{first.id}-{last.proc}"
    return f"{first.id} ... {last.id}"


def batch_table(jobs: Sequence[p.JobInfo]) -> str:
    """``condor_q``'s batch view: one row per owner and ``JobBatchName`` (the cluster
    when a job has none), with the count of its jobs in each state ('_' for none)."""
    batches: dict[tuple[str, str], list[p.JobInfo]] = {}
    for job in jobs:
        batches.setdefault(_batch_key(job), []).append(job)
    rows = []
    for (owner, name), members in batches.items():
        states = [j.state for j in members]
        counts = [states.count(s) for s in ("completed", "running", "idle", "held")]
        rows.append(
            (
                owner,
                name,
                when(min(j.submit_time for j in members)),
                *(str(n) if n else "_" for n in counts),
                len(members),
                _id_range(members),
            )
        )
    headers = ("OWNER", "BATCH_NAME", "SUBMITTED", "DONE", "RUN", "IDLE", "HOLD", "TOTAL")
    return tabulate(rows, headers=(*headers, "JOB_IDS"), tablefmt="plain", disable_numparse=True)
