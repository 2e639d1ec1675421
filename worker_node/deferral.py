"""A job's ``deferral_time``, kept as HTCondor's starter keeps it: the job may be
matched up to ``DeferralPrepTime + ScheddInterval`` seconds early (its requirements
say so); its program starts at ``DeferralTime`` on the worker's clock, not before, and
not at all once ``DeferralTime + DeferralWindow`` has passed (the job is then held)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

from scheduler.matching.classad import ClassAdError, compile_expression
from scheduler.matching.job_ad import attribute_value

__all__ = ["deferral_of", "wait_for_deferral"]


def _number(attributes: Mapping[str, str], name: str) -> float | None:
    """The attribute ``name`` (any case) as a number, evaluated in the job's ad."""
    ad = {k.lower(): attribute_value(v) for k, v in attributes.items()}
    text = next((v for k, v in attributes.items() if k.lower() == name.lower()), None)
    if text is None:
        return None
    try:
        value = compile_expression(text).evaluate(ad)
    except ClassAdError:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def deferral_of(attributes: Mapping[str, str]) -> tuple[float, float] | None:
    """``(DeferralTime, DeferralWindow)`` of a job, None when it has no deferral time."""
    at = _number(attributes, "DeferralTime")
    if at is None:
        return None
    return at, _number(attributes, "DeferralWindow") or 0.0


def wait_for_deferral(
    attributes: Mapping[str, str],
    changed: threading.Condition,
    stopped: Callable[[], bool],
    clock: Callable[[], float] = time.time,
) -> str | None:
    """Wait (holding ``changed``'s lock only while waiting) until the job's deferral
    time, or until ``stopped()`` (signalled through ``changed``). Returns why the job
    must not start: it missed its window; None: start it now (or it was stopped)."""
    deferral = deferral_of(attributes)
    if deferral is None:
        return None
    at, window = deferral
    with changed:
        while not stopped() and (left := at - clock()) > 0:
            changed.wait(left)
    now = clock()
    if not stopped() and now > at + window:
        return (
            f"Job missed its deferred execution time: DeferralTime {at:.0f} with a window"
            f" of {window:.0f} s had passed when the worker got it ({now:.0f})"
        )
    return None
