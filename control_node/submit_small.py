"""A small cluster submitted in one request (:class:`~scheduler.protocol.SubmitSmall`):
a submit file that does not name ``$(Cluster)``, of at most :data:`FIRST_PART` jobs,
whose inputs all travel inline. The maps' clusters and ``client.submit(fn, ...)``'s
calls are such; anything else goes the one submit path of :mod:`control_node.submit`."""

from __future__ import annotations

import os
from pathlib import Path

from control_node.connection import Connection
from control_node.input_files import InputTrees
from control_node.submit import (
    FIRST_PART,
    Submission,
    _mentions_cluster,
    _read_small_files,
    _spec,
    _staged,
    parse_description,
)
from scheduler import protocol as p


def submit_small(
    conn: Connection, path: Path, cwd: str | None, await_end: bool = False
) -> Submission | None:
    """Submit the file ``path`` in one request (``await_end``: the scheduler pushes
    :class:`ClusterDone` once the cluster is done, with no request of its own), or
    return None, having sent nothing, when it is not small."""
    description = parse_description(path, None, 0, cwd, None)
    procs = description.procs
    if not procs or len(procs) > FIRST_PART or _mentions_cluster(path, None):
        return None
    trees = InputTrees()
    paths = list(dict.fromkeys(local for proc in procs for local, _ in _staged(proc, trees)))
    digests, inline = _read_small_files(paths)
    if len(digests) < len(paths):
        return None  # an input to upload
    reply = conn.request(
        p.SubmitSmall(
            submit_file=os.path.basename(path),
            jobs=p.shared_specs([_spec(proc, digests, trees) for proc in procs]),
            files=inline,
            await_end=await_end,
        )
    )
    assert isinstance(reply, p.Submitted)
    return Submission(reply.cluster, reply.job_ids, list(description.warnings) + reply.warnings)
