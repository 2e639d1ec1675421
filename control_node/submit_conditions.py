"""``if`` / ``elif`` / ``else`` / ``endif`` in a submit file, as HTCondor's configuration
language has them, for the simple conditions:

- ``if defined NAME`` (and ``if ! defined NAME``): NAME has a non-empty value (of the
  predefined macros, ``Cluster``, ``Process``, their ``Id`` forms, ``Step``,
  ``ItemIndex`` and ``Row`` are defined, as condor_submit says);
- ``if version OP X.Y[.Z]``: the version of the submit language read, HTCondor 24.12.24;
- ``if VALUE``: after macro expansion, ``true``/``yes`` or a non-zero number is true,
  ``false``/``no``, zero or nothing is false.

Other conditions (comparisons, ``&&``, ClassAd expressions) are refused, as
condor_submit refuses them.
Blocks nest; lines inside a false branch are skipped without being expanded.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["ConditionError", "Conditions"]

_DEFINED = re.compile(r"(!\s*)?defined(?:\s+([A-Za-z_][A-Za-z0-9_.]*))?", re.IGNORECASE)
_VERSION = re.compile(r"version\s*(==|!=|>=|<=|>|<)\s*([0-9]+)\.([0-9]+)(?:\.([0-9]+))?", re.I)
#: The version of condor_submit whose language dsub reads, for ``if version``.
VERSION = (24, 12, 24)
_COMPARE = {
    "==": lambda a, b: a == b, "!=": lambda a, b: a != b, ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, "<": lambda a, b: a < b,
}  # fmt: skip
#: Predefined macros, by whether ``if defined`` finds them (as condor_submit answers).
_PREDEFINED = {"cluster": True, "clusterid": True, "process": True, "procid": True,
               "step": True, "itemindex": True, "row": True, "dollar": False}  # fmt: skip
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
            name = (m.group(2) or "").lower()
            found = _PREDEFINED.get(name, bool(name) and self.defined(name))
            return found != bool(m.group(1))
        v = _VERSION.fullmatch(text)
        if v:
            wanted = tuple(int(g) for g in v.groups()[1:] if g is not None)
            return bool(_COMPARE[v.group(1)](VERSION[: len(wanted)], wanted))
        value = self.expand(text).strip().lower()
        if value in _TRUE or value in _FALSE or not value:
            return value in _TRUE
        try:
            return float(value) != 0
        except ValueError:
            raise ConditionError(
                f"cannot evaluate 'if {text}': condor_submit takes 'defined NAME',"
                " '! defined NAME', 'version OP X.Y' and values that are true, false, yes,"
                " no or a number, not comparisons or expressions"
            ) from None
