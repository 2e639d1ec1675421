"""Job policies, evaluated as HTCondor evaluates them.

A job's ``periodic_hold``, ``periodic_release`` and ``periodic_remove`` (its
attributes ``PeriodicHold``, ``PeriodicRelease``, ``PeriodicRemove``) are evaluated
every ``policy_interval`` seconds (:func:`periodic_pass`) and, with ``on_exit_hold``
and ``on_exit_remove``, when an attempt ends (:func:`at_exit`), over the job's ClassAd
(:func:`scheduler.matching.job_status.status_ad`). As HTCondor's
``UserPolicy::AnalyzePolicy`` does, the first of these that fires wins:

1. ``PeriodicHold``, unless the job is held;
2. ``PeriodicRelease``, if it is held, unless by a user (``HoldReasonCode`` 1);
3. ``PeriodicRemove``;
4. when an attempt ended only: ``OnExitHold``, then ``OnExitRemove`` (TRUE when not
   set; FALSE puts the job back in the queue, to run again).

An expression fires when it gives a non-zero number (a boolean included). One that
gives anything else (UNDEFINED, ERROR, a string) ends the evaluation there and does
nothing, as in HTCondor's schedd; it is logged once per job and attribute. The job
is held (or removed, released, requeued) with the reason its ``...Reason`` attribute
gives, else HTCondor's: "The job attribute PeriodicHold expression '...' evaluated to
TRUE". ``time()`` is the scheduler's clock.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

from scheduler.job_records import Job
from scheduler.matching.classad import ClassAdError, Expression, Value, compile_expression
from scheduler.matching.classad_functions import evaluation_clock
from scheduler.matching.job_status import status_ad
from scheduler.protocol import JobState
from scheduler.run_time import run_time_so_far
from scheduler.state import SchedulerState
from scheduler.transitions import hold, release, remove
from scheduler.units import run_unit

log = logging.getLogger("scheduler.server")

#: HTCondor's names of the policy attributes, by their lower-case form.
NAMES = {
    name.lower(): name
    for name in ("PeriodicHold", "PeriodicRelease", "PeriodicRemove", "OnExitHold", "OnExitRemove")
}
#: What each policy does when it fires.
ACTIONS = {
    "periodichold": "hold",
    "periodicrelease": "release",
    "periodicremove": "remove",
    "onexithold": "hold",
    "onexitremove": "requeue",  # when FALSE
}
#: ``HoldReasonCode`` of a job held by its owner or an admin (HTCondor's UserRequest).
USER_REQUEST = 1
#: ``HoldReasonCode`` of a job held by its policy (HTCondor's JobPolicy).
JOB_POLICY = 3


@dataclass(frozen=True)
class Verdict:
    """What a policy decided: ``action`` (hold, release, remove, requeue) and why,
    or ``undefined`` (nothing: the expression of ``attribute`` was not a number)."""

    action: str
    attribute: str
    reason: str = ""
    subcode: int = 0

    @property
    def code(self) -> tuple[int, int]:
        """The HoldReasonCode and subcode of a hold it decides."""
        return JOB_POLICY, self.subcode


@functools.lru_cache(maxsize=1024)
def _compiled(text: str) -> Expression | None:
    try:
        return compile_expression(text)
    except ClassAdError:
        return None


def policies_of(attributes: Mapping[str, str]) -> dict[str, str]:
    """The policy expressions among a job's attributes, by lower-case name."""
    return {name.lower(): text for name, text in attributes.items() if name.lower() in NAMES}


def _value(text: str, ad: Mapping[str, Value]) -> bool | None:
    """Whether ``text`` fires over ``ad``: True or False, None when it gives no number
    (the literal ``undefined`` counts as False, as in HTCondor)."""
    expression = _compiled(text)
    if expression is None:
        return None
    value = expression.evaluate(ad)
    if isinstance(value, bool | int | float):
        return value != 0
    return False if text.strip().lower() == "undefined" else None


def _verdict(name: str, text: str, ad: Mapping[str, Value], fired: bool) -> Verdict:
    """The verdict of ``name`` (lower case) that gave ``fired``, with its reason."""
    attribute = NAMES[name]
    reason = ad.get(f"{name}reason")
    if not isinstance(reason, str) or not reason:
        value = "TRUE" if fired else "FALSE"
        reason = f"The job attribute {attribute} expression '{text.strip()}' evaluated to {value}"
    subcode = ad.get(f"{name}subcode")
    number = 0  # HTCondor's default, also for what is no 32-bit integer
    if isinstance(subcode, int | float) and math.isfinite(subcode) and abs(subcode) < 2**31:
        number = int(subcode)
    return Verdict(ACTIONS[name], attribute, reason, number)


