"""The worker's secret: its own credential (``dfarm worker add NAME`` on the
scheduler node prints it), from a private file or the environment, or the pool
secret for a throw-away cluster whose scheduler allows it."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from scheduler.protocol import read_secret, token_user

#: The environment variable a credential may come from instead of a file.
CREDENTIAL_ENV = "DFARM_WORKER_CREDENTIAL"


@dataclass(frozen=True)
class WorkerSecret:
    secret: bytes
    #: The worker name a credential is bound to (None: the pool secret).
    name: str | None


def _private(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(
            f"the credential file {path} is open to other accounts (mode"
            f" {stat.S_IMODE(mode):04o}): run 'chmod 600 {path}'"
        )


def _bound(text: str, where: str) -> WorkerSecret:
    try:
        name = token_user(text)
    except ValueError:
        raise ValueError(
            f"{where} is not a worker credential (NAME:SECRET, as 'dfarm worker add NAME'"
            " prints it)"
        ) from None
    return WorkerSecret(text.strip().encode(), name)


def load_secret(credential_file: Path | None, secret_file: Path | None) -> WorkerSecret:
    """The secret the options (or :data:`CREDENTIAL_ENV`) name; ValueError, with the
    file and what to do, when there is none or it is unusable."""
    if credential_file is not None:
        _private(credential_file)
        text = read_secret(credential_file).decode(errors="replace")
        return _bound(text, f"the credential file {credential_file}")
    if os.environ.get(CREDENTIAL_ENV, "").strip():
        return _bound(os.environ[CREDENTIAL_ENV], CREDENTIAL_ENV)
    if secret_file is not None:
        return WorkerSecret(read_secret(secret_file), None)
    raise ValueError(
        "a credential is required: --credential-file FILE (create it with 'dfarm worker add"
        f" NAME' on the scheduler node) or {CREDENTIAL_ENV}; --secret-file gives the pool"
        " secret of a scheduler started with --allow-pool-secret"
    )


def worker_name(given: str | None, secret: WorkerSecret, default: str) -> str:
    """The worker's name: the credential's (``--name``, if given, must match it)."""
    if secret.name is None:
        return given or default
    if given and given != secret.name:
        raise ValueError(
            f"--name {given} does not match the credential, which is worker {secret.name}'s"
        )
    return secret.name
