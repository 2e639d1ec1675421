"""Messages of self-checkpointing jobs; registered like every other message type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from scheduler.protocol.messages import WORKER, Message
from scheduler.protocol.records import CheckpointFile

__all__ = ["Checkpointed"]


# worker -> scheduler --------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Checkpointed(Message):
    """An attempt exited with its ``checkpoint_exit_code`` and its checkpoint files
    are uploaded as ``file``. Answered by :class:`Ok` once the checkpoint is
    verified and committed as the job's latest; only then does the worker start
    the job again (or, when ``vacating``, give the attempt back: it was asked to
    checkpoint because its worker drains)."""

    type: ClassVar[str] = "checkpointed"
    roles = WORKER
    job_id: str
    attempt: int
    file: CheckpointFile
    #: Seconds the attempt's run lasted up to this checkpoint.
    wall_time: float = 0.0
    vacating: bool = False
