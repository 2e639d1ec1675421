"""E-mail notification of jobs: settings, rules, composition, SMTP delivery, outbox.

The event loop decides and records (:mod:`scheduler.mail.outbox`); only the
SMTP conversation (:mod:`scheduler.mail.smtp`) runs in a thread of its own.
"""

from scheduler.mail.outbox import Mailer
from scheduler.mail.settings import MailConfig, MailConfigError, check_address

__all__ = ["MailConfig", "MailConfigError", "Mailer", "check_address"]
