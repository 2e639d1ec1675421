"""Client.map: count the primes below each bound on the farm, then search for a
twin-prime pair above a million, stopping the search at the first hit.

    .venv/bin/python submit_examples/map_primes.py      # with a cluster up (dfarm up)
"""

from __future__ import annotations

import math

from control_node import Client


def count_primes(bound: int) -> int:
    """Primes below ``bound``, by trial division: a few hundred milliseconds of work."""
    return sum(1 for n in range(2, bound) if all(n % d for d in range(2, math.isqrt(n) + 1)))


def twin_pair(n: int) -> tuple[int, int] | None:
    """``(n, n + 2)`` if both are prime, else None."""

    def prime(k: int) -> bool:
        return k > 1 and all(k % d for d in range(2, math.isqrt(k) + 1))

    return (n, n + 2) if prime(n) and prime(n + 2) else None


def main() -> None:
    with Client() as client:
        bounds = [10_000 * k for k in range(1, 9)]
        counts = client.map(count_primes, bounds, chunk_size=2)
        for bound, count in counts.items():
            print(f"primes below {bound:>6}: {count}")
        slow = max(counts.stats, key=lambda s: s.seconds)
        print(f"slowest item: {bounds[slow.index]} on {slow.worker} ({slow.seconds:.2f} s)")

        found = client.map(twin_pair, range(1_000_001, 1_002_001, 2), chunk_size=25, stop_when=bool)
        # The first result to arrive that met stop_when; the other jobs were removed.
        print(f"twin primes above a million: {found.hit} ({len(found.not_run)} items never run)")
        # Items that end together are taken in order, so this is most often the
        # lowest pair, (1000037, 1000039); a chunk delayed on a busy worker can let a
        # later pair arrive first.


if __name__ == "__main__":
    main()
