"""What a ``Client.map`` job runs on a worker: ``fn(item)`` for each item of its chunk.

    python -m control_node.map_runner FUNCTION.pkl CHUNK.pkl RESULT.pkl

The function and the chunk (a list of ``(index, item)``) were pickled by the
client with cloudpickle. Each item's outcome is written to RESULT.pkl as an
:class:`Outcome`, with the item itself (so that the results can be collected later
from the cluster alone) and the files ``fn(item)`` wrote in the working directory;
an exception in ``fn`` is caught and sent back with its traceback, so the job itself
still exits 0 and the other items of the chunk run.

Every item pays this module's start-up: it imports cloudpickle and the standard
library alone (no other module of ``control_node``, not even ``pathlib``);
tests/test_startup.py guards it.
"""

from __future__ import annotations

import base64
import linecache
import os
import sys
import time
import traceback
import types
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

#: Before a chunk's pickle (URL-safe base64) carried in its job's arguments.
CHUNK_ARG = "chunk:"
#: The start script of every job of a map (``dfarm-map.sh``); a worker with
#: ``--warm-map`` recognises a map's jobs by it (see :mod:`worker_node.warm_map`).
RUNNER = '#!/bin/sh\nexec "${DFARM_PYTHON:-python3}" -m control_node.map_runner "$@"\n'


@dataclass
class Outcome:
    """One item's result, or the exception ``fn`` raised for it."""

    index: int
    #: The result, pickled.
    value: bytes | None = None
    #: The exception, pickled (None if it could not be pickled), and its traceback.
    error: bytes | None = None
    error_text: str | None = None
    started: float = 0.0
    seconds: float = 0.0
    #: The item, pickled.
    item: bytes | None = None
    #: The files ``fn(item)`` wrote or changed in the working directory, by name.
    files: dict[str, bytes] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.error_text is not None


@dataclass
class Function:
    """The function to map, with the source of the file that defined it.

    cloudpickle names the code of a function pickled by value ``<dynamic-code>``,
    and the worker may not have the file anyway; the source travels with the
    function so a remote traceback still shows the lines that failed.
    """

    fn: Any
    filename: str = ""
    source: list[str] = field(default_factory=list)
    #: Each item is ``(args, kwargs)``, called as ``fn(*args, **kwargs)`` (``submit``).
    star: bool = False

    @classmethod
    def capture(cls, fn: Any, star: bool = False) -> Function:
        code = getattr(fn, "__code__", None)
        if code is None:
            return cls(fn, star=star)
        return cls(fn, code.co_filename, linecache.getlines(code.co_filename), star)

    def restore(self) -> Any:
        """The function, its code named after its file again, the file's lines in linecache."""
        fn = self.fn
        if self.filename and isinstance(fn, types.FunctionType):
            if self.source:
                size = sum(len(line) for line in self.source)
                linecache.cache[self.filename] = (size, None, self.source, self.filename)
            fn.__code__ = _renamed(fn.__code__, self.filename)
        return Star(fn) if self.star else fn


@dataclass
class Star:
    """``fn`` called with an item ``(args, kwargs)`` as its arguments."""

    fn: Any

    def __call__(self, item: tuple[tuple[Any, ...], dict[str, Any]]) -> Any:
        args, kwargs = item
        return self.fn(*args, **kwargs)


def _renamed(code: types.CodeType, filename: str) -> types.CodeType:
    consts = tuple(
        _renamed(c, filename) if isinstance(c, types.CodeType) else c for c in code.co_consts
    )
    return code.replace(co_filename=filename, co_consts=consts)


def run_chunk(
    fn: Any, chunk: list[tuple[int, Any]], workdir: str | None = None, keep: Collection[str] = ()
) -> list[Outcome]:
    """Apply ``fn`` to every item of ``chunk``, catching each item's exception; the files
    each item wrote in ``workdir`` (other than those named in ``keep``) go with its
    outcome and are taken away, so that the next item starts from a clean folder."""
    outcomes = []
    for index, item in chunk:
        before = _listing(workdir) if workdir is not None else {}
        outcome = Outcome(index, started=time.time(), item=cloudpickle.dumps(item))
        start = time.perf_counter()
        try:
            result = fn(item)
            outcome.seconds = time.perf_counter() - start
            outcome.value = cloudpickle.dumps(result)
        except Exception as exc:  # every failure of fn goes back to the caller
            outcome.seconds = outcome.seconds or time.perf_counter() - start
            outcome.error_text = "".join(traceback.format_exception(exc))
            try:
                outcome.error = cloudpickle.dumps(exc)
            except Exception:
                outcome.error = None
        if workdir is not None:
            outcome.files = _take_written(workdir, before, keep)
        outcomes.append(outcome)
    return outcomes


def _listing(folder: str) -> dict[str, tuple[int, int]]:
    """Size and modification time of each regular file at the top of ``folder``."""
    found = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_file(follow_symlinks=False):
                st = entry.stat(follow_symlinks=False)
                found[entry.name] = (st.st_size, st.st_mtime_ns)
    return found


def _take_written(
    folder: str, before: dict[str, tuple[int, int]], keep: Collection[str]
) -> dict[str, bytes]:
    """The files new or changed since ``before`` (not those in ``keep``), removed."""
    taken = {}
    for name, stamp in _listing(folder).items():
        if name in keep or before.get(name) == stamp:
            continue
        path = os.path.join(folder, name)
        with open(path, "rb") as f:
            taken[name] = f.read()
        os.unlink(path)
    return taken


def load_function(path: str) -> Any:
    """The function a map's FUNCTION.pkl holds, ready to call."""
    with open(path, "rb") as f:
        return cloudpickle.load(f).restore()


def inline_chunk(pickled: bytes) -> str:
    """A chunk's pickle as the CHUNK argument of its job (see :func:`run_files`)."""
    return CHUNK_ARG + base64.urlsafe_b64encode(pickled).decode()


def run_files(fn: Any, argv: list[str]) -> int:
    """Run ``fn`` on the chunk of ``argv`` (FUNCTION.pkl CHUNK RESULT.pkl, in the
    working directory: CHUNK is a file of the chunk's pickle, or the pickle itself
    after :data:`CHUNK_ARG`, URL-safe base64) and write its outcomes: the job's
    exit status."""
    _, chunk_arg, result_file = argv
    if chunk_arg.startswith(CHUNK_ARG):
        chunk = cloudpickle.loads(base64.urlsafe_b64decode(chunk_arg[len(CHUNK_ARG) :]))
    else:
        with open(chunk_arg, "rb") as f:
            chunk = cloudpickle.load(f)
    # An empty result while the items run: a job that dies in the middle of one
    # (a crash, a signal) ends with its exit status, which ``max_retries`` retries,
    # rather than held for a missing output file. The outcomes go in with one write
    # at the end: no second file and rename per job.
    with open(result_file, "wb") as out:
        outcomes = run_chunk(fn, chunk, os.getcwd(), {*argv, "dfarm-map.sh"})
        out.write(cloudpickle.dumps(outcomes))
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m control_node.map_runner FUNCTION.pkl CHUNK.pkl RESULT.pkl",
              file=sys.stderr)  # fmt: skip
        return 2
    return run_files(load_function(argv[0]), argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
