"""Python scripts without a ``#!`` line, the original toolkit's kind of job.

``executable = stats.py`` with no ``#!`` line cannot be executed by the kernel
("Exec format error"); such a script runs with the worker's Python for jobs
(``DFARM_PYTHON``, see :mod:`worker_node.job_python`), as ``python3 stats.py``.
"""

from __future__ import annotations

from pathlib import Path


def needs_python(path: Path) -> bool:
    """Whether ``path`` is a ``.py`` file that does not start with ``#!``."""
    if path.suffix != ".py":
        return False
    try:
        with path.open("rb") as f:
            return f.read(2) != b"#!"
    except OSError:
        return False  # exec says what is wrong with it


def command(exe: Path, arguments: list[str], python: str | None) -> list[str] | str:
    """The argv that runs ``exe`` with ``arguments`` (``python``: the interpreter for
    jobs, None when the job's account can run none); a reason when it cannot run."""
    if not needs_python(exe):
        return [str(exe), *arguments]
    if python is None:
        return (
            "it is a Python script without a '#!' line and this worker has no Python"
            " that the job's account can run (see the worker's --job-python)"
        )
    return [python, str(exe), *arguments]
