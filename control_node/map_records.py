"""What a map brings home: each item's :class:`Row` and :class:`ItemStats`, gathered
into :class:`MapResults`; the errors a map raises."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from control_node.connection import DfarmError


class RemoteError(DfarmError):
    """``fn`` raised an exception that could not be brought back as itself."""


class MapJobFailed(DfarmError):
    """A job of a map did not complete (held, removed, or its Python failed)."""


@dataclass(frozen=True)
class ItemStats:
    """Where and how long one item ran."""

    index: int
    job_id: str
    worker: str | None
    #: How many times the job was started (1 unless it was rerun).
    attempt: int
    #: When ``fn(item)`` started on the worker (seconds since the epoch), and for how long.
    started: float
    seconds: float
    #: ``fn(item)`` raised (kept in :attr:`MapResults.errors` with ``errors="keep"``).
    failed: bool = False


@dataclass
class Row:
    """One item's outcome, brought home."""

    item: Any
    value: Any
    stats: ItemStats
    #: The result met ``stop_when``.
    stop: bool = False
    #: What ``fn(item)`` raised, with ``errors="keep"``.
    error: BaseException | None = None
    #: The files ``fn(item)`` wrote in its working directory, saved here.
    files: dict[str, Path] = field(default_factory=dict)


class MapResults(dict[Any, Any]):
    """Results keyed by item, in the order of the iterable (keyed by position when
    the items are not hashable).

    ``stats`` says where and how long each item ran; ``files`` holds, for each item
    whose ``fn`` wrote files in its working directory, those files (name -> local
    path); ``errors`` what ``fn`` raised, with ``errors="keep"``. After ``stop_when``
    met a result: ``stopped_at`` is its item, ``hit`` the result, and ``not_run``
    the items that never ran (their jobs were removed).
    """

    def __init__(self) -> None:
        super().__init__()
        self.stats: list[ItemStats] = []
        self.files: dict[Any, dict[str, Path]] = {}
        self.errors: dict[Any, BaseException] = {}
        self.stopped_at: Any = None
        self.hit: Any = None
        self.not_run: list[Any] = []

    def totals(self) -> dict[str, Any]:
        """Items, failures, total and mean run time of ``fn``, overall and per worker."""
        by_worker: dict[str, list[ItemStats]] = {}
        for s in self.stats:
            by_worker.setdefault(s.worker or "-", []).append(s)
        return {
            **_totals(self.stats),
            "not_run": len(self.not_run),
            "per_worker": [{"worker": w, **_totals(found)} for w, found in by_worker.items()],
        }

    def save_stats(self, path: str | Path) -> None:
        """Write the totals (:meth:`totals`) and each item's ``stats`` as JSON."""
        report = {**self.totals(), "items_stats": [asdict(s) for s in self.stats]}
        Path(path).write_text(json.dumps(report, indent=2) + "\n")


def _totals(stats: list[ItemStats]) -> dict[str, Any]:
    total = sum(s.seconds for s in stats)
    return {
        "items": len(stats),
        "failures": sum(s.failed for s in stats),
        "total_seconds": round(total, 6),
        "mean_seconds": round(total / len(stats), 6) if stats else None,
    }


def collect(found: Iterable[Row]) -> MapResults:
    """Gather rows into :class:`MapResults`, in the order of the items."""
    rows = sorted(found, key=lambda row: row.stats.index)
    out = MapResults()
    try:
        keys = [row.item for row in rows]
        distinct = len(set(keys)) == len(keys)
    except TypeError:  # an unhashable item
        distinct = False
    if not distinct:
        keys = [row.stats.index for row in rows]
    for key, row in zip(keys, rows, strict=True):
        if row.error is not None:
            out.errors[key] = row.error
        else:
            out[key] = row.value
        if row.files:
            out.files[key] = row.files
    out.stats = [row.stats for row in rows]
    stopped = next((row for row in rows if row.stop), None)
    if stopped is not None:
        out.stopped_at, out.hit = stopped.item, stopped.value
    return out


def check_errors(errors: str) -> None:
    """Refuse (ValueError) an ``errors`` other than "raise" and "keep"."""
    if errors not in ("raise", "keep"):
        raise ValueError(f"errors must be 'raise' or 'keep', not {errors!r}")
