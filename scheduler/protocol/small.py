"""A small submission in one request: a cluster reserved, its jobs queued (their
inputs inline) and its end awaited, where :class:`NewCluster`, :class:`SubmitJobs`
and :class:`AwaitClusters` take three round trips. ``Client.map`` and
``client.submit(fn, ...)`` send their small clusters so."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from scheduler.protocol.messages import CONTROL, Message
from scheduler.protocol.records import JobSpec

__all__ = ["SubmitSmall"]


@dataclass(frozen=True, kw_only=True)
class SubmitSmall(Message):
    """Reserve a cluster and queue these jobs in it at once, as one whole part whose
    inputs are all in ``files`` (sha256 -> base64); answered by :class:`Submitted`.
    ``await_end``: push :class:`ClusterDone` once the cluster is done, as
    :class:`AwaitClusters` would, registered before any job can end; for a cluster
    of one job it carries the job's results when they all came inline."""

    type: ClassVar[str] = "submit_small"
    roles = CONTROL
    submit_file: str
    jobs: list[JobSpec]
    files: dict[str, str] = field(default_factory=dict)
    await_end: bool = False
