"""A real SMTP server on 127.0.0.1 for the tests (aiosmtpd), with a switch to refuse mail."""

from __future__ import annotations

import email
import email.policy
import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made with openssl."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@dataclass
class Received:
    sender: str
    recipients: list[str]
    message: EmailMessage

    @property
    def body(self) -> str:
        part = self.message.get_body(("plain",))
        assert part is not None
        return str(part.get_content()).replace("\r\n", "\n")


@dataclass
class Inbox:
    """What the server received; ``refuse`` > 0 answers that many DATA commands with 451."""

    mails: list[Received] = field(default_factory=list)
    refuse: int = 0
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            if self.refuse > 0:
                self.refuse -= 1
                self.refused += 1
                return "451 4.3.0 mailbox busy, try again later"
            message = email.message_from_bytes(
                envelope.original_content, policy=email.policy.default
            )
            assert isinstance(message, EmailMessage)
            self.mails.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 OK"

    def count(self) -> int:
        with self.lock:
            return len(self.mails)


class SmtpServer:
    """aiosmtpd in a thread on 127.0.0.1 (optionally with a user and password)."""

    def __init__(
        self,
        port: int | None = None,
        login: tuple[str, str] | None = None,
        tls: str = "none",
        cert: tuple[Path, Path] | None = None,
    ):
        self.inbox = Inbox()
        self.port = port or free_port()
        self.login = login
        kwargs: dict[str, Any] = {}
        if login:
            kwargs = {"authenticator": self._authenticate, "auth_require_tls": False}
        if tls != "none":
            assert cert is not None
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*cert)
            if tls == "starttls":
                kwargs.update(tls_context=context, require_starttls=True)
            else:
                kwargs.update(ssl_context=context)
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port, **kwargs)
        self.logins: list[str] = []

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                      data: Any) -> AuthResult:  # fmt: skip
        ok = isinstance(data, LoginPassword) and self.login == (
            data.login.decode(),
            data.password.decode(),
        )
        if ok:
            self.logins.append(data.login.decode())
        return AuthResult(success=ok)

    def start(self) -> SmtpServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def args(self) -> tuple[str, ...]:
        """``dfarm scheduler`` options for this server, retrying quickly."""
        return (
            "--smtp-host", "127.0.0.1", "--smtp-port", str(self.port),
            "--mail-from", "farm@example.org", "--mail-retry-delay", "0.2",
        )  # fmt: skip
