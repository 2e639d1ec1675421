"""The random macro functions of a submit file, and the values each proc drew.

HTCondor's ``$RANDOM_INTEGER(min, max[, step])`` (an integer from ``min`` to ``max``
inclusive, on the stride ``step`` from ``min``) and ``$RANDOM_CHOICE(a, b, ...)``, and
two dfarm extensions for parameter studies: ``$RANDOM_NORMAL(mean, sd)`` (a normal draw)
and ``$RANDOM_UNIFORM(low, high)`` (uniform on [low, high)).

Each proc draws from its own generator, seeded with the file's ``random_seed`` and the
proc number, so a seed gives every proc the same values again, whatever the others do.
A macro is expanded once per proc, so ``x = $RANDOM_NORMAL(10, 2)`` used twice gives
one value. Every value drawn is recorded under the name of the macro (or submit key)
that holds the call, to be stored with the job.
"""

from __future__ import annotations

import math
import random

from control_node.submit_values import INT

__all__ = ["RandomDraws"]

MAX_INT_RANGE = 2**63


def _floats(func: str, args: list[str], names: tuple[str, ...]) -> list[float]:
    if len(args) != len(names):
        raise ValueError(f"${func}() takes {len(names)} arguments ({', '.join(names)})")
    values = []
    for name, text in zip(names, args, strict=True):
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"${func}(): {name} must be a number, not {text!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"${func}(): {name} must be a finite number, not {text!r}")
        values.append(value)
    return values


def _number(value: float) -> str:
    """A drawn number as the job sees it: up to 10 significant digits."""
    return f"{value:.10g}"


class RandomDraws:
    """The random functions for one proc, and what they drew (``drawn``: name -> value)."""

    def __init__(self, seed: int, proc: int) -> None:
        self.seed, self.proc = seed, proc
        self._rng: random.Random | None = None
        self.drawn: dict[str, str] = {}

    @property
    def rng(self) -> random.Random:
        if self._rng is None:  # made on first use: most procs draw nothing
            # A string seed is hashed by Python the same way on every run and platform.
            self._rng = random.Random(f"dfarm:{self.seed}:{self.proc}")
        return self._rng

    def __call__(self, func: str, text: str, owner: str) -> str:
        """Evaluate ``$func(text)`` (arguments already expanded) for macro ``owner``."""
        args = [a.strip() for a in text.split(",")]
        value = getattr(self, func.lower())(func, args)
        name, n = owner, 1
        while name in self.drawn:
            n += 1
            name = f"{owner}#{n}"
        self.drawn[name] = value
        return value

    def random_integer(self, func: str, args: list[str]) -> str:
        if len(args) not in (2, 3) or not all(INT.fullmatch(a) for a in args):
            raise ValueError(f"${func}() takes whole numbers: min, max[, step]; got {args!r}")
        low, high, step = int(args[0]), int(args[1]), int(args[2]) if len(args) == 3 else 1
        if step <= 0:
            raise ValueError(f"${func}(): step must be positive, not {step}")
        if low > high:
            raise ValueError(f"${func}(): min {low} is greater than max {high}")
        if high - low > MAX_INT_RANGE:
            raise ValueError(f"${func}(): the range is too large")
        return str(self.rng.randrange(low, high + 1, step))

    def random_choice(self, func: str, args: list[str]) -> str:
        if not any(args):
            raise ValueError(f"${func}() needs at least one choice")
        return self.rng.choice(args)

    def random_normal(self, func: str, args: list[str]) -> str:
        mean, sd = _floats(func, args, ("mean", "standard deviation"))
        if sd < 0:
            raise ValueError(f"${func}(): the standard deviation must not be negative")
        return _number(self.rng.gauss(mean, sd))

    def random_uniform(self, func: str, args: list[str]) -> str:
        low, high = _floats(func, args, ("low", "high"))
        if low > high:
            raise ValueError(f"${func}(): low {args[0]} is greater than high {args[1]}")
        return _number(self.rng.uniform(low, high))
