"""The ``dfarm scheduler`` options that configure SMTP."""

from __future__ import annotations

import argparse
from pathlib import Path

from scheduler.mail.settings import PASSWORD_ENV, SECURITY, MailConfig, make_config


def add_mail_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "notification mail", "without --smtp-host no mail is sent (dsub warns about that)"
    )
    group.add_argument("--smtp-host", help="SMTP server that relays notification mail")
    group.add_argument(
        "--smtp-port", type=int, default=0, help="default 25, 587 with starttls, 465 with tls"
    )
    group.add_argument(
        "--smtp-security",
        choices=SECURITY,
        default="none",
        help="starttls: upgrade the connection; tls: implicit TLS (default none)",
    )
    group.add_argument("--smtp-user", help="user name to log in with (default: no login)")
    group.add_argument(
        "--smtp-password-file",
        type=Path,
        help=f"file holding the SMTP password (mode 600); default: ${PASSWORD_ENV}",
    )
    group.add_argument(
        "--smtp-password-env",
        metavar="NAME",
        default=PASSWORD_ENV,
        help=f"environment variable holding the password (default {PASSWORD_ENV})",
    )
    group.add_argument("--smtp-ca-file", help="CA certificates to verify the server with")
    group.add_argument("--mail-from", help="From address (default dfarm@THIS-HOST)")
    group.add_argument(
        "--mail-retry-for",
        type=float,
        default=4 * 3600.0,
        metavar="SECONDS",
        help="give up on a mail the server did not take after this long (default 4 h)",
    )
    group.add_argument(
        "--mail-retry-delay",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="first delay before another try; it doubles up to 30 min (default 30)",
    )
    group.add_argument(
        "--mail-job-url",
        metavar="URL",
        help="link to a job's web page, with {job} for its id (e.g. the dashboard's)",
    )


def mail_config_from_args(args: argparse.Namespace) -> MailConfig | None:
    """The SMTP settings asked for, or None without ``--smtp-host``."""
    if not args.smtp_host:
        return None
    return make_config(
        host=args.smtp_host,
        port=args.smtp_port,
        security=args.smtp_security,
        user=args.smtp_user,
        password_file=args.smtp_password_file,
        password_env=args.smtp_password_env,
        sender=args.mail_from,
        ca_file=args.smtp_ca_file,
        retry_for=args.mail_retry_for,
        retry_initial=args.mail_retry_delay,
        job_url=args.mail_job_url,
    )
