"""The Python that ``Client.map`` jobs run with (``DFARM_PYTHON``).

By default it is the worker's own. A worker running as root runs jobs as other
accounts (see :mod:`worker_node.identity`), which cannot use an interpreter that
lives in a private folder (a pyenv or a virtualenv under ``/root``). Then, unless
``--job-python`` names one, the worker writes a launcher into its work folder: the
system's Python of the same version, with this worker's packages on its path.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import stat
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def reachable_by_others(path: Path, read: bool = True) -> bool:
    """Whether any account may reach ``path`` through its folders (and read it)."""
    try:
        real = path.resolve()
        modes = [os.stat(folder).st_mode for folder in (real, *real.parents)]
    except OSError:
        return False
    mine = stat.S_IROTH if read else stat.S_IXOTH
    return all(mode & stat.S_IXOTH for mode in modes[1:]) and bool(modes[0] & mine)


def _package_paths() -> list[Path]:
    """Folders this worker imports from, beyond the standard library: its
    site-packages and the folder holding dfarm itself (editable installs)."""
    # Found, not imported: importing the client would cost the worker's start.
    spec = importlib.util.find_spec("control_node")
    assert spec is not None and spec.origin is not None
    base = Path(sys.base_prefix).resolve()
    paths = [Path(spec.origin).resolve().parents[1]]
    for entry in sys.path:
        path = Path(entry).resolve() if entry else None
        if path and path.is_dir() and not path.is_relative_to(base) and path not in paths:
            paths.append(path)
    return paths


def own_python_reachable() -> bool:
    """Whether every account may run the worker's own interpreter."""
    return reachable_by_others(Path(sys.executable)) and reachable_by_others(Path(sys.base_prefix))


def job_python(work_dir: Path, privileged: bool) -> str | None:
    """The interpreter for ``Client.map`` jobs (and a root worker's launchers): the
    worker's own when job accounts can run it; None when they can run none."""
    if not privileged or own_python_reachable():
        return sys.executable
    paths = _package_paths()
    # Named by its version (python3.11), so that compiled packages fit it.
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidate = shutil.which(version, path="/usr/local/bin:/usr/bin:/bin")
    if candidate and not reachable_by_others(Path(candidate)):
        candidate = None
    if candidate is None or not all(reachable_by_others(p) for p in paths):
        log.warning(
            "jobs run as other accounts cannot run %s: Client.map jobs will fail here; "
            "give --job-python a Python %s with dfarm's packages that all accounts can run",
            sys.executable,
            version,
        )
        return None
    launcher = work_dir / "job-python"
    pythonpath = ":".join(str(p) for p in paths)
    launcher.write_text(f'#!/bin/sh\nPYTHONPATH={pythonpath} exec {candidate} "$@"\n')
    launcher.chmod(0o755)
    log.info("Client.map jobs run %s with this worker's packages (%s)", candidate, launcher)
    return str(launcher)
