"""``dfarm worker``: run a worker daemon in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from scheduler.node_setup import config_file, logs
from scheduler.protocol import (
    HandshakeError,
    ProtocolError,
    default_home,
    parse_memory_mb,
)
from scheduler.transport.tls import normalize_fingerprint
from worker_node import container_runtimes, machine_attributes
from worker_node.credential import CREDENTIAL_ENV, load_secret, worker_name
from worker_node.daemon import Worker
from worker_node.drain import drain
from worker_node.metrics import Sampler
from worker_node.worker_config import WorkerConfig

log = logging.getLogger("worker_node")


def build_parser(prog: str = "dfarm worker") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run a dfarm worker daemon. (On the scheduler node, 'dfarm worker"
        " add|revoke|list NAME' manages workers' credentials.)",
    )
    parser.add_argument("--scheduler", metavar="HOST:PORT", help="the scheduler (required)")
    parser.add_argument(
        "--credential-file",
        type=Path,
        help="this worker's credential, from 'dfarm worker add NAME' on the scheduler node"
        f" (mode 0600; or set {CREDENTIAL_ENV})",
    )
    parser.add_argument(
        "--secret-file",
        type=Path,
        help="the pool secret instead of a credential: only for a throw-away scheduler"
        " started with --allow-pool-secret",
    )
    parser.add_argument(
        "--drain",
        metavar="NAME",
        help="on the scheduler node: ask worker NAME to finish its jobs and exit",
    )
    parser.add_argument(
        "--home", type=Path, default=None, help="with --drain: the scheduler's state directory"
    )
    parser.add_argument(
        "--name", default=None, help="worker name (default: the credential's, else host name)"
    )
    parser.add_argument("--slots", type=int, default=None, help="jobs at once (default: CPUs)")
    parser.add_argument("--work-dir", type=Path, default=None, help="sandboxes and input cache")
    parser.add_argument("--cpus", type=int, default=None, help="CPUs to offer (default: all)")
    parser.add_argument("--memory", default=None, help="memory to offer, e.g. 4GB (default: all)")
    parser.add_argument("--gpus", type=int, default=None, help="GPUs to offer (default: detected)")
    parser.add_argument(
        "--attributes",
        action="append",
        default=None,
        metavar="NAME=VALUE",
        help="a machine attribute to advertise to requirements, VALUE a ClassAd literal"
        ' (HasCVMFS=true, Site="lab"); repeatable; in worker.toml an [attributes] table',
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=None,
        metavar="SECONDS",
        help="on SIGTERM or --drain, how long running jobs may finish before they are"
        " requeued (default 300)",
    )
    parser.add_argument(
        "--run-as",
        default="nobody",
        metavar="ACCOUNT",
        help="when the worker runs as root: the account for jobs of users with no account"
        " of their own on this machine (default nobody; never root)",
    )
    parser.add_argument(
        "--slot-uids",
        type=int,
        default=0,
        metavar="BASE",
        help="when the worker runs as root: slot N's jobs of users with no account here run"
        " as uid BASE+N (ids of no account), isolated from each other, instead of --run-as",
    )
    parser.add_argument(
        "--job-python",
        metavar="PATH",
        help="the Python that Client.map jobs and a root worker's launchers run with"
        " (default: the worker's own, or, where job accounts cannot reach it, a copy in"
        " WORK_DIR/runtime)",
    )
    parser.add_argument(
        "--warm-map",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the jobs of a Client.map in a warm Python per slot, owner and function,"
        " forked from the slot's launcher (as the job's account), which keeps the map's"
        " function and its imports from one job to the next (the default);"
        " --no-warm-map: a new Python for each job",
    )
    parser.add_argument(
        "--warm-map-items",
        type=int,
        default=1000,
        metavar="N",
        help="with --warm-map: a warm Python is replaced after N jobs",
    )
    parser.add_argument(
        "--warm-map-idle",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="with --warm-map: a warm Python exits after SECONDS without a job",
    )
    parser.add_argument(
        "--tls-fingerprint",
        metavar="SHA256",
        help="the scheduler runs with --tls: the fingerprint of its certificate (in its"
        " access.json), which this worker pins",
    )
    parser.add_argument(
        "--always-ftp",
        action="store_true",
        help="move job files over FTP even when the scheduler's spool is on this machine's"
        " file system (by default they are then hard-linked)",
    )
    parser.add_argument(
        "--container-runtimes",
        default=",".join(container_runtimes.RUNTIMES),
        metavar="LIST",
        help="the container runtimes jobs may use, in the order preferred, of"
        f" {', '.join(container_runtimes.RUNTIMES)} (those that work here are used; 'none': jobs"
        " that ask for a container never match this worker) (default: all, in that order)",
    )
    parser.add_argument(
        "--image-cache",
        type=_free_space,
        default="20GB",
        metavar="SIZE",
        help="container images kept ready on this worker, and the image files jobs sent,"
        " least recently used removed past it (default 20GB)",
    )
    parser.add_argument(
        "--min-free-space",
        type=_free_space,
        default="64MB",
        metavar="SIZE",
        help="free space the work directory's file system must keep, e.g. 1GB (a bare"
        " number is MB; 0: none); below it the disk is full: the worker takes no jobs until"
        " there is room, and a job that ends on a full disk is run elsewhere (default 64MB)",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=logs.LEVELS, type=str.upper, help="default INFO"
    )
    parser.add_argument(
        "--log-file",
        type=Path,
        default=None,
        help="log file, rotated at 10 MiB, 3 kept (default: stderr only, i.e. journald"
        " under systemd)",
    )
    config_file.add_config_option(parser, "worker")
    return parser


def _free_space(text: str) -> int:
    """Bytes of ``--min-free-space``."""
    if text.strip() == "0":
        return 0
    try:
        return parse_memory_mb(text) * 2**20
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def split_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"--scheduler must be HOST:PORT, not {text!r}")
    return host.strip("[]"), int(port)


def wanted_runtimes(text: str) -> list[str]:
    """``--container-runtimes``: the names, checked."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if names == ["none"]:
        return []
    unknown = [n for n in names if n not in container_runtimes.RUNTIMES]
    if unknown:
        raise ValueError(
            f"--container-runtimes: unknown runtime {unknown[0]!r} (known:"
            f" {', '.join(container_runtimes.RUNTIMES)}, or none)"
        )
    return names


