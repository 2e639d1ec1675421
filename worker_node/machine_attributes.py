"""The machine attributes a worker advertises, by HTCondor's names: its operating system
(``OpSysAndVer`` ...), its container runtimes (``HasContainer``, ``HasDocker`` ...: see
:mod:`worker_node.container_runtimes`) and those its
administrator adds (``[attributes]`` in ``worker.toml``, or ``--attributes NAME=VALUE``).
"""

from __future__ import annotations

import platform
import re
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from scheduler.matching.classad import ClassAdError, Record, Special, compile_expression
from worker_node import container_runtimes, url_inputs

__all__ = ["Scalar", "detect", "os_attributes", "parse_assignments", "runtime_attributes"]

#: An attribute value a worker can advertise.
Scalar = bool | int | float | str

#: ``ID`` of /etc/os-release -> HTCondor's ``OpSysName``.
_OS_NAMES = {
    "ubuntu": "Ubuntu", "debian": "Debian", "centos": "CentOS", "rhel": "RedHat",
    "rocky": "Rocky", "almalinux": "AlmaLinux", "fedora": "Fedora", "scientific": "SL",
    "opensuse-leap": "openSUSE", "sles": "SLES", "amzn": "AmazonLinux", "ol": "OracleLinux",
    "arch": "ArchLinux", "alpine": "Alpine", "linuxmint": "LinuxMint",
}  # fmt: skip
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RUNTIMES = {"HasDocker": "docker", "HasSingularity": "singularity", "HasApptainer": "apptainer"}


def _os_release(text: str) -> dict[str, str]:
    fields = {}
    for line in text.splitlines():
        key, eq, value = line.strip().partition("=")
        if eq and key:
            fields[key] = value.strip().strip("\"'")
    return fields


def os_attributes(os_release: str, system: str = "Linux") -> dict[str, Scalar]:
    """``OpSys``, ``OpSysName``, ``OpSysMajorVer``, ``OpSysVer``, ``OpSysAndVer``,
    ``OpSysShortName`` and ``OpSysLongName`` from the text of /etc/os-release, as
    HTCondor forms them (Ubuntu 22.04: ``Ubuntu``, 22, 2204, ``Ubuntu22``)."""
    attrs: dict[str, Scalar] = {"OpSys": system.upper() or "LINUX"}
    fields = _os_release(os_release)
    distro = fields.get("ID", "").lower()
    if not distro:
        return attrs
    name = _OS_NAMES.get(distro) or (fields.get("NAME", distro).split() or [distro])[0]
    attrs["OpSysName"] = name
    attrs["OpSysShortName"] = name
    if fields.get("PRETTY_NAME"):
        attrs["OpSysLongName"] = fields["PRETTY_NAME"]
    numbers = re.findall(r"[0-9]+", fields.get("VERSION_ID", ""))
    if numbers:
        major = int(numbers[0])
        minor = int(numbers[1]) if len(numbers) > 1 else 0
        attrs["OpSysMajorVer"] = major
        attrs["OpSysVer"] = major * 100 + minor
        attrs["OpSysAndVer"] = f"{name}{major}"
    else:
        attrs["OpSysAndVer"] = name
    return attrs


def runtime_attributes(which: Callable[[str], str | None] = shutil.which) -> dict[str, Scalar]:
    """``HasDocker``, ``HasSingularity``, ``HasApptainer``: whether each runtime's
    program is on the worker's PATH."""
    return {attr: which(program) is not None for attr, program in _RUNTIMES.items()}


def parse_assignments(items: Iterable[str]) -> dict[str, Scalar]:
    """``NAME=VALUE`` items, each VALUE a ClassAd literal (``true``, ``42``, ``2.5``,
    ``"text"``); a bare word that is no literal is taken as a string. Raises
    ValueError naming the item."""
    out: dict[str, Scalar] = {}
    for item in items:
        name, eq, text = item.partition("=")
        name, text = name.strip(), text.strip()
        if not eq or not _NAME.fullmatch(name):
            raise ValueError(f"attribute {item!r}: expected NAME=VALUE")
        try:
            value = compile_expression(text).evaluate()
        except ClassAdError:
            value = text
        if isinstance(value, Special | tuple | Record):
            value = text
        out[name] = value
    return out


def detect(
    extra: Mapping[str, Scalar] | None = None,
    os_release: Path | None = None,
    runtimes: Sequence[container_runtimes.Runtime] | None = None,
) -> dict[str, Scalar]:
    """Everything this machine advertises besides its resources (``runtimes``: the
    container runtimes that work here, see :mod:`worker_node.container_runtimes`; None: those
    on the PATH); ``extra`` (the administrator's) wins over what is detected."""
    path = os_release or Path("/etc/os-release")
    try:
        text = path.read_text()
    except OSError:
        text = ""
    attrs = os_attributes(text, platform.system())
    if runtimes is None:
        attrs.update(runtime_attributes())
    else:
        attrs.update(container_runtimes.runtime_attributes(runtimes))
    attrs.update(url_inputs.ATTRIBUTES)  # the URL schemes it fetches
    attrs.update(extra or {})
    return attrs
