"""Submitting the jobs of a map: the function and each chunk of items pickled, one job
per chunk, in one cluster (a small one in one request)."""

from __future__ import annotations

import atexit
import itertools
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cloudpickle

from control_node.map_runner import RUNNER, Function, inline_chunk
from control_node.submit import FIRST_PART
from control_node.submit_small import submit_small

if TYPE_CHECKING:
    from control_node.client import Client

RESULT_FILE = "result.pkl"
#: Bytes of the largest chunk pickle carried in a job's arguments rather than a file.
INLINE_CHUNK = 384


def submit_chunks(
    client: Client,
    fn: Callable[[Any], Any],
    chunks: list[list[tuple[int, Any]]],
    resources: dict[str, str | int],
    star: bool = False,
    after: list[int] | None = None,
    await_end: bool = False,
) -> Any:
    """Submit one cluster of a map: a job per chunk of ``(index, item)`` (``star``:
    each item is ``(args, kwargs)`` of a call, ``Client.submit``). Chunks whose
    pickles are all small travel in the jobs' arguments (see :func:`inline_chunk`),
    others as a file per job. Its files are
    written to this process's :func:`scratch` folder under names of their own, and
    removed once submitted (their content is then in the spool). A small cluster
    goes in one request, which with ``await_end`` also awaits its end (the
    :class:`ClusterDone` is pushed with no request of its own)."""
    work = scratch()
    tag = f"{next(_submissions)}"
    written = [work / f"function-{tag}.pkl", work / f"{tag}.sub"]
    written[0].write_bytes(cloudpickle.dumps(Function.capture(fn, star)))
    pickled = [cloudpickle.dumps(chunk) for chunk in chunks]
    if all(len(data) <= INLINE_CHUNK for data in pickled):
        # Each job's items in its arguments: no file per job to store and stage.
        chunk_arg, inputs = "$(dfarm_chunk)", f"function-{tag}.pkl"
        queue = ["queue dfarm_chunk from (", *map(inline_chunk, pickled), ")"]
    else:
        chunk_arg = f"chunk-{tag}-$(Process).pkl"
        inputs = f"function-{tag}.pkl, {chunk_arg}"
        queue = [f"queue {len(chunks)}"]
        for n, data in enumerate(pickled):
            written.append(work / f"chunk-{tag}-{n}.pkl")
            written[-1].write_bytes(data)
    lines = [
        "executable = dfarm-map.sh",
        f"arguments = function-{tag}.pkl {chunk_arg} {RESULT_FILE}",
        f"transfer_input_files = {inputs}",
        f"transfer_output_files = {RESULT_FILE}",
        *(f"{key} = {value}" for key, value in resources.items()),
        *queue,
    ]
    written[1].write_text("\n".join(lines) + "\n")
    try:
        if not after and len(chunks) <= FIRST_PART:  # one request (its end pushed, unasked)
            small = submit_small(client.conn, written[1], str(work), await_end)
            if small is not None:
                return client.cluster_of(small.cluster, small.job_ids, small.warnings)
        return client.submit(written[1], cwd=str(work), after=after or [])
    finally:
        for path in written:
            path.unlink(missing_ok=True)


#: Numbers the submissions of this process (the names of their files).
_submissions = itertools.count()
_scratch: Path | None = None
_scratch_lock = threading.Lock()


def scratch() -> Path:
    """This process's folder for the files of its maps (made once, with the map's
    start script, and removed at exit): a folder made and removed for each map or
    call costs milliseconds on some file systems, each time."""
    global _scratch
    with _scratch_lock:
        if _scratch is None or not (_scratch / "dfarm-map.sh").is_file():
            _scratch = Path(tempfile.mkdtemp(prefix="dfarm-map-"))
            atexit.register(shutil.rmtree, _scratch, True)
            (_scratch / "dfarm-map.sh").write_text(RUNNER)
            (_scratch / "dfarm-map.sh").chmod(0o755)
        return _scratch
