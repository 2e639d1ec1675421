"""The container runtimes a worker has: which work here, what images each runs, and
the machine attributes that say so (see :mod:`worker_node.containers` for running
a job with one).

- apptainer/singularity: ``.sif`` files, directories, registry references;
- podman (rootless): registry references and image tars (``podman save`` archives,
  or a root file system tar);
- docker (a reachable daemon): the docker universe, registry references, archives;
- bubblewrap: a root file system, as a directory or a tar.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["KINDS", "RUNTIMES", "Runtime", "describe", "detect", "runtime_attributes"]

#: The runtimes, in the default order of preference.
RUNTIMES = ("apptainer", "singularity", "podman", "docker", "bubblewrap")
#: What each runtime runs: registry references, .sif files, root file systems
#: (directories or tars), ``podman save``/``docker save`` archives.
KINDS = {
    "apptainer": {"registry", "sif", "directory"},
    "singularity": {"registry", "sif", "directory"},
    "podman": {"registry", "rootfs-tar", "archive"},
    "docker": {"registry", "archive", "docker"},
    "bubblewrap": {"directory", "rootfs-tar"},
}
_PROGRAMS = {"bubblewrap": "bwrap"}
_VERSION = re.compile(r"([0-9]+(?:\.[0-9]+)+)")


@dataclass(frozen=True)
class Runtime:
    """A container runtime that works on this worker."""

    name: str
    program: str
    version: str
    #: podman: the control groups it cannot use (cgroup v1, or v2 without delegation):
    #: it then needs explicit ``--ulimit`` values and cannot limit memory itself.
    no_cgroups: bool = False
    #: podman: its OCI runtime, named on each command when it is runc (podman's default
    #: is crun, which is then not installed).
    oci_runtime: str | None = None


def _version(run: Callable[[list[str]], str | None], program: str) -> str | None:
    out = run([program, "--version"])
    if out is None:
        return None
    m = _VERSION.search(out)
    return m[1] if m else out.strip()[:40]


def _run(argv: list[str], timeout: float = 20.0) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def detect(
    wanted: Sequence[str] | None = None,
    which: Callable[[str], str | None] = shutil.which,
    run: Callable[[list[str]], str | None] = _run,
    unused: list[str] | None = None,
) -> list[Runtime]:
    """The runtimes that work here, in the order of ``wanted`` (default
    :data:`RUNTIMES`): each is tried (docker: its daemon answers; bubblewrap: it can
    make a namespace; podman: ``podman info`` succeeds). Why each other one of
    ``wanted`` is not used is added to ``unused``."""
    found = []
    why = unused if unused is not None else []
    for name in wanted if wanted is not None else RUNTIMES:
        program = which(_PROGRAMS.get(name, name))
        if program is None:
            why.append(f"{name}: not used: not installed (no {_PROGRAMS.get(name, name)}"
                       " on the PATH)")  # fmt: skip
            continue
        if name == "docker":
            out = run([program, "version", "--format", "{{.Server.Version}}"])
            version = out.strip() if out else None
            if version:
                found.append(Runtime(name, program, version))
            else:
                why.append(
                    f"docker: not used: {program} is installed but no docker daemon answers"
                    " it (universe = docker jobs never match this worker)"
                )
            continue
        version = _version(run, program)
        if version is None:
            why.append(f"{name}: not used: {program} --version fails")
            continue
        if name == "bubblewrap":
            probe = [program, "--unshare-user", "--ro-bind", "/", "/", "--", "/bin/true"]
            if run(probe) is None:
                why.append(f"bubblewrap: not used: {program} cannot make a user namespace"
                           " (unprivileged user namespaces are off)")  # fmt: skip
                continue
            found.append(Runtime(name, program, version))
        elif name == "podman":
            info = run([program, "info", "--format", "json"])
            if info is None:
                why.append(f"podman: not used: {program} info fails")
                continue
            found.append(_podman(program, version, info))
        else:
            found.append(Runtime(name, program, version))
    return found


def _podman(program: str, version: str, info_json: str) -> Runtime:
    try:
        host = json.loads(info_json).get("host", {})
    except ValueError:
        host = {}
    controllers = host.get("cgroupControllers") or []
    # Asked as root, podman speaks of root's control groups: the accounts jobs run as
    # (rootless) may have none delegated, so a root worker never counts on them.
    no_cgroups = (
        host.get("cgroupVersion") != "v2" or "memory" not in controllers or os.geteuid() == 0
    )
    oci = (host.get("ociRuntime") or {}).get("name")
    return Runtime("podman", program, version, no_cgroups, "runc" if oci == "runc" else None)


def runtime_attributes(runtimes: Sequence[Runtime]) -> dict[str, bool | str]:
    """The machine attributes of ``runtimes``: ``HasContainer``, ``HasDocker``,
    ``HasSingularity``, ``HasApptainer``, ``HasPodman``, ``HasBubblewrap``, what images
    it runs (``HasDockerURL``, ``HasSIF``, ``HasSandboxImage``), ``ContainerRuntimes``
    and each one's version (``PodmanVersion`` ...)."""
    names = {r.name for r in runtimes}
    kinds = set().union(*(KINDS[r.name] for r in runtimes)) if runtimes else set()
    attrs: dict[str, bool | str] = {
        "HasContainer": bool(runtimes),
        "HasDocker": "docker" in names,
        "HasSingularity": bool(names & {"singularity", "apptainer"}),
        "HasApptainer": "apptainer" in names,
        "HasPodman": "podman" in names,
        "HasBubblewrap": "bubblewrap" in names,
        "HasDockerURL": "registry" in kinds,
        "HasSIF": "sif" in kinds,
        "HasSandboxImage": bool(kinds & {"directory", "rootfs-tar", "archive"}),
        "ContainerRuntimes": ",".join(r.name for r in runtimes),
    }
    for r in runtimes:
        label = "Singularity" if r.name in ("singularity", "apptainer") else r.name.capitalize()
        attrs.setdefault(f"{label}Version", r.version)
    return attrs


def describe(runtimes: Sequence[Runtime]) -> list[str]:
    """What ``dfarm doctor --worker`` says of the container runtimes here."""
    if not runtimes:
        return [
            "no container runtime works here: jobs that ask for a container never match"
            " this worker (install apptainer, podman, docker or bubblewrap; see"
            " docs/containers.md)"
        ]
    lines = []
    for r in runtimes:
        runs = ", ".join(sorted(KINDS[r.name]))
        line = f"{r.name} {r.version} ({r.program}): runs {runs} images"
        if r.name == "podman" and r.no_cgroups:
            line += (
                "; no cgroup v2 memory delegation to the accounts jobs run as: podman"
                " runs containers with explicit --ulimit values"
                + (" and --runtime runc" if r.oci_runtime else "")
                + "; request_memory is enforced by the worker, which measures the"
                " container's processes"
            )
        lines.append(line)
    return lines
