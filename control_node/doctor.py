"""``dfarm doctor``: check, step by step, that this host can use the scheduler.

    dfarm doctor [--scheduler HOST:PORT]                 as a user (DFARM_TOKEN)
    dfarm doctor --worker [--config worker.toml] [...]   as this host's worker

Each step prints OK or FAIL with what to fix; the first failure ends the run (the
later steps need it), and the exit status is 1. The steps: where the scheduler is,
that it is reachable, that it accepts the token or worker secret, that the clocks
agree, and that FTP works both ways: a probe file is uploaded and downloaded over
the passive data channel with the scheduler's real server and a real grant. As a
worker, it then lists the container runtimes that work here (and what podman lacks
where the machine gives it no cgroup v2 delegation).
"""

from __future__ import annotations

import argparse
import contextlib
import ftplib
import secrets
import socket
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from scheduler import protocol as p
from scheduler.transport.ftp import ftp_session
from scheduler.transport.tls import TlsError, check_pin, client_context, normalize_fingerprint

#: Clocks further apart than this make job times and grant expiry wrong.
CLOCK_TOLERANCE = 2.0
PROBE_BYTES = 256 * 1024


class Failed(Exception):
    """A step failed: ``str()`` says what happened, ``fix`` what to do."""

    def __init__(self, what: str, fix: str):
        super().__init__(what)
        self.fix = fix


@dataclass
class Identity:
    """Who the doctor speaks as."""

    role: p.Role
    name: str
    key: bytes
    #: What to do when the scheduler refuses the key.
    fix: str


@dataclass
class State:
    host: str = ""
    port: int = 0
    identity: Identity | None = None
    sock: socket.socket | None = None
    welcome: p.Welcome | None = None
    probe: p.ProbeGranted | None = None
    ftp: ftplib.FTP | None = None
    data: bytes = b""
    #: The scheduler's certificate, when it speaks TLS.
    pin: str | None = None


