"""Who is asking: server-side sessions, login with a user's token, CSRF tokens.

A browser holds only a random session id, in an HttpOnly, SameSite=Strict cookie;
the user it belongs to and its CSRF token live here, in the scheduler's memory (a
restarted scheduler asks everyone to log in again). Every POST must carry the
session's CSRF token, as a form field or an ``X-CSRF-Token`` header. A script may
instead send ``Authorization: Bearer NAME:SECRET`` with each request; it needs no
cookie and no CSRF token, since a browser never adds that header by itself.
"""

from __future__ import annotations

import asyncio
import hmac
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from scheduler import protocol as p
from scheduler.connection import plain_host
from scheduler.handshake_guard import HandshakeGuard, identity
from scheduler.protocol import Role
from scheduler.store import Store

COOKIE = "dfarm_session"
#: Seconds a session lives without being used.
IDLE_TIMEOUT = 12 * 3600
#: Most sessions kept; the least recently used go first.
MAX_SESSIONS = 10_000
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class WebUser:
    """The caller of a scheduler handler on behalf of a web user: what the handlers
    read of a connection (its user name, and the address FTP grants would name)."""

    name: str
    local_host: str = "127.0.0.1"
    role: Role = Role.CONTROL
    peer: str = "web"
    #: An admin may act on every job (see :mod:`scheduler.authz`).
    admin: bool = False


@dataclass
class Session:
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    user: str | None = None
    #: The StoredKey of the token the user logged in with: a replaced token, or a
    #: removed user, ends the session at its next request.
    key: bytes | None = None
    last_used: float = field(default_factory=lambda: time.monotonic())


class Sessions:
    """The live sessions, by id. Their idle time is the dashboard's HTTP layer's own,
    on the monotonic clock: a step of the system's clock neither ends nor extends
    them, and no scheduling decision reads it."""

    def __init__(self) -> None:
        self._by_id: OrderedDict[str, Session] = OrderedDict()

    def get(self, sid: str | None) -> Session | None:
        session = self._by_id.get(sid or "")
        if session is None:
            return None
        now = time.monotonic()
        if now - session.last_used > IDLE_TIMEOUT:
            del self._by_id[sid or ""]
            return None
        session.last_used = now
        self._by_id.move_to_end(sid or "")
        return session

    def new(self, user: str | None = None, key: bytes | None = None) -> tuple[str, Session]:
        """A fresh session (a new id at each login: an id seen before it is worthless)."""
        sid = secrets.token_urlsafe(32)
        session = Session(user=user, key=key)
        self._by_id[sid] = session
        while len(self._by_id) > MAX_SESSIONS:
            self._by_id.popitem(last=False)
        return sid, session

    def drop(self, sid: str | None) -> None:
        self._by_id.pop(sid or "", None)


def check_token(store: Store, token: str) -> tuple[str, bytes] | None:
    """The user a token belongs to and its StoredKey, or None if it is not a valid
    token (checked against the user's verifier, as the handshake does)."""
    if not token.isascii():  # names and secrets are ASCII; a header may carry anything
        return None
    try:
        name = p.token_user(token)
    except ValueError:
        return None
    verifier = store.accounts.user_verifier(name)
    if verifier is None:
        return None
    if not p.holds(verifier, p.user_key(token.strip())):
        return None
    return name, verifier.stored_key


def set_cookie(response: web.StreamResponse, request: web.Request, sid: str) -> None:
    response.set_cookie(
        COOKIE, sid, httponly=True, samesite="Strict", secure=request.secure, path="/"
    )


async def login_failed(request: web.Request, guard: HandshakeGuard, who: str = "") -> None:
    """Count a failed login against the caller's address (and identity ``who``), and
    answer it slowly: with 429 where that address or identity failed too often lately
    (the web and the socket protocol share the counts, see :mod:`handshake_guard`)."""
    address = plain_host(request.remote or "")
    wait = guard.blocked_for(address, who)
    guard.failed(address, who)
    await asyncio.sleep(0.2)  # slows down guessing
    if wait > 0:
        raise web.HTTPTooManyRequests(
            text=f"too many failed logins from your address: try again in {wait:.0f} s",
            headers={"Retry-After": str(math.ceil(wait))},
        )


