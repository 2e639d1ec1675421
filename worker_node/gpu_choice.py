"""Which of a worker's free GPUs a job gets: those its ``RequireGPUs`` accepts first
(evaluated in each GPU's ad, as the scheduler's ``countMatches`` counted them), so that a
job that asked for a capable GPU does not get the other one of a mixed machine."""

from __future__ import annotations

from collections.abc import Sequence

from scheduler.matching.classad import ClassAdError, Record, compile_expression
from scheduler.matching.gpu_ads import available_gpus
from scheduler.matching.job_ad import job_ad
from scheduler.protocol import GpuInfo, JobSpec

__all__ = ["choose_gpus"]


def choose_gpus(free: Sequence[int], spec: JobSpec, gpus: Sequence[GpuInfo]) -> list[int]:
    """``spec.request_gpus`` device indices out of ``free``: those whose ad satisfies the
    job's ``RequireGPUs`` first, then the others, each in the order of ``free``."""
    wanted = spec.request_gpus
    require = next((t for n, t in spec.attributes.items() if n.lower() == "requiregpus"), None)
    if not require or not gpus:
        return list(free[:wanted])
    try:
        expression = compile_expression(require)
    except ClassAdError:
        return list(free[:wanted])
    job = job_ad(spec)
    ads = {g.index: ad for g, ad in zip(gpus, available_gpus(gpus), strict=True)}  # type: ignore[arg-type]

    def accepted(index: int) -> bool:
        ad = ads.get(index)
        return isinstance(ad, Record) and expression.evaluate(ad.bound(job), {}) is True

    ordered = sorted(free, key=lambda index: not accepted(index))  # stable
    return ordered[:wanted]
