"""What a worker knows about its machine: cores, memory, disk, load and GPUs."""

from __future__ import annotations

import logging
import os
import platform
import re
import shutil
import socket
import subprocess
from pathlib import Path

import psutil

from scheduler.protocol import GpuInfo, WorkerMetrics
from worker_node import machine_attributes
from worker_node.machine_attributes import Scalar

log = logging.getLogger(__name__)


def detect_gpus(nvidia_smi: str | None = None) -> list[GpuInfo]:
    """NVIDIA GPUs as ``nvidia-smi`` lists them; none when it is absent or fails."""
    exe = nvidia_smi or shutil.which("nvidia-smi")
    if not exe:
        return []
    failure: Exception | None = None
    # compute_cap is known to drivers since 510; an older one refuses the query.
    for fields in ("index,name,memory.total,compute_cap", "index,name,memory.total"):
        try:
            out = subprocess.run(
                [exe, f"--query-gpu={fields}", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=20,
                check=True,
            ).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            failure = exc
            continue
        return parse_nvidia_smi(out)
    log.warning("nvidia-smi failed, reporting no GPUs: %s", failure)
    return []


#: The highest CUDA version the driver supports, in ``nvidia-smi``'s header.
_CUDA_VERSION = re.compile(r"CUDA Version:\s*([0-9]+)\.([0-9]+)")


def cuda_max_supported_version(nvidia_smi: str | None = None) -> int | None:
    """HTCondor's ``CUDAMaxSupportedVersion``: the highest CUDA version the driver
    supports, as the driver gives it (12.2 is 12020), from ``nvidia-smi``'s "CUDA
    Version"; None without nvidia-smi or that line."""
    exe = nvidia_smi or shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run([exe], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_cuda_version(out)


def parse_cuda_version(text: str) -> int | None:
    """``CUDA Version: 12.2`` in ``nvidia-smi``'s output as 12020 (None: absent)."""
    m = _CUDA_VERSION.search(text)
    return int(m[1]) * 1000 + int(m[2]) * 10 if m else None


def parse_nvidia_smi(text: str) -> list[GpuInfo]:
    """Parse ``index, name, memory.total[, compute_cap]`` CSV lines (units: MiB)."""
    gpus = []
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) not in (3, 4):
            continue
        try:
            capability = float(fields[3]) if len(fields) == 4 else 0.0
        except ValueError:
            capability = 0.0  # "[N/A]"
        try:
            gpus.append(
                GpuInfo(
                    index=int(fields[0]),
                    name=fields[1],
                    memory_mb=int(float(fields[2])),
                    capability=capability,
                )
            )
        except ValueError:
            log.warning("unexpected nvidia-smi line: %r", line)
    return gpus


class Sampler:
    """Reads fresh metrics on each call; GPUs are detected once, at start."""

    def __init__(
        self,
        disk_path: Path,
        gpus: list[GpuInfo] | None = None,
        attributes: dict[str, Scalar] | None = None,
    ):
        self.disk_path = disk_path
        self.gpus = detect_gpus() if gpus is None else gpus
        #: Machine attributes advertised as they are (see ``worker_node.machine_attributes``).
        self.attributes = machine_attributes.detect() if attributes is None else attributes
        if attributes is None and self.gpus:
            cuda = cuda_max_supported_version()
            if cuda is not None:
                self.attributes.setdefault("CUDAMaxSupportedVersion", cuda)
        self.cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
        self.threads = psutil.cpu_count(logical=True) or self.cores
        self.hostname = socket.gethostname()
        #: Reported as is: how the worker ends its jobs' processes.
        self.process_tracking = ""
        #: Reported as is: how the worker starts jobs (see ``WorkerMetrics.job_start``).
        self.job_start = ""

    def sample(self) -> WorkerMetrics:
        mem = psutil.virtual_memory()
        disk = psutil.disk_usage(str(self.disk_path))
        return WorkerMetrics(
            cores=self.cores,
            threads=self.threads,
            memory_total_mb=mem.total // 2**20,
            memory_available_mb=mem.available // 2**20,
            disk_total_mb=disk.total // 2**20,
            disk_free_mb=disk.free // 2**20,
            load_avg=[round(x, 2) for x in os.getloadavg()],
            gpus=list(self.gpus),
            os=platform.system(),
            arch=platform.machine(),
            hostname=self.hostname,
            process_tracking=self.process_tracking,
            job_start=self.job_start,
            attributes=self.attributes,
        )
