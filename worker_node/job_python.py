"""The Python that ``Client.map`` jobs and a root worker's launchers run with
(``DFARM_PYTHON``).

By default it is the worker's own. A worker running as root runs jobs as other
accounts (see :mod:`worker_node.identity`), which cannot use an interpreter or
packages that live in a private folder (a pyenv, a virtualenv or a clone under
``/root``). Then, unless ``--job-python`` names one, the worker builds a runtime
in its work folder that every account can read: the packages it cannot share
(dfarm's own and its site-packages) are mirrored there, hard-linked where the
file system allows it, else copied; the interpreter is the system's Python of the
same version, or a mirror of the worker's own. ``<work>/job-python`` starts it
with those packages on its path.
"""

from __future__ import annotations

import compileall
import importlib.util
import logging
import os
import shlex
import shutil
import stat
import sys
import sysconfig
import time
from pathlib import Path

log = logging.getLogger(__name__)

#: dfarm's own packages (what a runtime mirrors of a clone, never the whole clone).
DFARM_PACKAGES = ("control_node", "worker_node", "scheduler")
#: Parts of the standard library a job never needs, left out of a mirrored interpreter.
STDLIB_SKIPPED = ("test", "idlelib", "tkinter", "turtledemo", "ensurepip", "site-packages")


def reachable_by_others(path: Path, read: bool = True) -> bool:
    """Whether any account may reach ``path`` through its folders (and read it)."""
    try:
        real = path.resolve()
        modes = [os.stat(folder).st_mode for folder in (real, *real.parents)]
    except OSError:
        return False
    mine = stat.S_IROTH if read else stat.S_IXOTH
    return all(mode & stat.S_IXOTH for mode in modes[1:]) and bool(modes[0] & mine)


def _source_folder() -> Path:
    """The folder holding dfarm's packages (a clone, for an editable install)."""
    # Found, not imported: importing the client would cost the worker's start.
    spec = importlib.util.find_spec("control_node")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).resolve().parents[1]


def _package_paths() -> list[Path]:
    """Folders this worker imports from, beyond the standard library: the folder
    holding dfarm itself, then its site-packages."""
    stdlib = {Path(sysconfig.get_path(name)).resolve() for name in ("stdlib", "platstdlib")}
    paths = [_source_folder()]
    for entry in sys.path:
        path = Path(entry).resolve() if entry else None
        if path is None or not path.is_dir() or path in paths:
            continue
        # The standard library (lib-dynload below it too), but not site-packages.
        if not any(path.is_relative_to(lib) and path.name != "site-packages" for lib in stdlib):
            paths.append(path)
    return paths


def own_python_reachable() -> bool:
    """Whether every account may run the worker's own interpreter with its packages."""
    return (
        reachable_by_others(Path(sys.executable))
        and reachable_by_others(Path(sys.base_prefix))
        and all(reachable_by_others(path) for path in _package_paths())
    )


def job_python(work_dir: Path, privileged: bool, system_path: str | None = None) -> str | None:
    """The interpreter for ``Client.map`` jobs and a root worker's launchers: the
    worker's own when job accounts can run it, else a runtime made for them in
    ``work_dir`` (``system_path``: where to look for a system Python); None when
    none could be made (the reason is logged)."""
    if not privileged or own_python_reachable():
        return sys.executable
    runtime = work_dir / "runtime"
    try:
        return str(_build_runtime(runtime, work_dir / "job-python", system_path))
    except OSError as exc:
        shutil.rmtree(runtime, ignore_errors=True)  # a copy cut short (a full disk) goes
        log.warning(
            "jobs run as other accounts cannot run %s, and no copy of it could be made in "
            "%s (%s): Client.map jobs will fail here; give --job-python a Python %d.%d "
            "with dfarm's packages that all accounts can run",
            sys.executable,
            runtime,
            exc,
            *sys.version_info[:2],
        )
        return None


def _build_runtime(runtime: Path, script: Path, system_path: str | None) -> Path:
    """Mirror what job accounts cannot reach into ``runtime``; write ``script``,
    which runs the interpreter with the packages on its path."""
    began = time.monotonic()
    shutil.rmtree(runtime, ignore_errors=True)
    runtime.mkdir(mode=0o755)
    runtime.chmod(0o755)  # whatever the umask
    python, libdir = _interpreter(runtime, system_path)
    paths = []
    for index, path in enumerate(_package_paths()):
        if reachable_by_others(path):
            paths.append(path)
        elif index == 0:  # dfarm's own folder: its packages only
            target = runtime / "dfarm"
            target.mkdir(mode=0o755)
            for name in DFARM_PACKAGES:
                _mirror(path / name, target / name)
            # Compiled once here: job accounts cannot write __pycache__ in the mirror.
            compileall.compile_dir(target, quiet=1)
            paths.append(target)
        elif path.name in ("site-packages", "dist-packages"):
            paths.append(_mirror(path, runtime / f"site-{index}"))
        # else a folder such as the worker's working directory: left out
    env = f"PYTHONPATH={shlex.quote(':'.join(map(str, paths)))}"
    if libdir is not None:
        env += f" LD_LIBRARY_PATH={shlex.quote(str(libdir))}"
    script.write_text(f'#!/bin/sh\n{env} exec {shlex.quote(str(python))} "$@"\n')
    script.chmod(0o755)
    log.info(
        "jobs cannot reach %s: they and the launchers run %s with the worker's packages (%s,"
        " made in %.1f s)",
        sys.executable,
        python,
        script,
        time.monotonic() - began,
    )
    return script


def _interpreter(runtime: Path, system_path: str | None) -> tuple[Path, Path | None]:
    """An interpreter of this Python's version that job accounts can run: the
    system's, else a mirror of this one in ``runtime``; and the folder of its
    shared library when it needs one found for it."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    if reachable_by_others(Path(sys.executable).resolve()) and reachable_by_others(
        Path(sys.base_prefix)
    ):
        return Path(sys.executable), None
    found = shutil.which(version, path=system_path or "/usr/local/bin:/usr/bin:/bin")
    if found and reachable_by_others(Path(found)):
        return Path(found), None
    base = Path(sys.base_prefix).resolve()
    target = runtime / "python"
    (target / "bin").mkdir(mode=0o755, parents=True)
    _link_or_copy(Path(sys._base_executable).resolve(), target / "bin" / version)  # type: ignore[attr-defined]
    _mirror(base / "lib" / version, target / "lib" / version, STDLIB_SKIPPED)
    libdir = None
    for library in (base / "lib").glob(f"lib{version}*.so*"):
        _link_or_copy(library, target / "lib" / library.name)
        libdir = target / "lib"
    return target / "bin" / version, libdir


def _mirror(source: Path, target: Path, skipped: tuple[str, ...] = ()) -> Path:
    """``source``'s tree at ``target``: its files hard-linked (copied across file
    systems), folders readable by all."""
    shutil.copytree(
        source,
        target,
        symlinks=True,
        ignore=shutil.ignore_patterns(*skipped) if skipped else None,
        copy_function=_link_or_copy,
        dirs_exist_ok=True,
    )
    for folder, _, _ in os.walk(target):
        os.chmod(folder, 0o755)
    return target


def _link_or_copy(source: str | Path, target: str | Path) -> None:
    """A hard link (same file, same mode), or a copy with the same mode."""
    try:
        os.link(source, target)
    except OSError:  # another file system, or links refused
        shutil.copy2(source, target)
