"""The SMTP conversation: blocking, so it runs in a thread of its own, never on the loop.

One connection carries a batch of mails. A 5xx reply refuses a mail for good;
anything else (a 4xx reply, a refused or lost connection, a timeout) is worth
another try later.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass

from scheduler.mail.settings import MailConfig


@dataclass(frozen=True)
class Mail:
    """One message to deliver: its outbox id, the envelope recipient, the RFC 5322 bytes."""

    id: int
    recipient: str
    data: bytes


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    #: The server refused it for good (a 5xx reply): retrying cannot help.
    permanent: bool = False
    error: str = ""


def deliver(config: MailConfig, mails: list[Mail]) -> dict[int, Outcome]:
    """Send ``mails`` over one connection; the outcome of each, by id. Never raises
    for a network or SMTP error: that is the outcome of the mails not yet sent."""
    outcomes: dict[int, Outcome] = {}
    try:
        with _connect(config) as smtp:
            for mail in mails:
                outcomes[mail.id] = _send(smtp, config.sender, mail)
    except (OSError, smtplib.SMTPException) as exc:
        error = describe(exc)
        for mail in mails:
            outcomes.setdefault(mail.id, Outcome(False, False, error))
    return outcomes


def _connect(config: MailConfig) -> smtplib.SMTP:
    context = ssl.create_default_context(cafile=config.ca_file)
    smtp: smtplib.SMTP
    if config.security == "tls":
        smtp = smtplib.SMTP_SSL(
            config.host, config.smtp_port, timeout=config.timeout, context=context
        )
    else:
        smtp = smtplib.SMTP(config.host, config.smtp_port, timeout=config.timeout)
    try:
        smtp.ehlo()
        if config.security == "starttls":
            smtp.starttls(context=context)
            smtp.ehlo()
        if config.user:
            smtp.login(config.user, config.password or "")
    except BaseException:
        smtp.close()
        raise
    return smtp


def _send(smtp: smtplib.SMTP, sender: str, mail: Mail) -> Outcome:
    try:
        smtp.sendmail(sender, [mail.recipient], mail.data)
    except smtplib.SMTPRecipientsRefused as exc:
        code, text = exc.recipients.get(mail.recipient, (550, b"recipient refused"))
        return Outcome(False, code >= 500, f"{code} {_text(text)}")
    except smtplib.SMTPResponseException as exc:
        return Outcome(False, exc.smtp_code >= 500, f"{exc.smtp_code} {_text(exc.smtp_error)}")
    return Outcome(True)


def describe(exc: BaseException) -> str:
    """A one-line account of an SMTP or network failure (never holds the password)."""
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{exc.smtp_code} {_text(exc.smtp_error)}"
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())[:300]


def _text(raw: bytes | str) -> str:
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    return " ".join(text.split())[:300]
