"""What a ``Client.map`` job runs on a worker: ``fn(item)`` for each item of its chunk.

    python -m control_node.map_runner FUNCTION.pkl CHUNK.pkl RESULT.pkl

The function and the chunk (a list of ``(index, item)``) were pickled by the
client with cloudpickle. Each item's outcome is written to RESULT.pkl as an
:class:`Outcome`; an exception in ``fn`` is caught and sent back with its
traceback, so the job itself still exits 0 and the other items of the chunk run.
"""

from __future__ import annotations

import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any

import cloudpickle


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

    @property
    def failed(self) -> bool:
        return self.error_text is not None


def run_chunk(fn: Any, chunk: list[tuple[int, Any]]) -> list[Outcome]:
    """Apply ``fn`` to every item of ``chunk``, catching each item's exception."""
    outcomes = []
    for index, item in chunk:
        outcome = Outcome(index, started=time.time())
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
        outcomes.append(outcome)
    return outcomes


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m control_node.map_runner FUNCTION.pkl CHUNK.pkl RESULT.pkl",
              file=sys.stderr)  # fmt: skip
        return 2
    function_file, chunk_file, result_file = argv
    with open(function_file, "rb") as f:
        fn = cloudpickle.load(f)
    with open(chunk_file, "rb") as f:
        chunk = cloudpickle.load(f)
    outcomes = run_chunk(fn, chunk)
    with open(result_file, "wb") as f:
        cloudpickle.dump(outcomes, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
