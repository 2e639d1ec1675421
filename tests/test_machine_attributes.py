"""The machine attributes a worker advertises: its operating system by HTCondor's
names, its container runtimes, its GPUs' CUDA capability, and its administrator's
(``[attributes]`` in worker.toml); and how they reach ``requirements``."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from conftest import write

from scheduler.matching.capacity import machine_ad
from scheduler.matching.requirements import compile_requirements
from scheduler.node_setup import config_file
from scheduler.protocol import WorkerMetrics
from worker_node.machine_attributes import (
    detect,
    os_attributes,
    parse_assignments,
    runtime_attributes,
)
from worker_node.metrics import parse_nvidia_smi

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from worker_node.__main__ import build_parser as worker_parser

UBUNTU = 'NAME="Ubuntu"\nVERSION_ID="22.04"\nID=ubuntu\nPRETTY_NAME="Ubuntu 22.04.4 LTS"\n'
ALMA = 'NAME="AlmaLinux"\nVERSION_ID="9.3"\nID="almalinux"\nPRETTY_NAME="AlmaLinux 9.3"\n'
RHEL = 'NAME="Red Hat Enterprise Linux"\nVERSION_ID="8.9"\nID="rhel"\n'
DEBIAN = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nVERSION_ID="12"\nID=debian\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (UBUNTU, {"OpSysName": "Ubuntu", "OpSysMajorVer": 22, "OpSysVer": 2204,
                  "OpSysAndVer": "Ubuntu22", "OpSysLongName": "Ubuntu 22.04.4 LTS"}),
        (ALMA, {"OpSysName": "AlmaLinux", "OpSysMajorVer": 9, "OpSysAndVer": "AlmaLinux9"}),
        (RHEL, {"OpSysName": "RedHat", "OpSysVer": 809, "OpSysAndVer": "RedHat8"}),
        (DEBIAN, {"OpSysName": "Debian", "OpSysVer": 1200, "OpSysAndVer": "Debian12"}),
        ("", {"OpSys": "LINUX"}),
    ],
)  # fmt: skip
def test_operating_system_as_htcondor_names_it(text: str, expected: dict[str, object]) -> None:
    attrs = os_attributes(text)
    assert attrs["OpSys"] == "LINUX"
    assert {k: attrs.get(k) for k in expected} == expected


def test_container_runtimes_are_found_on_the_path() -> None:
    found = {"apptainer": "/usr/bin/apptainer"}
    assert runtime_attributes(found.get) == {
        "HasDocker": False,
        "HasSingularity": False,
        "HasApptainer": True,
    }


def test_administrator_attributes_are_classad_literals(tmp_path: Path) -> None:
    assert parse_assignments(["HasCVMFS=true", 'Site="lab"', "Slots=4", "Speed=1.5", "Zone=a"]) == {
        "HasCVMFS": True, "Site": "lab", "Slots": 4, "Speed": 1.5, "Zone": "a",
    }  # fmt: skip
    for bad in ("=1", "9x=1", "NoValue"):
        with pytest.raises(ValueError, match="expected NAME=VALUE"):
            parse_assignments([bad])
    toml = write(
        tmp_path / "worker.toml",
        'scheduler = "head:7070"\n[attributes]\nHasCVMFS = true\nSite = "lab"\nRack = 7\n',
    )
    args, _ = config_file.load(worker_parser(), ["--config", str(toml)], "worker", {})
    extra = parse_assignments(args.attributes)
    assert extra == {"HasCVMFS": True, "Site": "lab", "Rack": 7}
    release = write(tmp_path / "os-release", UBUNTU)
    attrs = detect({"OpSysAndVer": "EL9", **extra}, release)
    assert (attrs["OpSysAndVer"], attrs["OpSysName"], attrs["Site"]) == ("EL9", "Ubuntu", "lab")
    assert isinstance(attrs["HasDocker"], bool)


def test_gpus_capability_and_memory_reach_requirements() -> None:
    gpus = parse_nvidia_smi("0, NVIDIA A100-SXM4-40GB, 40960, 8.0\n1, NVIDIA T4, 15360, 7.5\n")
    assert [g.capability for g in gpus] == [8.0, 7.5]
    assert parse_nvidia_smi("0, Old GPU, 1024\n")[0].capability == 0.0
    metrics = WorkerMetrics(
        cores=8, threads=16, memory_total_mb=65536, memory_available_mb=60000,
        disk_total_mb=10**6, disk_free_mb=10**5, load_avg=[0.5], gpus=gpus, os="Linux",
        arch="x86_64", hostname="gpu1.example.org",
        attributes={"OpSysAndVer": "Ubuntu22", "HasDocker": True, "Cpus": 999},
    )  # fmt: skip
    ad = machine_ad("gpu1", 4, 16, 65536, 2, metrics)
    assert (ad["cudacapability"], ad["cudaglobalmemorymb"], ad["cpus"]) == (7.5, 15360, 16)
    rule = compile_requirements(
        'CUDACapability >= 7.5 && GPUs >= 2 && Gpus == TotalGPUs && OpSysAndVer == "ubuntu22"'
        ' && HasDocker && Arch == "X86_64" && CUDAGlobalMemoryMb > RequestMemory'
    )
    assert rule.matches(ad, {"requestmemory": 2048})
    assert not rule.matches(ad, {"requestmemory": 20000})
    plain = machine_ad("cpu1", 5, 4, 8192, 0, WorkerMetrics(
        cores=4, threads=4, memory_total_mb=8192, memory_available_mb=8000, disk_total_mb=1,
        disk_free_mb=1, load_avg=[0.0]))  # fmt: skip
    assert "cudacapability" not in plain
    assert compile_requirements("isUndefined(CUDACapability) && GPUs == 0").matches(plain)
