"""A job's ``rank``: how much it prefers one worker to another (HTCondor's ``Rank``).

The expression is the job attribute ``Rank`` (the submit key ``rank``), evaluated
with the job as MY and a worker as TARGET (:func:`.requirements.rank_value`): a
higher value is a better worker, anything not a number counts as 0.0. Most jobs
have none, so whether a job has one is looked up once per spec (the procs of a
cluster share theirs) and kept on it, as the wire form keeps its text.
"""

from __future__ import annotations

from typing import Any

__all__ = ["rank_of"]

_UNSET: Any = object()


def rank_of(spec: Any) -> str | None:
    """The text of the spec's ``Rank`` attribute (its name in any case), or None."""
    kept = getattr(spec, "__dict__", None)
    if kept is None:  # a record without a __dict__: nothing to keep it on
        kept = {}
    rank: str | None = kept.get("_rank", _UNSET)
    if rank is _UNSET:
        rank = None
        for name, text in spec.attributes.items():
            if name.lower() == "rank" and str(text).strip():
                rank = str(text)
        kept["_rank"] = rank
    return rank