class Doctor:
    def __init__(self, args: argparse.Namespace, out: Callable[[str], None] = print):
        self.args, self.out = args, out
        self.timeout: float = args.timeout
        self.state = State()
        #: The worker's ``container_runtimes`` (None: the default).
        self.container_runtimes: str | None = None
        #: The FTP session, closed with :meth:`close`.
        self._ftp = contextlib.ExitStack()

    def run(self) -> int:
        steps = [
            ("scheduler address", self.find),
            ("scheduler reachable", self.reach),
            ("authentication", self.authenticate),
            ("clock", self.clock),
            ("FTP control connection", self.ftp_login),
            ("FTP upload (passive data connection)", self.upload),
            ("FTP download (passive data connection)", self.download),
        ]
        try:
            for number, (title, step) in enumerate(steps, 1):
                try:
                    detail = step()
                except Failed as exc:
                    self.out(f"[FAIL] {number}. {title}: {exc}")
                    self.out(f"       fix: {exc.fix}")
                    rest = ", ".join(t for t, _ in steps[number:])
                    if rest:
                        self.out(f"       not checked: {rest}")
                    return 1
                self.out(f"[ OK ] {number}. {title}: {detail}")
        finally:
            self.close()
        if self.args.worker:
            self.containers()
        self.out("everything works.")
        return 0

    def containers(self) -> None:
        """The container runtimes this worker would use (information, not a step)."""
        from worker_node import container_runtimes
        from worker_node.__main__ import build_parser, wanted_runtimes

        wanted = self.container_runtimes or build_parser().get_default("container_runtimes")
        try:
            unused: list[str] = []
            found = container_runtimes.detect(wanted_runtimes(wanted), unused=unused)
            lines = container_runtimes.describe(found) + unused
        except ValueError as exc:
            lines = [str(exc)]
        for line in lines:
            self.out(f"[INFO] containers: {line}")

    # -- steps -------------------------------------------------------------------

    def find(self) -> str:
        if self.args.worker:
            return self._find_as_worker()
        from control_node.connection import DfarmError, find_endpoint

        try:
            endpoint = find_endpoint(self.args.scheduler)
            user = p.token_user(endpoint.token)
        except (DfarmError, ValueError) as exc:
            raise Failed(
                str(exc),
                "set DFARM_SCHEDULER=HOST:PORT and DFARM_TOKEN (an administrator creates a "
                "token with 'dfarm user add NAME' on the scheduler node)",
            ) from None
        self.state.host, self.state.port = endpoint.host, endpoint.port
        self.state.pin = endpoint.tls_fingerprint
        self.state.identity = Identity(
            p.Role.CONTROL,
            user,
            p.user_key(endpoint.token),
            f"your token is not accepted: on the scheduler node an administrator runs "
            f"'dfarm user token {user}' and you set DFARM_TOKEN to the new token",
        )
        return f"{_address(endpoint.host, endpoint.port)}, user {user}"

    def _find_as_worker(self) -> str:
        from scheduler.node_setup import config_file
        from worker_node.__main__ import build_parser, split_address
        from worker_node.credential import CREDENTIAL_ENV, load_secret

        argv = []
        for flag, value in (("--config", self.args.config), ("--scheduler", self.args.scheduler),
                            ("--secret-file", self.args.secret_file),
                            ("--credential-file", self.args.credential_file)):  # fmt: skip
            if value is not None:
                argv += [flag, str(value)]
        try:
            worker, sources = config_file.load(build_parser(), argv, "worker")
        except config_file.ConfigError as exc:
            raise Failed(str(exc), "correct the worker's configuration") from None
        self.container_runtimes = worker.container_runtimes
        if not worker.scheduler:
            # On the scheduler node itself: its access record.
            access = p.default_home() / p.ACCESS_FILE
            if access.exists():
                try:
                    record = p.AccessRecord.load(access)
                except p.ProtocolError as exc:
                    raise Failed(str(exc), "pass --scheduler HOST:PORT") from None
                worker.scheduler = _address(record.host, record.port)
                sources["scheduler"] = config_file.Source("file", str(access))
                self.state.pin = record.tls_fingerprint
        if worker.tls_fingerprint:
            try:
                self.state.pin = normalize_fingerprint(worker.tls_fingerprint)
            except ValueError as exc:
                raise Failed(str(exc), "correct tls_fingerprint (see access.json)") from None
        if not worker.scheduler:
            raise Failed(
                "the worker's scheduler is not set",
                'set scheduler = "HOST:PORT" in worker.toml (or pass --config or --scheduler)',
            )
        try:
            self.state.host, self.state.port = split_address(worker.scheduler)
            found = load_secret(worker.credential_file, worker.secret_file)
        except (ValueError, OSError) as exc:
            raise Failed(
                str(exc),
                "on the scheduler node run 'dfarm worker add NAME --output FILE', copy FILE"
                " here (mode 0600) and set credential_file in worker.toml",
            ) from None
        where = worker.credential_file or CREDENTIAL_ENV
        fix = (
            f"the credential in {where} is not the scheduler's: on the scheduler node run"
            f" 'dfarm worker revoke {found.name}' and 'dfarm worker add {found.name}'"
        )
        if found.name is None:
            where = worker.secret_file
            fix = (
                f"the pool secret in {where} is not the scheduler's: copy HOME/worker.secret"
                " from the scheduler node again"
            )
        self.state.identity = Identity(
            p.Role.WORKER,
            found.name or f"doctor-{socket.gethostname()}",
            p.password_key(found.secret),
            fix,
        )
        what = "pool secret" if found.name is None else f"worker {found.name}'s credential"
        return f"{worker.scheduler} ({sources['scheduler']}), {what} {where}"

    def reach(self) -> str:
        host, port = self.state.host, self.state.port
        started = time.monotonic()
        try:
            self.state.sock = socket.create_connection((host, port), timeout=self.timeout)
        except socket.gaierror as exc:
            raise Failed(
                f"cannot resolve {host!r}: {exc.strerror}",
                "use the scheduler's address or a name this host can resolve (DNS, /etc/hosts)",
            ) from None
        except TimeoutError:
            raise Failed(
                f"no answer from {_address(host, port)} in {self.timeout:g} s",
                f"a firewall drops port {port}: open it on the scheduler host (and between "
                "the hosts), or check the address",
            ) from None
        except OSError as exc:
            raise Failed(
                f"cannot connect to {_address(host, port)}: {exc.strerror or exc}",
                f"start the scheduler ('systemctl status dfarm-scheduler'), and check that "
                f"it listens on port {port} of an address this host reaches (its 'host' "
                "and 'port' settings)",
            ) from None
        rtt = (time.monotonic() - started) * 1000
        if self.state.pin:
            try:
                self.state.sock = client_context().wrap_socket(self.state.sock)
                check_pin(self.state.sock, self.state.pin)
            except (OSError, TlsError) as exc:
                raise Failed(
                    f"TLS with {_address(host, port)} failed: {_describe(exc)}",
                    "check that the scheduler runs with --tls and that the fingerprint you"
                    " pin is the one in its access.json",
                ) from None
            return f"connected to {_address(host, port)} in {rtt:.1f} ms, TLS certificate pinned"
        return f"connected to {_address(host, port)} in {rtt:.1f} ms"

    def authenticate(self) -> str:
        sock, identity = self.state.sock, self.state.identity
        assert sock is not None and identity is not None
        hello = p.Hello(
            role=identity.role.value, version=p.PROTOCOL_VERSION, name=identity.name,
            nonce=p.new_nonce(),
        )  # fmt: skip
        try:
            sock.sendall(p.encode(hello))
            challenge = p.recv_message(sock)
            if isinstance(challenge, p.Error):
                raise p.HandshakeError(challenge.message, challenge.code)
            self._sent = time.time()
            sock.sendall(p.encode(p.answer_challenge(identity.key, hello, challenge)))
            assert isinstance(challenge, p.Challenge)
            welcome = p.recv_message(sock)
            self._received = time.time()
            p.verify_welcome(identity.key, hello, challenge, welcome)
        except p.HandshakeError as exc:
            fix = identity.fix
            if "version" in str(exc):
                fix = "install the same dfarm version on this host and the scheduler"
            raise Failed(f"the scheduler refused: {exc}", fix) from None
        except (OSError, p.ProtocolError) as exc:
            raise Failed(
                f"the handshake broke off: {exc}",
                "check that HOST:PORT is the dfarm scheduler's socket port, not its FTP port",
            ) from None
        assert isinstance(welcome, p.Welcome)
        self.state.welcome = welcome
        return f"{identity.role.value} {identity.name} accepted by {welcome.server_name}"

    def clock(self) -> str:
        welcome = self.state.welcome
        assert welcome is not None
        offset = welcome.server_time - (self._sent + self._received) / 2
        if abs(offset) > CLOCK_TOLERANCE:
            raise Failed(
                f"the scheduler's clock is {offset:+.1f} s from this host's",
                "synchronize both clocks with NTP (chronyd or systemd-timesyncd; "
                "'timedatectl' shows whether it is on)",
            )
        return f"offset {offset * 1000:+.0f} ms"

    def ftp_login(self) -> str:
        sock = self.state.sock
        assert sock is not None
        try:
            sock.sendall(p.encode(p.ProbeFtp(id=1)))
            reply = p.recv_message(sock)
        except (OSError, p.ProtocolError) as exc:
            raise Failed(
                f"the scheduler did not answer: {exc}", "see the scheduler's log"
            ) from None
        if isinstance(reply, p.Error):
            raise Failed(
                f"the scheduler cannot lend an FTP probe: {reply.message}",
                "upgrade the scheduler to this version of dfarm",
            )
        assert isinstance(reply, p.ProbeGranted)
        self.state.probe = reply
        grant = reply.ftp
        try:
            ftp = self._ftp.enter_context(ftp_session(grant, timeout=self.timeout))
            ftp.voidcmd("TYPE I")
        except (OSError, EOFError, ftplib.Error, TlsError) as exc:
            raise Failed(
                f"FTP control connection to {_address(grant.host, grant.port)} failed: "
                f"{_describe(exc)}",
                f"open the FTP port {grant.port} ('ftp_port' in scheduler.toml; fix it there "
                "if it is 0) in the scheduler host's firewall",
            ) from None
        self.state.ftp = ftp
        return f"logged in to {_address(grant.host, grant.port)}"

    def upload(self) -> str:
        self.state.data = secrets.token_bytes(PROBE_BYTES)
        remote = f"{self._probe().directory}/probe.bin"
        with self._data_connection(f"STOR {remote}") as conn:
            conn.sendall(self.state.data)
            if isinstance(conn, ssl.SSLSocket):
                conn.unwrap()  # a clean end of TLS: the server sees the whole file
        self._end_transfer()
        return f"{len(self.state.data) // 1024} KiB sent"

    def download(self) -> str:
        remote = f"{self._probe().directory}/probe.bin"
        received = bytearray()
        with self._data_connection(f"RETR {remote}") as conn:
            while chunk := conn.recv(1 << 16):
                received += chunk
        self._end_transfer()
        if bytes(received) != self.state.data:
            raise Failed(
                f"the file came back changed ({len(received)} of {len(self.state.data)} bytes)",
                "something between the hosts alters FTP data (a proxy or an ALG): turn it off",
            )
        ftp = self.state.ftp
        assert ftp is not None
        # (What is left, the scheduler removes with the next probe.)
        with contextlib.suppress(OSError, EOFError, ftplib.Error):
            ftp.delete(remote)
            ftp.rmd(self._probe().directory)
        return f"{len(received) // 1024} KiB received intact"

    # -- helpers -----------------------------------------------------------------

    def _probe(self) -> p.ProbeGranted:
        assert self.state.probe is not None
        return self.state.probe

    def _data_connection(self, command: str) -> socket.socket:
        """Open a passive data connection and start ``command`` on it."""
        ftp, probe = self.state.ftp, self._probe()
        assert ftp is not None
        try:
            announced, port = ftp.makepasv()
        except (OSError, EOFError, ftplib.Error) as exc:
            raise Failed(f"PASV failed: {_describe(exc)}", "see the scheduler's log") from None
        # Like ftplib, connect to the control connection's host (NAT rewrites it).
        host = probe.ftp.host
        try:
            conn = socket.create_connection((host, port), timeout=self.timeout)
        except OSError as exc:
            ports = probe.passive_ports
            where = f"ports {ports}" if ports else "ports (any port: no range is set)"
            fix = (
                f"open the scheduler's FTP passive {where} in the firewall of the scheduler "
                "host and between the hosts"
            )
            if not ports:
                fix += "; set ftp_passive_ports in scheduler.toml to a range you can open"
            if announced != host:
                fix += (
                    f"; the server announces {announced} in passive mode: set "
                    f'masquerade_address = "{host}" if it is behind NAT'
                )
            raise Failed(
                f"the passive data connection to {_address(host, port)} failed "
                f"({_describe(exc)}): the FTP passive port range is closed",
                fix,
            ) from None
        try:
            ftp.sendcmd(command)
            if isinstance(ftp, ftplib.FTP_TLS):  # as ftplib does: TLS after the command
                conn = ftp.context.wrap_socket(conn, server_hostname=host)
        except (OSError, EOFError, ftplib.Error) as exc:
            conn.close()
            raise Failed(f"{command.split()[0]} refused: {_describe(exc)}",
                         "see the scheduler's log") from None  # fmt: skip
        return conn

    def _end_transfer(self) -> None:
        ftp = self.state.ftp
        assert ftp is not None
        try:
            ftp.voidresp()
        except (OSError, EOFError, ftplib.Error) as exc:
            raise Failed(f"the transfer did not complete: {_describe(exc)}",
                         "see the scheduler's log") from None  # fmt: skip

    def close(self) -> None:
        self._ftp.close()
        if self.state.sock is not None:
            self.state.sock.close()


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dfarm doctor", description="Check step by step that this host can use dfarm."
    )
    parser.add_argument("--scheduler", metavar="HOST:PORT", help="the scheduler to check")
    parser.add_argument(
        "--worker", action="store_true", help="check as this host's worker (worker.toml, secret)"
    )
    parser.add_argument("--config", type=Path, help="with --worker: the worker's config file")
    parser.add_argument(
        "--credential-file", type=Path, help="with --worker: the worker's credential"
    )
    parser.add_argument("--secret-file", type=Path, help="with --worker: the worker pool secret")
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="seconds each step may wait (default 5)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.worker and (args.config or args.secret_file or args.credential_file):
        print(
            "dfarm doctor: error: --config, --credential-file and --secret-file go with --worker",
            file=sys.stderr,
        )
        return 2
    try:
        return Doctor(args).run()
    except KeyboardInterrupt:
        return 130
