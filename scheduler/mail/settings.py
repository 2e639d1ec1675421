"""SMTP settings of the scheduler and the check of a mail address."""

from __future__ import annotations

import os
import socket
import stat
from dataclasses import dataclass, field
from email.headerregistry import Address
from pathlib import Path

#: How the connection to the SMTP server is secured.
SECURITY = ("none", "starttls", "tls")
DEFAULT_PORTS = {"none": 25, "starttls": 587, "tls": 465}
#: Environment variable read for the SMTP password when no file is named.
PASSWORD_ENV = "DFARM_SMTP_PASSWORD"
MAX_ADDRESS = 254


class MailConfigError(ValueError):
    """SMTP settings that cannot work (named in the message)."""


@dataclass(frozen=True, kw_only=True)
class MailConfig:
    """Where and how the scheduler sends mail. The password never appears in a repr."""

    #: SMTP server host name.
    host: str
    #: SMTP server port; 0 picks the usual one for ``security`` (25, 587 or 465).
    port: int = 0
    #: "none", "starttls" (upgrade a plain connection) or "tls" (implicit TLS).
    security: str = "none"
    #: User name to log in with; None: no login.
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    #: The From address of every mail.
    sender: str = ""
    #: CA certificates to verify the server with (default: the system's).
    ca_file: str | None = None
    #: Seconds an SMTP connection may wait on the server.
    timeout: float = 30.0
    #: Seconds after which a mail that could not be delivered is given up.
    retry_for: float = 4 * 3600.0
    #: First delay between attempts; it doubles up to ``retry_max``.
    retry_initial: float = 30.0
    retry_max: float = 1800.0
    #: Link to a job's page, with ``{job}`` for its id (a dashboard's URL), or None.
    job_url: str | None = None

    @property
    def smtp_port(self) -> int:
        return self.port or DEFAULT_PORTS[self.security]

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt."""
        return min(self.retry_max, self.retry_initial * 2 ** max(0, attempts - 1))


def check_address(text: str) -> str:
    """``text`` if it is one plain mail address (``user@domain``); else ValueError."""
    problem = f"invalid e-mail address {text!r}"
    if (
        not text
        or len(text) > MAX_ADDRESS
        or any(c.isspace() or not c.isprintable() or c in '"<>(),;\\' for c in text)
    ):
        raise ValueError(problem)
    try:
        address = Address(addr_spec=text)
    except Exception:  # the parser raises several kinds of error for bad input
        raise ValueError(problem) from None
    if not address.username or not address.domain or address.addr_spec != text:
        raise ValueError(problem)
    return text


def read_password(file: Path | None, env_name: str | None) -> str | None:
    """The SMTP password from ``file`` (first line) or the environment variable."""
    if file is not None:
        try:
            mode = file.stat().st_mode
            text = file.read_text()
        except OSError as exc:
            raise MailConfigError(f"cannot read the SMTP password file {file}: {exc}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise MailConfigError(
                f"the SMTP password file {file} is readable by others: chmod 600 it"
            )
        lines = text.splitlines()
        if not lines or not lines[0]:
            raise MailConfigError(f"the SMTP password file {file} is empty")
        return lines[0]
    value = os.environ.get(env_name or PASSWORD_ENV)
    return value or None


def make_config(
    *,
    host: str,
    port: int = 0,
    security: str = "none",
    user: str | None = None,
    password_file: Path | None = None,
    password_env: str | None = None,
    sender: str | None = None,
    **tuning: object,
) -> MailConfig:
    """Checked settings (``tuning``: the other :class:`MailConfig` fields)."""
    if security not in SECURITY:
        raise MailConfigError(f"SMTP security must be one of {', '.join(SECURITY)}")
    if not 0 <= port <= 65535:
        raise MailConfigError(f"invalid SMTP port {port}")
    sender = sender or f"dfarm@{socket.getfqdn()}"
    try:
        check_address(sender)
    except ValueError as exc:
        raise MailConfigError(f"mail From address: {exc}") from None
    password = read_password(password_file, password_env)
    if user and password is None:
        raise MailConfigError(
            f"the SMTP user {user!r} needs a password: name a file with --smtp-password-file"
            f" or set ${password_env or PASSWORD_ENV}"
        )
    job_url = tuning.get("job_url")
    if isinstance(job_url, str) and "{job}" not in job_url:
        raise MailConfigError("the job link must contain {job}, where the job id goes")
    return MailConfig(
        host=host,
        port=port,
        security=security,
        user=user or None,
        password=password if user else None,
        sender=sender,
        **tuning,  # type: ignore[arg-type]
    )
