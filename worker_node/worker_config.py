"""A worker daemon's settings (see :mod:`worker_node.daemon`), from its command line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from worker_node.container_runtimes import Runtime
from worker_node.identity import DEFAULT_RUN_AS
from worker_node.image_cache import DEFAULT_LIMIT


@dataclass(frozen=True, kw_only=True)
class WorkerConfig:
    #: Scheduler host and port.
    host: str
    port: int
    #: This worker's credential (``dfarm worker add``), or the pool secret where the
    #: scheduler allows it.
    secret: bytes
    #: This worker's name (unique in the pool).
    name: str
    #: Directory for sandboxes and the input cache.
    work_dir: Path
    #: Jobs run at once.
    slots: int
    #: CPUs, memory (MiB) and GPUs offered to jobs.
    cpus: int
    memory_mb: int
    gpus: int
    #: The device indices of those GPUs (default ``0 .. gpus-1``).
    gpu_ids: tuple[int, ...] = ()
    #: Longest wait between reconnection attempts, in seconds.
    max_backoff: float = 10.0
    #: Seconds a draining worker lets its jobs run before it gives them back.
    grace: float = 300.0
    #: When running as root: the account jobs of owners with no account here run as.
    run_as: str = DEFAULT_RUN_AS
    #: When running as root: slot N's jobs of owners with no account run as uid
    #: ``slot_uids + N`` instead of ``run_as`` (0: off).
    slot_uids: int = 0
    #: The Python ``Client.map`` jobs run with; None: this worker's own.
    job_python: str | None = None
    #: The scheduler's TLS certificate (SHA-256); None: plain TCP.
    tls_fingerprint: str | None = None
    #: Move files over FTP even where the spool's file system is shared.
    always_ftp: bool = False
    #: Run the jobs of a map in warm interpreters, forks of a launcher (see
    #: worker_node.warm_map); False: each in a new Python.
    warm_map: bool = True
    #: A warm interpreter's most jobs, and its most seconds without one.
    warm_map_items: int = 1000
    warm_map_idle: float = 60.0
    #: Bytes the work directory's file system must keep free; below, the disk is
    #: full: the worker takes no job, and an attempt that ends so fails.
    min_free_space: int = 64 * 2**20
    #: The container runtimes that work here, in the order they are preferred.
    container_runtimes: tuple[Runtime, ...] = ()
    #: Bytes of container images kept ready (least recently used evicted past it).
    image_cache_bytes: int = DEFAULT_LIMIT