def session_middleware(
    sessions: Sessions, store: Store, guard: HandshakeGuard
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Attach ``request["session"]`` (every visitor has one, so that the login form is
    protected by CSRF too) and ``request["user"]``; check the CSRF token of every POST."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        bearer = request.headers.get("Authorization", "")
        if bearer.startswith("Bearer "):
            # A right token is let in even where others failed from this address; the
            # check of a blocked guesser's token (a PBKDF2) runs off the loop.
            who = _token_identity(bearer[7:])
            if guard.blocked_for(plain_host(request.remote or ""), who):
                loop = asyncio.get_running_loop()
                found = await loop.run_in_executor(None, check_token, store, bearer[7:])
            else:
                found = check_token(store, bearer[7:])
            if found is None:
                await login_failed(request, guard, who)
                raise web.HTTPUnauthorized(text="invalid token")
            user = found[0]
            request["key"] = found[1]
            request["session"], request["user"] = (
                None,
                WebUser(user, admin=store.accounts.is_admin(user)),
            )
            return await handler(request)
        sid = request.cookies.get(COOKIE)
        session = sessions.get(sid)
        if session is not None and session.user and not _still_valid(store, session):
            sessions.drop(sid)
            session = None
        fresh = session is None
        if session is None:
            sid, session = sessions.new()
        request["session"], request["sid"] = session, sid
        request["user"] = (
            WebUser(session.user, admin=store.accounts.is_admin(session.user))
            if session.user
            else None
        )
        if request.method == "POST":
            await _check_csrf(request, session)
        response = await handler(request)
        if fresh and sid is not None and request.get("sid") == sid:
            set_cookie(response, request, sid)
        return response

    return middleware


#: Paths whose handler reads a multipart body as a stream and checks its CSRF field
#: itself, with :func:`csrf_ok` (the form puts it first).
STREAMED_FORMS = frozenset({"/submit"})


async def _check_csrf(request: web.Request, session: Session) -> None:
    sent: object = request.headers.get("X-CSRF-Token")
    if sent is None and request.content_type == "multipart/form-data":
        if request.path in STREAMED_FORMS:
            return
    elif sent is None and request.content_type == "application/x-www-form-urlencoded":
        sent = (await request.post()).get("csrf")  # aiohttp keeps the parsed form
    if not _same_csrf(sent, session):
        raise web.HTTPForbidden(text="missing or wrong CSRF token: reload the page and retry")


def _token_identity(token: str) -> str:
    """The identity a token claims, as the guard counts it (see :mod:`handshake_guard`)."""
    try:
        return identity(Role.CONTROL.value, p.token_user(token))
    except ValueError:
        return ""


def still_logged_in(request: web.Request, sessions: Sessions, store: Store) -> bool:
    """Whether the caller of a long request (an event stream) is still logged in:
    its session not ended (logout, a new token, a removed user), or, with a bearer
    token, that token still the user's."""
    session, user = request.get("session"), request.get("user")
    if session is None:
        verifier = store.accounts.user_verifier(user.name if user else "")
        key = request.get("key")
        return (
            verifier is not None
            and key is not None
            and hmac.compare_digest(verifier.stored_key, key)
        )
    found = sessions.get(request.get("sid"))
    return found is not None and found is session and _still_valid(store, found)


def _still_valid(store: Store, session: Session) -> bool:
    verifier = store.accounts.user_verifier(session.user or "")
    return (
        verifier is not None
        and session.key is not None
        and hmac.compare_digest(verifier.stored_key, session.key)
    )


def csrf_ok(request: web.Request, sent: object) -> bool:
    """Whether ``sent`` is the CSRF token of the request's session (a request with a
    bearer token has no session and needs none)."""
    session = request.get("session")
    return session is None or _same_csrf(sent, session)


def _same_csrf(sent: object, session: Session) -> bool:
    """Whether ``sent`` is the session's CSRF token; a value with characters beyond
    ASCII (which ``compare_digest`` refuses for text) is simply not it."""
    return isinstance(sent, str) and hmac.compare_digest(
        sent.encode("utf-8", "surrogateescape"), session.csrf.encode()
    )


def login(request: web.Request, sessions: Sessions, user: str, key: bytes) -> str:
    """Start a new session for ``user`` (``key``: their token's StoredKey now),
    replacing the visitor's; returns its id."""
    sessions.drop(request.get("sid"))
    sid, _ = sessions.new(user, key)
    request["sid"] = sid
    return sid


def require_user(request: web.Request) -> WebUser:
    """The logged-in user; pages redirect to the login page, the API answers 401."""
    user = request.get("user")
    if user is None:
        if request.path.startswith("/api/"):
            raise web.HTTPUnauthorized(text="log in first")
        raise web.HTTPSeeOther("/login")
    return user
