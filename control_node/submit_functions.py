"""The macro functions of a submit file, as condor_submit 24 evaluates them.

``$F[pnxdqabwu](name)``, ``$BASENAME``, ``$DIRNAME``, ``$INT(name[, format])``,
``$REAL(name[, format])``, ``$SUBSTR(name, start[, length])``, ``$CHOICE(index, ...)``
and ``$ENV`` are evaluated by :func:`call_function`; an argument naming no macro is
taken as text. A value that cannot be evaluated is a ``ValueError`` (condor_submit
stops on it too).

The random functions, and the values each proc drew:

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

import ast
import math
import random
import re
from collections.abc import Callable, Mapping

__all__ = ["RANDOM_FUNCTIONS", "RandomDraws", "call_function", "filename_parts", "is_function"]

MAX_INT_RANGE = 2**63
INT = re.compile(r"[+-]?[0-9]+")


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


# ----------------------------------------------------------------------------- the others


#: ``$F`` followed by its option letters, as condor_submit recognises it.
FILENAME_FUNCTION = re.compile(r"F[pnxdqabwuPNXDQABWU]*")
#: The macro functions that are not random, by upper-case name (``$F...`` apart).
#: The random functions, evaluated by :class:`RandomDraws` (one generator per proc).
RANDOM_FUNCTIONS = frozenset({"RANDOM_INTEGER", "RANDOM_CHOICE", "RANDOM_NORMAL", "RANDOM_UNIFORM"})
PURE_FUNCTIONS = frozenset({"ENV", "INT", "REAL", "SUBSTR", "CHOICE", "BASENAME", "DIRNAME"})
_INT_FORMAT = re.compile(r"([^%]*)%([-+ #0]*[0-9]{0,3})[hlLqjzt]*([diouxX])(.*)", re.DOTALL)
_REAL_FORMAT = re.compile(
    r"([^%]*)%([-+ #0]*[0-9]{0,3}(?:\.[0-9]{0,3})?)[lL]?([eEfFgG])(.*)", re.DOTALL
)
#: What an arithmetic value may be written with (no Python-only forms such as 0x10 or 1_0).
_ARITHMETIC = re.compile(r"[0-9.eE+\-*/%() \t]+")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")

#: Looks a macro up by name: its expanded value, or None when it is not defined.
Lookup = Callable[[str], "str | None"]


def is_function(name: str) -> bool:
    """True when ``$name(...)`` is a macro function (names in capitals, as condor_submit
    has them; the ``$F`` options in either case); other ``$name(...)`` stay as text."""
    return (
        name in PURE_FUNCTIONS
        or name in RANDOM_FUNCTIONS
        or FILENAME_FUNCTION.fullmatch(name) is not None
    )


def call_function(func: str, body: str, lookup: Lookup, environ: Mapping[str, str]) -> str:
    """Evaluate ``$func(body)`` (body already macro-expanded) as condor_submit does."""
    upper = func.upper()
    if upper == "ENV":
        name, colon, default = body.partition(":")
        value = environ.get(name)
        return value if value is not None else default if colon else "UNDEFINED"
    if upper in ("INT", "REAL"):
        return _number_function(upper, body, lookup)
    if upper == "SUBSTR":
        return _substr(body, lookup)
    if upper == "CHOICE":
        return _choice(body, lookup)
    letters = {"BASENAME": "nx", "DIRNAME": "p"}.get(upper, func[1:].lower())
    value = lookup(body)
    return (
        ""
        if value is None and not body
        else filename_parts(letters, body if value is None else value)
    )


def _lookup_or_text(text: str, lookup: Lookup) -> str:
    value = lookup(text)
    return text if value is None else value


def _evaluate_number(text: str) -> float | int | None:
    """A number, or a ClassAd-style arithmetic expression of numbers; None if neither."""
    text = text.strip()
    if _NUMBER.fullmatch(text):
        number = float(text) if any(c in text for c in ".eE") else int(text)
        return number if math.isfinite(number) else None
    if not _ARITHMETIC.fullmatch(text) or "**" in text:
        return None
    try:
        value = _arith(ast.parse(text, mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError, RecursionError, OverflowError):
        return None
    return value if math.isfinite(value) else None


def _arith(node: ast.expr) -> float | int:
    number = node.value if isinstance(node, ast.Constant) else None
    if isinstance(number, int | float) and not isinstance(number, bool):
        return number
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _arith(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        a, b = _arith(node.left), _arith(node.right)
        if isinstance(node.op, ast.Add):
            return a + b
        if isinstance(node.op, ast.Sub):
            return a - b
        if isinstance(node.op, ast.Mult):
            if abs(a) > 2**63 or abs(b) > 2**63:
                raise ValueError("too large")
            return a * b
        if isinstance(node.op, ast.Div):  # whole numbers divide as in C, toward zero
            return int(a / b) if isinstance(a, int) and isinstance(b, int) else a / b
        if isinstance(node.op, ast.Mod) and isinstance(a, int) and isinstance(b, int):
            return int(math.fmod(a, b))
    raise ValueError("not an arithmetic expression")


def _number_function(func: str, body: str, lookup: Lookup) -> str:
    """``$INT(name[,format])`` and ``$REAL(name[,format])``."""
    name, comma, fmt = body.partition(",")
    pattern = _INT_FORMAT if func == "INT" else _REAL_FORMAT
    m = pattern.fullmatch(fmt) if comma else None
    if comma and (m is None or "%" in m.group(1) + m.group(4).replace("%%", "")):
        raise ValueError(f"${func}(): {fmt!r} is not a valid format specifier")
    text = _lookup_or_text(name, lookup)
    value = _evaluate_number(text)
    if value is None:
        what = "an integer" if func == "INT" else "a real number"
        raise ValueError(f"${func}(): {text!r} does not evaluate to {what}")
    if func == "INT":
        number: int | float = int(value)
        spec = f"%{m.group(2)}{m.group(3)}" if m else "%d"
    else:
        number = float(value)
        spec = f"%{m.group(2)}{m.group(3)}" if m else "%.16G"
    out = spec % number
    if m:
        out = m.group(1) + out + m.group(4).replace("%%", "%")
        if func == "REAL" and "." not in out:
            out += ".0"  # HTCondor makes a formatted real look like one
    return out


def _whole(text: str, lookup: Lookup, what: str) -> int:
    value = _lookup_or_text(text, lookup)
    number = _evaluate_number(value)
    if number is None or not -(2**31) <= number < 2**31:
        raise ValueError(f"$SUBSTR(): {value!r} is not a valid {what}")
    return int(number)


def _substr(body: str, lookup: Lookup) -> str:
    """``$SUBSTR(name, start[, length])``: negative start or length count from the end."""
    name, comma, rest = body.partition(",")
    if not comma:
        raise ValueError("$SUBSTR() needs a start: $SUBSTR(name, start[, length])")
    start_text, comma, length_text = rest.partition(",")
    start = _whole(start_text, lookup, "start index")
    length = _whole(length_text, lookup, "length") if comma else None
    value = lookup(name)
    if value is None:
        return ""
    start = min(max(len(value) + start if start < 0 else start, 0), len(value))
    left = len(value) - start
    length = left if length is None else length
    length = min(max(left + length if length < 0 else length, 0), left)
    return value[start : start + length]


def _choice(body: str, lookup: Lookup) -> str:
    """``$CHOICE(index, a, b, ...)`` or ``$CHOICE(index, list_macro)``."""
    fields = body.split(",")
    if len(fields) < 2:
        raise ValueError("$CHOICE() needs an index and a list: $CHOICE(index, a, b, ...)")
    index_text = _lookup_or_text(fields[0], lookup)
    index = _evaluate_number(index_text)
    if not isinstance(index, int) or index < 0:
        raise ValueError(f"$CHOICE(): {index_text!r} is not a valid index")
    items = fields[1:]
    if len(items) == 1:
        listed = lookup(items[0].strip())
        if listed is None:
            raise ValueError(f"$CHOICE(): there is no list named {items[0].strip()!r}")
        items = listed.split(",")
    if index >= len(items):
        raise ValueError(f"$CHOICE(): index {index} is out of range (the list has {len(items)})")
    return items[index].strip()


def _unquote(value: str) -> str:
    """The value without the quotes around it (condor_submit's ``strdup_quoted``)."""
    if value[:1] in ("'", '"'):
        value = value[1:]
        if value[-1:] in ("'", '"'):
            value = value[:-1]
    return value


def _basename_start(text: str, end: int) -> int:
    return text.rfind("/", 0, end) + 1


def filename_parts(letters: str, value: str) -> str:
    """``$F<letters>(value)``: parts of a file name, cut as condor_submit cuts them.

    ``p`` the directory (with its slash), ``d`` the parent directory's name, ``n`` the
    name without extension, ``x`` the extension (with its dot); none of them means the
    whole name. ``b`` drops a directory's trailing slash, ``q`` (``qa``) puts the result
    in double (single) quotes, ``w`` and ``u`` turn slashes to Windows or Unix ones
    first. The odd results of HTCondor for quoted empty parts are kept."""
    value = _unquote(value)
    if "w" in letters:
        value = value.replace("/", "\\")
    elif "u" in letters:
        value = value.replace("\\", "/")
    quote = ("'" if "a" in letters else '"') if "q" in letters else ""
    buf = list(quote + value + quote)
    end = len(buf)
    ixn = _basename_start(value if not quote else quote + value + quote, end)
    dot = "".join(buf).rfind(".", ixn + 1)
    ixx = dot if dot > ixn else end
    parts = sum(bit for c, bit in (("x", 1), ("n", 2), ("p", 4), ("d", 8)) if c in letters)
    if ixn == 0 and parts & 3:
        parts &= ~12
    start = 0
    if parts == 1:
        start = ixx
    elif parts in (2, 3):
        start, end = ixn, ixx if parts == 2 else end
    elif parts in (4, 6):
        end = ixn if parts == 4 else ixx
    elif parts & 8:
        if ixn > 0:
            start = _basename_start("".join(buf), ixn - 1)
            end = {2: ixx, 0: ixn}.get(parts & 3, end)
        else:
            start = end = 1
    if "b" in letters and parts & 12 and end > start and buf[end - 1] in "/\\":
        end -= 1
    if quote:
        if start >= len(buf) or buf[start] != quote:
            start -= 1
            buf[start] = quote
        if end > 1 and buf[end - 1] == quote:
            end -= 1
        buf[end : end + 1] = [quote]
        end += 1
    return "".join(buf[start:end])
