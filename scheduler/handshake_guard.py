"""Rate limiting of failed handshakes, per peer address.

An address that fails ``limit`` handshakes (wrong key, garbage instead of ``hello``,
silence) within ``window`` seconds is refused at once until its oldest failure
leaves the window: guessing tokens costs real time, and a flood of bad
connections costs the scheduler one dictionary lookup each and one log line per
block, not one per attempt.
"""

from __future__ import annotations

import collections
import logging

log = logging.getLogger("scheduler.server")

#: Addresses remembered at most; the stalest are forgotten first.
MAX_ADDRESSES = 10_000


class HandshakeGuard:
    def __init__(self, limit: int, window: float):
        self.limit = max(1, limit)
        self.window = window
        self._failures: collections.OrderedDict[str, collections.deque[float]] = (
            collections.OrderedDict()
        )
        self._blocked_logged: set[str] = set()

    def _recent(self, address: str, now: float) -> collections.deque[float]:
        times = self._failures.get(address)
        if times is None:
            return collections.deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[address]
            self._blocked_logged.discard(address)
        return times

    def blocked_for(self, address: str, now: float) -> float:
        """Seconds ``address`` is still refused (0: it may try)."""
        times = self._recent(address, now)
        if len(times) < self.limit:
            return 0.0
        if address not in self._blocked_logged:
            self._blocked_logged.add(address)
            log.warning(
                "%d failed handshakes from %s in %.0f s: refusing it for %.0f s",
                len(times),
                address,
                self.window,
                times[0] + self.window - now,
            )
        return times[0] + self.window - now

    def failed(self, address: str, now: float) -> None:
        times = self._failures.setdefault(address, collections.deque(maxlen=self.limit))
        times.append(now)
        self._failures.move_to_end(address)
        while len(self._failures) > MAX_ADDRESSES:
            stale, _ = self._failures.popitem(last=False)
            self._blocked_logged.discard(stale)
