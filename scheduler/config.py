"""The scheduler's configuration: one frozen dataclass, a default and a line of doc per field."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from scheduler.mail.settings import MailConfig
from scheduler.protocol import DEFAULT_MAX_FRAME, DEFAULT_PORT


@dataclass(frozen=True, kw_only=True)
class SchedulerConfig:
    #: State directory: database, spool, worker secret, access record, log.
    home: Path
    #: Address the socket protocol listens on ("0.0.0.0" = every interface).
    host: str = "0.0.0.0"
    #: Port of the socket protocol; 0 picks a free one (see access.json).
    port: int = DEFAULT_PORT
    #: Port of the embedded FTP server; 0 picks a free one.
    ftp_port: int = 0
    #: Ports of FTP data connections in passive mode (None: any free port).
    ftp_passive_ports: range | None = None
    #: Address FTP announces in passive mode and names in grants (for NAT); None:
    #: the address each peer connected to.
    masquerade_address: str | None = None
    #: Host name written to access.json for clients; default: this machine's name,
    #: or 127.0.0.1 when listening on loopback only.
    advertise_host: str | None = None
    #: Seconds between worker heartbeats.
    heartbeat_interval: float = 5.0
    #: Seconds without a heartbeat (or, after a disconnect, without a reconnect)
    #: before a worker is declared lost and its running jobs are queued again.
    worker_timeout: float = 30.0
    #: Seconds between evaluations of the jobs' periodic policies (``periodic_hold``,
    #: ``periodic_release``, ``periodic_remove``; HTCondor's ``PERIODIC_EXPR_INTERVAL``).
    policy_interval: float = 60.0
    #: Seconds a new connection has to complete its handshake.
    handshake_timeout: float = 10.0
    #: Failed handshakes an address (or identity) may make within
    #: ``auth_failure_window`` seconds before its wrong guesses are refused until the
    #: oldest leaves the window (see :mod:`scheduler.handshake_guard`).
    auth_failure_limit: int = 10
    auth_failure_window: float = 60.0
    #: Workers may register with the pool secret instead of a credential of their
    #: own (for throw-away local clusters only).
    allow_pool_secret: bool = False
    #: Largest frame accepted, in bytes.
    max_frame: int = DEFAULT_MAX_FRAME
    #: Seconds a job's FTP grant to its worker stays valid after the worker's last
    #: heartbeat (each renews it; it is revoked when the job ends or the worker's
    #: connection drops).
    job_grant_ttl: float = 3600.0
    #: SMTP settings for notification mail; None: no mail is sent.
    mail: MailConfig | None = None
    #: Seconds the results of a finished job are kept for ``dfetch`` before they are
    #: cleaned (the job stays in the history).
    result_retention: float = 7 * 24 * 3600
    #: Serve the socket protocol and FTP over TLS (see docs/SECURITY.md).
    tls: bool = False
    #: The certificate and key (PEM); None: a self-signed pair in ``home``.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: Bytes of input files one submission may upload; 0: no limit.
    upload_limit: int = 10 * 2**30
    #: Bytes a user may keep in the spool (inputs and results); 0: no limit.
    spool_quota: int = 100 * 2**30
    #: Seconds a cluster reserved with ``new_cluster`` (and its upload grant) waits
    #: for its first part before it is removed (see scheduler/reservations.py).
    reservation_ttl: float = 3600.0
    #: Bytes that must stay free on the home's file system; below, the disk counts as
    #: full and new submissions are refused (see :mod:`scheduler.disk_space`).
    min_free_space: int = 64 * 2**20
    #: Half-life of each user's fair-share usage, in seconds (HTCondor's
    #: ``PRIORITY_HALFLIFE``; default one day).
    usage_halflife: float = 86400.0
    #: Longest expected wait, in seconds, of a job queued on a worker behind running
    #: ones (see :mod:`scheduler.queue_ahead`).
    queue_wait: float = 0.25
    #: Port of the web dashboard; None: no dashboard (the default); 0: any free port.
    web_port: int | None = None
    #: Address the web dashboard listens on: loopback unless asked (see docs/web.md).
    web_host: str = "127.0.0.1"
    #: The dashboard's address in mail links; None: the one it listens on, unless its
    #: port is ephemeral (``web_port`` 0: no link, it would be dead after a restart).
    web_url: str | None = None

    @property
    def db_path(self) -> Path:
        return self.home / "dfarm.db"

    @property
    def spool_dir(self) -> Path:
        return self.home / "spool"

    @property
    def secret_path(self) -> Path:
        return self.home / "worker.secret"

    @property
    def access_path(self) -> Path:
        return self.home / "access.json"

    def client_host(self) -> str:
        """The host name clients should use to reach this scheduler."""
        if self.advertise_host:
            return self.advertise_host
        if self.host in ("127.0.0.1", "localhost", "::1"):
            return self.host
        if self.host in ("0.0.0.0", "::", ""):
            return socket.getfqdn()
        return self.host


def port_range(text: str) -> range:
    """The ports of a port range ``FIRST-LAST`` (or of one port). ValueError names what
    is wrong."""
    first, _, last = text.partition("-")
    try:
        low, high = int(first), int(last or first)
    except ValueError:
        raise ValueError(f"a port range is FIRST-LAST, e.g. 40000-40100, not {text!r}") from None
    if not 1 <= low <= high <= 65535:
        raise ValueError(f"port range {text!r}: ports go from 1 to 65535, FIRST <= LAST")
    return range(low, high + 1)
