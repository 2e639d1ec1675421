"""A job's deferral time on the worker (worker_node/deferral.py): it starts then, not
before, and not once its window has passed."""

from __future__ import annotations

import threading
import time

from worker_node.deferral import deferral_of, wait_for_deferral


def test_the_deferral_of_a_job() -> None:
    assert deferral_of({"Rank": "Memory"}) is None
    assert deferral_of({"DeferralTime": "1800000000"}) == (1800000000.0, 0.0)
    attributes = {"deferraltime": "1800000000 + Delay", "Delay": "60", "DeferralWindow": "30"}
    assert deferral_of(attributes) == (1800000060.0, 30.0)
    assert deferral_of({"DeferralTime": '"soon"'}) is None


def test_a_job_waits_for_its_deferral_time() -> None:
    at = time.time() + 0.3
    changed = threading.Condition()
    assert wait_for_deferral({"DeferralTime": repr(at), "DeferralWindow": "60"}, changed,
                             lambda: False) is None  # fmt: skip
    assert time.time() >= at


def test_a_stopped_job_waits_no_more() -> None:
    changed = threading.Condition()
    stopped = threading.Event()
    result: list[str | None] = []
    waiter = threading.Thread(
        target=lambda: result.append(
            wait_for_deferral({"DeferralTime": repr(time.time() + 3600)}, changed, stopped.is_set)
        )
    )
    waiter.start()
    with changed:
        stopped.set()
        changed.notify_all()
    waiter.join(timeout=10)
    assert not waiter.is_alive() and result == [None]


def test_a_job_that_missed_its_window_does_not_start() -> None:
    changed = threading.Condition()
    attributes = {"DeferralTime": "1000", "DeferralWindow": "20"}
    missed = wait_for_deferral(attributes, changed, lambda: False, clock=lambda: 1021.0)
    assert missed is not None and missed.startswith("Job missed its deferred execution time")
    assert wait_for_deferral(attributes, changed, lambda: False, clock=lambda: 1020.0) is None