def config_from_args(
    args: argparse.Namespace, sampler: Sampler, runtimes: Sequence[container_runtimes.Runtime] = ()
) -> WorkerConfig:
    host, port = split_address(args.scheduler)
    secret = load_secret(args.credential_file, args.secret_file)
    name = worker_name(args.name, secret, socket.gethostname())
    metrics = sampler.sample()
    cpus = args.cpus or metrics.threads
    memory = parse_memory_mb(args.memory) if args.memory else metrics.memory_total_mb
    gpus = len(metrics.gpus) if args.gpus is None else args.gpus
    for what, value in (("--slots", args.slots), ("--cpus", cpus), ("--memory", memory)):
        if value is not None and value < 1:
            raise ValueError(f"{what} must be at least 1")
    return WorkerConfig(
        host=host,
        port=port,
        secret=secret.secret,
        name=name,
        work_dir=(args.work_dir or Path("~/.dfarm") / f"worker-{name}").expanduser().resolve(),
        slots=args.slots or cpus,
        cpus=cpus,
        memory_mb=memory,
        gpus=max(0, gpus),
        gpu_ids=tuple(g.index for g in metrics.gpus)[:gpus] if gpus <= len(metrics.gpus) else (),
        grace=300.0 if args.grace is None else max(0.0, args.grace),
        run_as=args.run_as,
        slot_uids=args.slot_uids,
        job_python=args.job_python,
        tls_fingerprint=normalize_fingerprint(args.tls_fingerprint)
        if args.tls_fingerprint
        else None,
        always_ftp=args.always_ftp,
        warm_map=args.warm_map,
        warm_map_items=max(1, args.warm_map_items),
        warm_map_idle=max(0.1, args.warm_map_idle),
        min_free_space=args.min_free_space,
        container_runtimes=tuple(runtimes),
        image_cache_bytes=args.image_cache,
    )


def defer_stop_signals() -> list[int]:
    """Note SIGINT and SIGTERM, into the list returned, until :func:`run` takes them
    over: a worker stopped while it starts then stops cleanly once it can, instead
    of dying half-way through setting up (a KeyboardInterrupt inside asyncio)."""
    received: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: received.append(signum))
    return received


async def run(worker: Worker, received: list[int] | None = None) -> None:
    """Run ``worker`` until it stops (at once if ``received`` holds a stop signal)."""
    loop = asyncio.get_running_loop()
    # SIGTERM drains (running jobs finish first); SIGINT stops at once.
    loop.add_signal_handler(signal.SIGTERM, worker.drain)
    loop.add_signal_handler(signal.SIGINT, worker.stop)
    if received:
        log.info("stopping: a signal came while the worker started")
        worker.stop()  # it runs no job yet: draining would be stopping
    await worker.run()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, _ = config_file.load(parser, argv, "worker")
    except config_file.ConfigError as exc:
        print(f"dfarm worker: error: {exc}", file=sys.stderr)
        return 2
    if args.drain:
        return drain_command(args)
    if not args.scheduler:
        parser.error("--scheduler is required")
    received = defer_stop_signals()
    logs.configure(args.log_level, logs.log_path(args.log_file, None))
    try:
        work_dir = args.work_dir or Path(os.getcwd())
        extra = machine_attributes.parse_assignments(args.attributes or [])
        runtimes = container_runtimes.detect(wanted_runtimes(args.container_runtimes))
        sampler = Sampler(
            work_dir if work_dir.exists() else Path("/"),
            attributes=machine_attributes.detect(extra, runtimes=runtimes),
        )
        config = config_from_args(args, sampler, runtimes)
        sampler.disk_path = config.work_dir
        config.work_dir.mkdir(parents=True, exist_ok=True)
        asyncio.run(run(Worker(config, sampler), received))
    except (ValueError, OSError) as exc:
        log.error("cannot start the worker: %s", exc)
        return 2
    except HandshakeError as exc:
        log.error("the scheduler refused this worker: %s", exc)
        return 1
    return 0


def drain_command(args: argparse.Namespace) -> int:
    home = (args.home or default_home()).expanduser()
    try:
        drain(args.drain, home, args.grace, args.scheduler)
    except (ValueError, OSError, ProtocolError, HandshakeError) as exc:
        print(f"dfarm worker: error: cannot drain {args.drain}: {exc}", file=sys.stderr)
        return 1
    print(f"worker {args.drain} is draining")
    return 0


if __name__ == "__main__":
    sys.exit(main())
