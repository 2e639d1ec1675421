"""Who may see and touch which job: the one rule every handler asks.

A job belongs to its owner. A user with the admin role (``dfarm user add --admin``,
HTCondor's queue superuser) may act on every job. Anyone else sees other users'
jobs only as HTCondor's ``condor_q -allusers`` does: ids, owner, state and times,
never their executable, arguments, parameters, hold reason, results or output.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

from scheduler.callers import Caller
from scheduler.protocol import JobInfo


class Owned(Protocol):
    owner: str


#: What others may see of a job; every other field is reset to its default.
PUBLIC_FIELDS = frozenset(
    {
        "id",
        "cluster",
        "proc",
        "owner",
        "state",
        "submit_time",
        "start_time",
        "end_time",
        "worker",
        "num_starts",
        "wall_time",
        "total_run_time",
    }
)


def may_control(caller: Caller, job: Owned) -> bool:
    """Whether ``caller`` may remove, hold, release, edit, tail, fetch or read ``job``."""
    return may_act_for(caller, job.owner)


def may_act_for(caller: Caller, owner: str) -> bool:
    """Whether ``caller`` may act on what ``owner`` owns (a job, a cluster)."""
    return caller.admin or owner == caller.name


def visible_info(caller: Caller, job: Owned, info: JobInfo) -> JobInfo:
    """``info`` as ``caller`` may see it: whole for the owner and admins, else only
    the public fields."""
    if may_control(caller, job):
        return info
    hidden: dict[str, Any] = {
        f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
        for f in dataclasses.fields(JobInfo)
        if f.name not in PUBLIC_FIELDS
    }
    return dataclasses.replace(info, **hidden)


def not_found(caller: Caller, what: str) -> str:
    """The refusal for naming jobs ``caller`` may not touch: the same words whether
    they exist or not, so that nobody learns what others run."""
    return f"no job {'' if caller.admin else 'of yours '}matches {what}"
