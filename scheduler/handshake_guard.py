"""Rate limiting of failed handshakes, per peer address and per identity.

A failure (wrong proof, garbage instead of ``hello``, silence) counts against the
peer's address and, when it named one, against the identity it claimed (role and
name). An address or identity with ``limit`` failures within ``window`` seconds is
*blocked* until its oldest failure leaves the window. Blocking limits wrong
guesses only: a blocked peer still gets its handshake, and a right proof is
welcome (others' failures never lock out a valid credential); a wrong one is
refused after the usual delay with "too many failed handshakes", and logged once
per block, not once per attempt. Web logins share the counts.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable

log = logging.getLogger("scheduler.server")

#: Addresses (and identities) remembered at most; the stalest are forgotten first.
MAX_ADDRESSES = 10_000


def identity(role: str, name: str) -> str:
    """The key an identity's failures are counted under."""
    return f"{role[:20]} {name[:100]!r}"


class _Failures:
    """Recent failure times by key, at most ``limit`` each."""

    def __init__(self, limit: int, window: float, what: str):
        self.limit, self.window, self.what = limit, window, what
        self._times: collections.OrderedDict[str, collections.deque[float]] = (
            collections.OrderedDict()
        )
        self._logged: set[str] = set()

    def _recent(self, key: str, now: float) -> collections.deque[float]:
        times = self._times.get(key)
        if times is None:
            return collections.deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._times[key]
            self._logged.discard(key)
        return times

    def blocked_for(self, key: str, now: float) -> float:
        times = self._recent(key, now)
        if len(times) < self.limit:
            return 0.0
        wait = times[0] + self.window - now
        if key not in self._logged:
            self._logged.add(key)
            log.warning(
                "%d failed handshakes %s %s in %.0f s: refusing its wrong guesses for %.0f s",
                len(times), self.what, key, self.window, wait,
            )  # fmt: skip
        return wait

    def failed(self, key: str, now: float) -> None:
        times = self._times.setdefault(key, collections.deque(maxlen=self.limit))
        times.append(now)
        self._times.move_to_end(key)
        while len(self._times) > MAX_ADDRESSES:
            stale, _ = self._times.popitem(last=False)
            self._logged.discard(stale)


class HandshakeGuard:
    """Counts failed handshakes; ``clock`` (default :func:`time.monotonic`) says when."""

    def __init__(
        self, limit: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = max(1, limit)
        self.window = window
        self.clock = clock
        self._addresses = _Failures(self.limit, window, "from")
        self._identities = _Failures(self.limit, window, "for")

    def blocked_for(self, address: str, who: str = "") -> float:
        """Seconds ``address`` (or identity ``who``) is still blocked (0: not blocked)."""
        now = self.clock()
        wait = self._addresses.blocked_for(address, now)
        if who:
            wait = max(wait, self._identities.blocked_for(who, now))
        return wait

    def failed(self, address: str, who: str = "") -> None:
        """Count a failure of ``address``, claiming identity ``who`` (if any)."""
        now = self.clock()
        self._addresses.failed(address, now)
        if who:
            self._identities.failed(who, now)
