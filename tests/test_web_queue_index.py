"""The dashboard's index of the queue against a plain sort and filter of the same
jobs (and its blocks of sorted ids against a sorted list): every page of every
combination of owner, states, cluster, sort and order, walked to the end, is the
whole answer in order; places in line match the fair-share
queue's order; a failed unit's changes are undone."""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Callable

import pytest

from scheduler.job_records import Job
from scheduler.protocol import JobSpec, JobState
from scheduler.web import queue_index, sorted_keys
from scheduler.web.queue_index import STATES, Key, QueueIndex
from scheduler.web.sorted_keys import SortedKeys

ORDER = {"running": 0, "idle": 1, "held": 2}
SORT_KEYS: dict[str, Callable[[Job], tuple[object, ...]]] = {
    "id": lambda j: (j.cluster, j.proc),
    "state": lambda j: (ORDER[j.state.value], j.cluster, j.proc),
    "owner": lambda j: (j.owner, j.cluster, j.proc),
}


def _jobs(seed: int) -> list[Job]:
    rng = random.Random(seed)
    jobs = []
    for cluster in range(1, 25):
        owner = rng.choice("abc")
        for proc in range(rng.randint(1, 30)):
            state = rng.choice([JobState.IDLE, JobState.RUNNING, JobState.HELD])
            spec = JobSpec(executable="x", priority=rng.choice([0, 0, 1, -1]))
            jobs.append(Job(cluster, proc, owner, state, spec, submit_time=0.0))
    return jobs


def _expected(jobs: list[Job], owner: str | None, states: tuple[str, ...],
              cluster: int | None, sort: str, descending: bool) -> list[Key]:  # fmt: skip
    found = [
        j for j in jobs
        if j.state.value in states and owner in (None, j.owner) and cluster in (None, j.cluster)
    ]  # fmt: skip
    found.sort(key=SORT_KEYS[sort], reverse=descending)
    return [(j.cluster, j.proc) for j in found]


@pytest.mark.parametrize(("jump", "load"), [(64, 1000), (2, 4)])
def test_pages_walked_to_the_end_are_the_sorted_filtered_queue(
    jump: int, load: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(queue_index, "_JUMP", jump)  # skipping by walking and by search
    monkeypatch.setattr(sorted_keys, "LOAD", load)  # one block, or many
    rng = random.Random(7)
    jobs = _jobs(7)
    index = QueueIndex(jobs[:200])
    for job in jobs[200:]:  # submitted later
        index.changed(job)
    for job in rng.sample(jobs, 150):  # and changed: some leave the queue
        job.state = rng.choice(list(JobState))
        index.changed(job)
    assert len(index) == sum(1 for j in jobs if j.state.value in STATES)
    for owner, k, cluster, sort, descending in itertools.product(
        [None, "a"], [1, 2, 3], [None, 4], ["id", "state", "owner"], [False, True]
    ):
        for states in itertools.combinations(STATES, k):
            want = _expected(jobs, owner, states, cluster, sort, descending)
            for limit in (1, 7, 50):
                walked: list[Key] = []
                while True:
                    page = index.page(owner, states, cluster, sort, descending, len(walked), limit)
                    assert page.total == len(want)
                    if not page.keys:
                        break
                    assert len(page.keys) <= limit
                    walked += page.keys
                assert walked == want, (owner, states, cluster, sort, descending, limit)
            chunks = index.keys(owner, states, cluster, sort, descending)
            assert [key for chunk in chunks for key in chunk] == want


def test_a_jobs_own_jobs_ahead_follow_priority_then_id_even_after_an_edit() -> None:
    jobs = _jobs(3)
    index = QueueIndex(jobs)
    jobs[5].spec = JobSpec(executable="x", priority=9)  # dedit: no change of state
    for job in jobs:
        if job.state is JobState.IDLE:
            mine = (-job.spec.priority, job.cluster, job.proc)
            ahead = sum(
                1 for o in jobs
                if o.state is JobState.IDLE and o.owner == job.owner
                and (-o.spec.priority, o.cluster, o.proc) < mine
            )  # fmt: skip
            assert index.ahead_own(job) == ahead, job.id


def test_a_failed_units_changes_are_undone() -> None:
    undo: list[Callable[[], None]] = []
    jobs = _jobs(5)
    index = QueueIndex(jobs, undo.append)
    before = index.page(None, None, None, "state", False, 0, 10_000).keys
    for job in jobs[:40]:
        job.state = JobState.COMPLETED
        index.changed(job)
    assert index.page(None, None, None, "state", False, 0, 10_000).keys != before
    for step in reversed(undo):
        step()
    assert index.page(None, None, None, "state", False, 0, 10_000).keys == before


def test_sorted_keys_agree_with_a_sorted_list_across_blocks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sorted_keys, "LOAD", 4)  # many blocks, split and emptied
    rng = random.Random(11)
    keys = SortedKeys((1, i) for i in range(0, 60, 3))
    plain = sorted((1, i) for i in range(0, 60, 3))
    for _ in range(400):
        key = (rng.randint(0, 2), rng.randint(0, 60))
        if rng.random() < 0.5:
            if key not in plain:  # the index adds a job once
                keys.add(key)
                plain = sorted([*plain, key])
        else:
            keys.discard(key)
            plain = [k for k in plain if k != key]
        assert list(keys) == plain and len(keys) == len(plain)
        probe = (rng.randint(0, 2), rng.randint(0, 60))
        assert keys.bisect_left(probe) == bisect.bisect_left(plain, probe)
        assert keys.bisect_right(probe) == bisect.bisect_right(plain, probe)
        start, stop = sorted(rng.sample(range(len(plain) + 2), 2))
        assert keys.slice(start, stop) == plain[start:stop]
        if plain:
            i = rng.randrange(len(plain))
            assert keys[i] == plain[i]
