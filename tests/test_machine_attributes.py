"""The machine attributes a worker advertises: its operating system by HTCondor's
names, its container runtimes, its GPUs' CUDA capability, and its administrator's
(``[attributes]`` in worker.toml); and how they reach ``requirements``."""

from __future__ import annotations

import time
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
from worker_node.metrics import parse_cuda_version, parse_nvidia_smi

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


NVIDIA_SMI_HEADER = (
    "+---------------------------------------------------------------+\n"
    "| NVIDIA-SMI 535.104.05   Driver Version: 535.104.05   CUDA Version: 12.2 |\n"
)


def gpu_worker(cuda: int | None = 12020) -> dict[str, object]:
    """The ad of a worker with an A100 (8.0, 40 GB) and a T4 (7.5, 15 GB)."""
    gpus = parse_nvidia_smi("0, NVIDIA A100-SXM4-40GB, 40960, 8.0\n1, NVIDIA T4, 15360, 7.5\n")
    attributes = {} if cuda is None else {"CUDAMaxSupportedVersion": cuda}
    metrics = WorkerMetrics(
        cores=8, threads=16, memory_total_mb=65536, memory_available_mb=60000,
        disk_total_mb=10**6, disk_free_mb=10**5, load_avg=[0.5], gpus=gpus, os="Linux",
        arch="x86_64", hostname="gpu1.example.org", attributes=attributes,
    )  # fmt: skip
    return machine_ad("gpu1", 4, 16, 65536, 2, metrics)


def derived_job(tmp_path: Path, lines: str) -> tuple[str, dict[str, object]]:
    """The requirements and job ad dsub makes of a submit file with these lines."""
    from control_node.submit_file import parse_submit_text
    from scheduler.matching.job_ad import job_ad

    write(tmp_path / "job.sh", "#!/bin/sh\n")
    text = f"executable = job.sh\n{lines}\nqueue\n"
    [proc] = parse_submit_text(text, filename="j.sub", cluster=1, cwd=str(tmp_path)).procs
    assert proc.requirements is not None
    return proc.requirements, job_ad(proc)


def test_the_driver_cuda_version_as_htcondor_advertises_it() -> None:
    assert parse_cuda_version(NVIDIA_SMI_HEADER) == 12020
    assert parse_cuda_version("No devices were found") is None


@pytest.mark.parametrize(
    ("lines", "matches"),
    [
        ("request_gpus = 1\nrequire_gpus = Capability >= 8.0 && GlobalMemoryMb >= 30000", True),
        ("request_gpus = 2\nrequire_gpus = Capability >= 7.5", True),
        ("request_gpus = 2\nrequire_gpus = Capability >= 8.0", False),  # one GPU only
        ("request_gpus = 1\ngpus_minimum_capability = 9.0", False),
        ("request_gpus = 1\ngpus_minimum_memory = 16G", True),
        ("request_gpus = 2\ngpus_minimum_memory = 16G", False),
        ("cuda_version = 12.1", True),
        ("cuda_version = 13", False),
    ],
)
def test_gpu_requests_match_each_gpus_ad(tmp_path: Path, lines: str, matches: bool) -> None:
    requirements, job = derived_job(tmp_path, lines)
    rule = compile_requirements(requirements, [k for k in job if isinstance(k, str)])
    assert rule.matches(gpu_worker(), job) is matches


def test_available_gpus_lists_each_gpu() -> None:
    [a100, t4] = gpu_worker()["availablegpus"]  # type: ignore[misc]
    assert compile_requirements("GlobalMemoryMb == 40960 && MaxSupportedVersion == 12020").matches(
        {}, a100
    )
    assert compile_requirements('DeviceName == "NVIDIA T4" && Capability == 7.5').matches({}, t4)
    assert "cudamaxsupportedversion" not in gpu_worker(cuda=None)


def test_a_custom_resource_matches_a_worker_that_advertises_it(tmp_path: Path) -> None:
    requirements, job = derived_job(tmp_path, "request_foo = 2")
    rule = compile_requirements(requirements, ["Requestfoo"])
    assert rule.matches({"foo": 4}, job)
    assert not rule.matches({"foo": 1}, job) and not rule.matches({}, job)


def test_no_worker_with_a_custom_resource_is_said(tmp_path: Path) -> None:
    from control_node.submit_file import parse_submit_text
    from scheduler.matching.capacity import Capacity, never_reasons

    write(tmp_path / "job.sh", "#!/bin/sh\n")
    text = "executable = job.sh\nrequest_foo = 2\nqueue\n"
    [proc] = parse_submit_text(text, filename="j.sub", cluster=1, cwd=str(tmp_path)).procs
    worker = Capacity(worker_id=1, name="w1", cpus=4, memory_mb=4096, gpus=0, disk_kb=10**6,
                      ad={"cpus": 4})  # fmt: skip
    fitting, reasons = never_reasons(proc, [worker])
    assert fitting == [] and reasons[0].startswith("no worker advertises the resource 'foo'")
    rich = Capacity(worker_id=2, name="w2", cpus=4, memory_mb=4096, gpus=0, disk_kb=10**6,
                    ad={"cpus": 4, "foo": 8})  # fmt: skip
    assert never_reasons(proc, [worker, rich]) == (["w2"], [])


def test_a_deferred_job_says_when_it_can_match(tmp_path: Path) -> None:
    from control_node.submit_file import parse_submit_text
    from scheduler.matching.capacity import Capacity, never_reasons

    write(tmp_path / "job.sh", "#!/bin/sh\n")
    worker = Capacity(worker_id=1, name="w1", cpus=4, memory_mb=4096, gpus=0, disk_kb=10**6,
                      ad={"cpus": 4, "hasjobdeferral": True})  # fmt: skip

    def reasons(deferral_time: int) -> list[str]:
        text = f"executable = job.sh\ndeferral_time = {deferral_time}\nqueue\n"
        [proc] = parse_submit_text(text, filename="j.sub", cluster=1, cwd=str(tmp_path)).procs
        return never_reasons(proc, [worker])[1]

    ahead = reasons(4102444800 + 600)  # 2100-01-01 00:10 UTC
    assert ahead[0] == (
        "its deferral_time is ahead: it can match from 2100-01-01 00:00:00 UTC"
        " (DeferralTime - DeferralPrepTime - ScheddInterval)"
    )
    assert reasons(1000)[0] == "its deferral_time and deferral_window have passed: it never matches"
    assert reasons(int(time.time()) + 60) == []  # it matches now, and waits on the worker


def test_a_job_gets_the_gpus_its_require_gpus_accepts() -> None:
    from scheduler.protocol import JobSpec
    from worker_node.gpu_choice import choose_gpus

    # GPU 0 a T4 (7.5, 15 GB), GPU 1 an A100 (8.0, 40 GB).
    gpus = parse_nvidia_smi("0, NVIDIA T4, 15360, 7.5\n1, NVIDIA A100-SXM4-40GB, 40960, 8.0\n")
    capable = {"RequireGPUs": "Capability >= GPUsMinCapability", "GPUsMinCapability": "8.0"}
    assert choose_gpus(
        [0, 1], JobSpec(executable="x", request_gpus=1, attributes=capable), gpus
    ) == [1]
    plain = JobSpec(executable="x", request_gpus=1)
    assert choose_gpus([0, 1], plain, gpus) == [0]
    two = JobSpec(executable="x", request_gpus=2, attributes=capable)
    assert choose_gpus([0, 1], two, gpus) == [1, 0]  # the scheduler counted enough
