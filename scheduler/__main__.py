"""``dfarm scheduler``: run the scheduler node in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import logging
import os
import signal
import sqlite3
import sys
from pathlib import Path

from scheduler import private
from scheduler.config import SchedulerConfig, port_range
from scheduler.disk_space import free_bytes, full_message
from scheduler.mail import MailConfigError
from scheduler.mail.options import add_mail_options, mail_config_from_args
from scheduler.node_setup import config_file, logs
from scheduler.node_setup.private_dir import make_private_dir
from scheduler.protocol import DEFAULT_MAX_FRAME, DEFAULT_PORT, default_home
from scheduler.quota import parse_size
from scheduler.server import Scheduler
from scheduler.tls_setup import TlsSetupError

log = logging.getLogger("scheduler")

#: Collections of the second generation between full collections (Python's default
#: is 10). A full collection walks every job the scheduler holds, 0.15 s with
#: 100,000 queued; at the default, storing a cluster of 100,000 jobs ran 17 of them
#: (1.2 s of its 8.8 s), at 100 it runs 2 (see docs/scheduling.md).
FULL_COLLECTION_EVERY = 100


def build_parser(prog: str = "dfarm scheduler") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Run the dfarm scheduler node.")
    parser.add_argument(
        "--home", type=Path, default=None, help="state directory (default ~/.dfarm)"
    )
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default all)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 = any)"
    )
    parser.add_argument("--ftp-port", type=int, default=0, help="FTP port (default: any free one)")
    parser.add_argument(
        "--ftp-passive-ports",
        type=_port_range,
        metavar="FIRST-LAST",
        help="ports FTP data connections use in passive mode, e.g. 40000-40100, to open in"
        " a firewall (default: any free port)",
    )
    parser.add_argument(
        "--masquerade-address",
        type=_ipv4,
        metavar="ADDRESS",
        help="address FTP announces in passive mode and names in grants, for a scheduler"
        " behind NAT (default: the address the peer connected to)",
    )
    parser.add_argument("--advertise-host", help="host name written to access.json for clients")
    parser.add_argument("--heartbeat-interval", type=float, default=5.0, help="seconds")
    parser.add_argument(
        "--worker-timeout", type=float, default=30.0, help="seconds before a silent worker is lost"
    )
    parser.add_argument(
        "--policy-interval",
        type=float,
        default=60.0,
        help="seconds between evaluations of the jobs' periodic_hold, periodic_release and"
        " periodic_remove (HTCondor's PERIODIC_EXPR_INTERVAL; default 60)",
    )
    parser.add_argument(
        "--handshake-timeout",
        type=float,
        default=10.0,
        help="seconds a new connection has to authenticate (default 10)",
    )
    parser.add_argument(
        "--max-frame",
        type=int,
        default=DEFAULT_MAX_FRAME,
        help="the largest message taken, in bytes (default 16 MiB; clients send big"
        " clusters and DAGs in parts cut to fit the default)",
    )
    parser.add_argument(
        "--auth-failure-limit",
        type=int,
        default=10,
        metavar="N",
        help="failed handshakes per address, and per identity, within the window before"
        " their wrong guesses are refused (a right one always passes; default 10)",
    )
    parser.add_argument(
        "--auth-failure-window",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="window of --auth-failure-limit (default 60)",
    )
    parser.add_argument(
        "--allow-pool-secret",
        action="store_true",
        help="let workers register with the pool secret (HOME/worker.secret) instead of a"
        " credential of their own ('dfarm worker add NAME'): for throw-away local clusters"
        " only, since every holder of that secret may pose as any worker",
    )
    parser.add_argument(
        "--upload-limit",
        type=parse_size,
        default="10GB",
        metavar="SIZE",
        help="input bytes one submission may upload, e.g. 2GB (default 10GB; 0: no limit)",
    )
    parser.add_argument(
        "--spool-quota",
        type=parse_size,
        default="100GB",
        metavar="SIZE",
        help="bytes each user may keep in the spool (default 100GB; 0: no limit)",
    )
    parser.add_argument(
        "--reservation-ttl",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="seconds a submission may take to upload its inputs before its first jobs"
        " are queued; a reserved cluster not submitted by then is removed (default 3600)",
    )
    parser.add_argument(
        "--min-free-space",
        type=parse_size,
        default="64MB",
        metavar="SIZE",
        help="free space the home's file system must keep; below it the disk counts as"
        " full: new submissions are refused until there is room again (default 64MB)",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="TLS on the socket protocol and FTP; peers pin the certificate's fingerprint,"
        " written to access.json (default certificate: self-signed, made on first start)",
    )
    parser.add_argument("--tls-cert", type=Path, metavar="PEM", help="with --tls: certificate")
    parser.add_argument("--tls-key", type=Path, metavar="PEM", help="with --tls: private key")
    add_mail_options(parser)
    parser.add_argument(
        "--keep-results",
        type=float,
        default=7.0,
        metavar="DAYS",
        help="days the results of a finished job are kept for dfetch (default 7)",
    )
    parser.add_argument(
        "--web-port", type=int, default=None, help="serve the web dashboard on this port"
        " (default: no dashboard; 0 = any free port)"
    )  # fmt: skip
    parser.add_argument(
        "--web-host", default="127.0.0.1", help="address of the web dashboard (default"
        " 127.0.0.1: loopback only, see docs/web.md)"
    )  # fmt: skip
    parser.add_argument(
        "--web-url",
        default=None,
        metavar="URL",
        help="the dashboard's address as users reach it (a proxy, a fixed name), used in"
        " the links of mails (default: the address it listens on; no link with --web-port 0)",
    )
    parser.add_argument(
        "--usage-halflife",
        type=float,
        default=86400.0,
        metavar="SECONDS",
        help="half-life of each user's fair-share usage (default 86400, one day)",
    )
    parser.add_argument(
        "--queue-wait",
        type=float,
        default=SchedulerConfig.queue_wait,
        metavar="SECONDS",
        help="queue a short job on a worker behind running ones when, by the mean run time"
        " of their clusters, it would wait at most this long (default 0.25)",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=logs.LEVELS, type=str.upper, help="default INFO"
    )
    parser.add_argument(
        "--log-file",
        default=None,
        help="log file, rotated at 10 MiB, 3 kept (default HOME/scheduler.log, or only"
        " stderr, i.e. journald, when started by systemd; '-' = stderr only)",
    )
    config_file.add_config_option(parser, "scheduler")
    return parser


def _port_range(text: str) -> str:
    try:
        ports = port_range(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return f"{ports.start}-{ports.stop - 1}"


def _ipv4(text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"an IPv4 address is needed, not {text!r}") from None


def config_from_args(args: argparse.Namespace) -> SchedulerConfig:
    """The configuration the options ask for; :class:`MailConfigError` if SMTP cannot work."""
    return SchedulerConfig(
        home=(args.home or default_home()).expanduser().resolve(),
        host=args.host,
        port=args.port,
        ftp_port=args.ftp_port,
        ftp_passive_ports=(
            None if args.ftp_passive_ports is None else port_range(args.ftp_passive_ports)
        ),
        masquerade_address=args.masquerade_address,
        advertise_host=args.advertise_host,
        heartbeat_interval=args.heartbeat_interval,
        worker_timeout=args.worker_timeout,
        policy_interval=args.policy_interval,
        handshake_timeout=args.handshake_timeout,
        max_frame=args.max_frame,
        auth_failure_limit=args.auth_failure_limit,
        auth_failure_window=args.auth_failure_window,
        allow_pool_secret=args.allow_pool_secret,
        mail=mail_config_from_args(args),
        result_retention=args.keep_results * 86400,
        upload_limit=args.upload_limit,
        tls=args.tls or bool(args.tls_cert),
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        spool_quota=args.spool_quota,
        reservation_ttl=args.reservation_ttl,
        min_free_space=args.min_free_space,
        usage_halflife=args.usage_halflife,
        queue_wait=args.queue_wait,
        web_port=args.web_port,
        web_host=args.web_host,
        web_url=args.web_url,
    )


async def run(config: SchedulerConfig) -> None:
    """Serve until SIGINT or SIGTERM."""
    scheduler = Scheduler(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, scheduler.stop)
    await scheduler.serve()


def main(argv: list[str] | None = None) -> int:
    try:
        args, _ = config_file.load(build_parser(), argv, "scheduler")
        config = config_from_args(args)
    except (MailConfigError, config_file.ConfigError) as exc:
        print(f"dfarm scheduler: error: {exc}", file=sys.stderr)
        return 2
    if not config.reservation_ttl > 0:
        print("dfarm scheduler: --reservation-ttl must be greater than 0 seconds", file=sys.stderr)
        return 2
    if not config.usage_halflife > 0:
        print("dfarm scheduler: --usage-halflife must be greater than 0 seconds", file=sys.stderr)
        return 2
    if not config.queue_wait >= 0:
        print("dfarm scheduler: --queue-wait must be 0 seconds or more", file=sys.stderr)
        return 2
    # What the scheduler creates is its account's alone (see scheduler/private.py).
    os.umask(private.UMASK)
    try:
        make_private_dir(config.home)
    except OSError as exc:
        print(f"dfarm scheduler: error: cannot create {config.home}: {exc}", file=sys.stderr)
        return 1
    logs.configure(args.log_level, logs.log_path(args.log_file, config.home / "scheduler.log"))
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)
    try:
        asyncio.run(run(config))
    except (OSError, TlsSetupError, sqlite3.Error, private.PrivacyError) as exc:
        free = free_bytes(config.home)
        full = free < config.min_free_space
        advice = f" ({full_message(config.home, free)}: make room, start again)" if full else ""
        log.error("cannot start the scheduler: %s%s", exc, advice)
        return 1
    except Exception:
        log.exception("the scheduler crashed")
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