def decide(
    policies: Mapping[str, str], ad: Mapping[str, Value], state: JobState, ended: bool = False
) -> Verdict | None:
    """What the job's ``policies`` (see :func:`policies_of`) do to a job in ``state``
    whose ClassAd is ``ad``; ``ended``: its attempt has just ended. None: nothing."""
    order: list[str] = []
    if state is not JobState.HELD:
        order.append("periodichold")
    elif ad.get("holdreasoncode") != USER_REQUEST:
        order.append("periodicrelease")
    order.append("periodicremove")
    if ended:
        order.append("onexithold")
    for name in order:
        text = policies.get(name)
        if text is None:
            continue
        fired = _value(text, ad)
        if fired is None:
            return Verdict("undefined", NAMES[name])
        if fired:
            return _verdict(name, text, ad, True)
    if ended and "onexitremove" in policies:
        text = policies["onexitremove"]
        fired = _value(text, ad)
        if fired is None:
            return Verdict("undefined", NAMES["onexitremove"])
        if not fired:
            return _verdict("onexitremove", text, ad, False)
    return None


def job_ad(state: SchedulerState, job: Job, **attempt: object) -> dict[str, Value]:
    """``job``'s ClassAd now, its run time counted up to now; ``attempt``: the fields
    of the attempt that has just ended (``exit_code``, ``exit_signal``,
    ``wall_time``)."""
    now = state.clock()
    events = state.store.events(job.cluster, job.proc)
    info = dataclasses.replace(job.info(), total_run_time=run_time_so_far(events, now) or 0.0)
    if attempt:
        info = dataclasses.replace(info, **attempt)  # type: ignore[arg-type]
    ad = status_ad(info)
    # The attempts whose program ended (this one too): what JobMaxRetries bounds.
    ended = sum(e.event in ("terminated", "retrying") for e in events)
    ad["numjobcompletions"] = ended + (1 if attempt else 0)
    if "jobmaxretries" in ad:  # as dedit may have changed it since the submit
        ad["jobmaxretries"] = job.spec.max_retries
    if attempt:
        signal = attempt.get("exit_signal")
        ad["exitbysignal"] = signal is not None
        if isinstance(signal, int):
            ad["exitsignal"] = signal
            ad.pop("exitcode", None)
        else:
            ad.pop("exitsignal", None)
    return ad


def _undefined(state: SchedulerState, job: Job, verdict: Verdict) -> None:
    """Log, once per job and attribute, that a policy gave no number."""
    key = ((job.cluster, job.proc), verdict.attribute)
    if key not in state.policies.warned:
        state.policies.warned.add(key)
        text = policies_of(job.spec.attributes).get(verdict.attribute.lower(), "")
        log.warning("job %s: %s = %s is neither true nor false: nothing done",
                    job.id, verdict.attribute, text)  # fmt: skip


def evaluate(state: SchedulerState, job: Job, **attempt: object) -> Verdict | None:
    """What ``job``'s policies decide now (with ``attempt``: as its attempt ends);
    None: nothing, or the job has no policy."""
    policies = policies_of(job.spec.attributes)
    if not policies:
        return None
    with evaluation_clock(state.clock):
        verdict = decide(policies, job_ad(state, job, **attempt), job.state, bool(attempt))
    if verdict is not None and verdict.action == "undefined":
        _undefined(state, job, verdict)
        return None
    return verdict


#: Jobs one unit evaluates at most: a pass over more goes on in the next rounds of
#: housekeeping (one a second), so that no unit holds the loop for long.
CHUNK = 1000


def policy_round(state: SchedulerState, now: float) -> None:
    """Housekeeping's part: begin a pass every ``policy_interval`` seconds, and
    evaluate the next :data:`CHUNK` jobs of the pass under way, as one unit."""
    index = state.policies
    if not index.pending:
        if not index.due(now, state.config.policy_interval):
            return
        index.last_pass, index.pending = now, index.listed()
    chunk, index.pending = index.pending[:CHUNK], index.pending[CHUNK:]
    if chunk:
        run_unit(state, "job policies", lambda: periodic_pass(state, chunk))


def periodic_pass(state: SchedulerState, keys: list[tuple[int, int]] | None = None) -> int:
    """Evaluate the periodic policies of the jobs ``keys`` (default: every job that
    has any): each job held, released or removed as they say. Returns how many moved."""
    moved = 0
    with state.store.transaction():
        for key in state.policies.listed() if keys is None else keys:
            job = state.jobs.active.get(key)
            if job is None:
                state.policies.forget(key)
                continue
            verdict = evaluate(state, job)
            if verdict is None:
                continue
            if verdict.action == "hold":
                hold(state, job, verdict.reason, verdict.code)
            elif verdict.action == "release":
                release(state, job, verdict.reason)
            else:
                remove(state, job, verdict.reason)
            log.info("job %s: %s (%s)", job.id, verdict.action, verdict.reason)
            moved += 1
    if moved:
        state.wake()
    return moved
