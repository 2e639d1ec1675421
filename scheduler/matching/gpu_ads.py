"""A worker's GPUs as HTCondor advertises them: ``AvailableGPUs``, a list of one ad per
GPU (``Id``, ``DeviceName``, ``Capability``, ``GlobalMemoryMb`` and, where the driver
says, ``MaxSupportedVersion``), which ``require_gpus`` matches with ``countMatches``."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence

from scheduler.matching.classad import Value, compile_expression
from scheduler.protocol.records import GpuInfo

__all__ = ["available_gpus"]


def available_gpus(gpus: Sequence[GpuInfo], cuda_version: int | None = None) -> Value:
    """The ``AvailableGPUs`` list of a worker with ``gpus``; ``cuda_version``: the
    highest CUDA version its driver supports (``CUDAMaxSupportedVersion``)."""
    return _ads(tuple((g.index, g.name, g.memory_mb, g.capability) for g in gpus), cuda_version)


@functools.lru_cache(maxsize=256)
def _ads(gpus: tuple[tuple[int, str, int, float], ...], cuda_version: int | None) -> Value:
    ads = []
    for index, name, memory_mb, capability in gpus:
        fields = [f"Id = {json.dumps(f'GPU-{index}')}", f"DeviceName = {json.dumps(name)}"]
        fields.append(f"GlobalMemoryMb = {int(memory_mb)}")
        if capability:
            fields.append(f"Capability = {float(capability)!r}")
        if cuda_version:
            fields.append(f"MaxSupportedVersion = {int(cuda_version)}")
        ads.append("[" + "; ".join(fields) + "]")
    return compile_expression("{" + ", ".join(ads) + "}").evaluate()
