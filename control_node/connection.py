"""A blocking, authenticated connection from a control node to the scheduler.

Blocking sockets (no event loop) so the client works the same from a script, a
Jupyter notebook or a thread of an asyncio program.
"""

from __future__ import annotations

import collections
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any

from scheduler import protocol as p
from scheduler.transport.tls import TlsError, check_pin, client_context, normalize_fingerprint


def _tls_errors() -> tuple[type[Exception], ...]:
    """:class:`TlsError`, and ``ssl.SSLError`` once ssl is imported (by a TLS
    connection): before, none can have been raised, and a command without TLS starts
    without importing ssl."""
    ssl = sys.modules.get("ssl")
    return (TlsError, ssl.SSLError) if ssl is not None else (TlsError,)


class DfarmError(Exception):
    """Base of every error the client raises."""


class SchedulerUnavailable(DfarmError):
    """The scheduler cannot be found or reached."""


class AuthError(DfarmError):
    """The scheduler refused our token, or is not the scheduler it claims to be."""


class NotFound(DfarmError):
    """No such job or cluster (of yours)."""


class RequestFailed(DfarmError):
    """The scheduler refused a request; the message says why."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    token: str
    #: The scheduler's certificate, when it speaks TLS.
    tls_fingerprint: str | None = None


def find_endpoint(scheduler: str | None = None, token: str | None = None) -> Endpoint:
    """Where the scheduler is and who we are: arguments, then ``DFARM_SCHEDULER``,
    ``DFARM_TOKEN`` and ``DFARM_TLS_FINGERPRINT``, then ``$DFARM_HOME/access.json``
    (default ``~/.dfarm``), then, for the token, the one ``dfarm up`` keeps there
    (the scheduler rewrites the record without it each time it starts)."""
    scheduler = scheduler or os.environ.get("DFARM_SCHEDULER")
    token = token or os.environ.get("DFARM_TOKEN")
    pinned = os.environ.get("DFARM_TLS_FINGERPRINT") or None
    record = None
    access = p.default_home() / p.ACCESS_FILE
    if (not scheduler or not token or not pinned) and access.exists():
        try:
            record = p.AccessRecord.load(access)
        except p.ProtocolError as exc:
            raise SchedulerUnavailable(str(exc)) from None
    if scheduler:
        host, sep, port = scheduler.rpartition(":")
        if not sep or not port.isdigit():
            raise SchedulerUnavailable(f"scheduler address must be HOST:PORT, not {scheduler!r}")
        host, port_number = host.strip("[]"), int(port)
    elif record is not None:
        host, port_number = record.host, record.port
    else:
        raise SchedulerUnavailable(
            f"no scheduler found: pass --scheduler HOST:PORT, set DFARM_SCHEDULER, or start "
            f"one with 'dfarm up' (looked for {access}; {_home_hint()})"
        )
    token = token or (record.token if record else None) or _local_token()
    if not token:
        raise AuthError(
            "no user token: set DFARM_TOKEN (an administrator creates one with 'dfarm user add')"
        )
    # The record's pin is for the record's scheduler only.
    if (
        pinned is None
        and record is not None
        and (not scheduler or (host, port_number) == (record.host, record.port))
    ):
        pinned = record.tls_fingerprint
    if pinned is not None:
        try:
            pinned = normalize_fingerprint(pinned)
        except ValueError as exc:
            raise AuthError(f"DFARM_TLS_FINGERPRINT: {exc}") from None
    return Endpoint(host, port_number, token, pinned)


def _home_hint() -> str:
    """Where that path came from: ``DFARM_HOME``, and how to point it elsewhere."""
    home = os.environ.get("DFARM_HOME")
    where = f"DFARM_HOME is {home}" if home else "DFARM_HOME is not set, so ~/.dfarm"
    return f"{where}; after 'dfarm up --home DIR', set DFARM_HOME=DIR"


def _local_token() -> str | None:
    """The token of the user who ran ``dfarm up`` in the state directory, if readable."""
    try:
        return (p.default_home() / p.LOCAL_TOKEN_FILE).read_text().strip() or None
    except OSError:
        return None


#: What the scheduler pushes unasked, to a client that subscribed or awaits clusters.
Pushed = p.JobUpdate | p.ClusterDone


class Connection:
    """One authenticated session; :meth:`request` sends and waits for the reply."""

    def __init__(
        self, endpoint: Endpoint, timeout: float = 30.0, max_frame: int = p.DEFAULT_MAX_FRAME
    ):
        self.endpoint = endpoint
        self.timeout = timeout
        #: The largest frame read: a longer one ends the connection.
        self.max_frame = max_frame
        self.updates: collections.deque[Pushed] = collections.deque()
        self._ids = iter(range(1, 1 << 62))
        try:
            user = p.token_user(endpoint.token)
        except ValueError as exc:
            raise AuthError(f"DFARM_TOKEN: {exc}") from None
        try:
            self.sock = socket.create_connection((endpoint.host, endpoint.port), timeout=timeout)
        except OSError as exc:
            raise SchedulerUnavailable(
                f"cannot reach the scheduler at {endpoint.host}:{endpoint.port}: "
                f"{exc.strerror or exc}"
            ) from None
        try:
            if endpoint.tls_fingerprint:
                self.sock = client_context().wrap_socket(self.sock)
                check_pin(self.sock, endpoint.tls_fingerprint)
            self._handshake(user, p.user_key(endpoint.token))
        except _tls_errors() as exc:
            self.close()
            raise AuthError(f"TLS with {endpoint.host}:{endpoint.port} failed: {exc}") from None
        except SchedulerUnavailable as exc:
            self.close()
            if endpoint.tls_fingerprint:
                raise
            raise SchedulerUnavailable(
                f"{exc} during the handshake (if it runs with --tls, set DFARM_TLS_FINGERPRINT"
                " to the fingerprint in its access.json)"
            ) from None
        except BaseException:
            self.close()
            raise
        self.user = user

    def _handshake(self, user: str, key: bytes) -> None:
        hello = p.Hello(role="control", version=p.PROTOCOL_VERSION, name=user, nonce=p.new_nonce())
        try:
            self._send(hello)
            challenge = self._recv()
            self._send(p.answer_challenge(key, hello, challenge))
            assert isinstance(challenge, p.Challenge)
            p.verify_welcome(key, hello, challenge, self._recv())
        except p.HandshakeError as exc:
            raise AuthError(f"the scheduler refused the connection: {exc}") from None

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, message: p.Message) -> None:
        try:
            self.sock.sendall(p.encode(message))
        except OSError as exc:
            raise SchedulerUnavailable(f"lost the connection to the scheduler: {exc}") from None

    def _recv(self, timeout: float | None = None) -> p.Message:
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            return p.recv_message(self.sock, self.max_frame)
        except (OSError, ConnectionError) as exc:
            if isinstance(exc, TimeoutError):
                raise
            raise SchedulerUnavailable(f"lost the connection to the scheduler: {exc}") from None
        except p.ProtocolError as exc:
            raise SchedulerUnavailable(f"bad reply from the scheduler: {exc}") from None

    def request(self, message: p.Message) -> p.Message:
        """Send a request and return its reply; pushed updates are kept in ``updates``."""
        request_id = next(self._ids)
        self._send(message.with_id(request_id))
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                reply = self._recv(max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                raise SchedulerUnavailable("the scheduler did not answer in time") from None
            if isinstance(reply, Pushed):
                self.updates.append(reply)
            elif reply.id == request_id:
                break
        if isinstance(reply, p.Error):
            kind = {"not_found": NotFound, "auth": AuthError}.get(reply.code, RequestFailed)
            raise kind(reply.message)
        return reply

    def send_request(self, message: p.Message) -> int:
        """Send a request without waiting: its id, for :meth:`raw_reply`."""
        request_id = next(self._ids)
        self._send(message.with_id(request_id))
        return request_id

    def raw_reply(self, request_id: int) -> dict[str, Any]:
        """The reply to ``request_id`` as the JSON data it came as, not made records
        (for a caller that writes it out as it is); pushed updates are kept in
        ``updates``, an error reply raised as :meth:`request` does."""
        deadline = time.monotonic() + self.timeout
        while True:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                body = p.recv_frame(self.sock, self.max_frame)
                data = p.parse_json(body)
            except TimeoutError:
                raise SchedulerUnavailable("the scheduler did not answer in time") from None
            except (OSError, ConnectionError) as exc:
                raise SchedulerUnavailable(f"lost the connection to the scheduler: {exc}") from None
            except p.ProtocolError as exc:
                raise SchedulerUnavailable(f"bad reply from the scheduler: {exc}") from None
            if not isinstance(data, dict) or data.get("id") != request_id:
                message = self._decoded(body)
                if isinstance(message, Pushed):
                    self.updates.append(message)
                continue
            if data.get("type") == p.Error.type:
                error = self._decoded(body)
                assert isinstance(error, p.Error)
                kind = {"not_found": NotFound, "auth": AuthError}.get(error.code, RequestFailed)
                raise kind(error.message)
            return data

    @staticmethod
    def _decoded(body: bytes) -> p.Message:
        try:
            return p.decode(body)
        except p.ProtocolError as exc:
            raise SchedulerUnavailable(f"bad reply from the scheduler: {exc}") from None

    def next_update(self, timeout: float) -> Pushed | None:
        """The next pushed message, or None after ``timeout`` seconds."""
        if self.updates:
            return self.updates.popleft()
        try:
            message = self._recv(timeout)
        except TimeoutError:
            return None
        return message if isinstance(message, Pushed) else None


def dump_json(value: object) -> str:
    """Records as the ``--json`` output of the commands prints them."""
    return json.dumps(p.to_wire(value), indent=2)
