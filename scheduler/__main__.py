"""``dfarm scheduler``: run the scheduler node in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from scheduler import logs
from scheduler.config import SchedulerConfig
from scheduler.mail import MailConfigError
from scheduler.mail.options import add_mail_options, mail_config_from_args
from scheduler.protocol import DEFAULT_PORT, default_home
from scheduler.server import Scheduler

log = logging.getLogger("scheduler")


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
    parser.add_argument("--advertise-host", help="host name written to access.json for clients")
    parser.add_argument("--heartbeat-interval", type=float, default=5.0, help="seconds")
    parser.add_argument(
        "--worker-timeout", type=float, default=30.0, help="seconds before a silent worker is lost"
    )
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
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument(
        "--log-file", default=None, help="log file (default HOME/scheduler.log; '-' = stderr only)"
    )
    return parser


def config_from_args(args: argparse.Namespace) -> SchedulerConfig:
    """The configuration the options ask for; :class:`MailConfigError` if SMTP cannot work."""
    return SchedulerConfig(
        home=(args.home or default_home()).expanduser().resolve(),
        host=args.host,
        port=args.port,
        ftp_port=args.ftp_port,
        advertise_host=args.advertise_host,
        heartbeat_interval=args.heartbeat_interval,
        worker_timeout=args.worker_timeout,
        mail=mail_config_from_args(args),
        result_retention=args.keep_results * 86400,
        web_port=args.web_port,
        web_host=args.web_host,
    )


async def run(config: SchedulerConfig) -> None:
    """Serve until SIGINT or SIGTERM."""
    scheduler = Scheduler(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, scheduler.stop)
    await scheduler.serve()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except MailConfigError as exc:
        print(f"dfarm scheduler: {exc}", file=sys.stderr)
        return 2
    config.home.mkdir(parents=True, exist_ok=True)
    log_file = (
        None if args.log_file == "-" else Path(args.log_file or config.home / "scheduler.log")
    )
    logs.configure(args.log_level, log_file)
    try:
        asyncio.run(run(config))
    except OSError as exc:
        log.error("cannot start the scheduler: %s", exc)
        return 1
    except Exception:
        log.exception("the scheduler crashed")
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
