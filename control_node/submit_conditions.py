"""``if`` / ``elif`` / ``else`` / ``endif`` in a submit file, as HTCondor's configuration
language has them, for the simple conditions:

- ``if defined NAME`` (and ``if ! defined NAME``): NAME has a non-empty value;
- ``if VALUE``: after macro expansion, ``true``/``yes`` or a non-zero number is true,
  ``false``/``no`` or zero is false.

Other conditions (``version >=``, ClassAd expressions) are refused with a clear error.
Blocks nest; lines inside a false branch are skipped without being expanded.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["ConditionError", "Conditions"]

_DEFINED = re.compile(r"(!\s*)?defined\s+([A-Za-z_][A-Za-z0-9_.]*)", re.IGNORECASE)
_TRUE = frozenset({"true", "yes"})
_FALSE = frozenset({"false", "no"})


class ConditionError(ValueError):
    """A conditional line that is out of place or cannot be evaluated."""


@dataclass
class _Block:
    line: int
    outer_active: bool
    taken: bool  # a branch of this block was (or is) active
    active: bool
    seen_else: bool = False


class Conditions:
    """Tracks the open ``if`` blocks; :attr:`active` says whether lines take effect."""

    def __init__(self, defined: Callable[[str], bool], expand: Callable[[str], str]) -> None:
        self.defined, self.expand = defined, expand
        self.blocks: list[_Block] = []

    @property
    def active(self) -> bool:
        return not self.blocks or self.blocks[-1].active

    def step(self, kind: str, text: str, line: int) -> None:
        """Apply one conditional line (``kind`` is if, elif, else or endif)."""
        if kind == "if":
            outer = self.active
            value = outer and self.evaluate(text)
            self.blocks.append(_Block(line, outer, value, value))
            return
        if not self.blocks:
            raise ConditionError(f"'{kind}' without an 'if'")
        block = self.blocks[-1]
        if kind == "endif":
            self.blocks.pop()
            return
        if block.seen_else:
            raise ConditionError(f"'{kind}' after 'else'")
        if kind == "else":
            if text:
                raise ConditionError("'else' takes no condition (use 'elif')")
            block.seen_else = True
            block.active = block.outer_active and not block.taken
        else:
            block.active = block.outer_active and not block.taken and self.evaluate(text)
        block.taken = block.taken or block.active

    def evaluate(self, text: str) -> bool:
        if not text:
            raise ConditionError("'if' needs a condition")
        m = _DEFINED.fullmatch(text)
        if m:
            return self.defined(m.group(2).lower()) != bool(m.group(1))
        value = self.expand(text).strip().lower()
        if value in _TRUE or value in _FALSE:
            return value in _TRUE
        try:
            return float(value) != 0
        except ValueError:
            raise ConditionError(
                f"cannot evaluate 'if {text}': dfarm supports 'defined NAME', '! defined NAME'"
                " and values that are true, false, yes, no or a number"
            ) from None
