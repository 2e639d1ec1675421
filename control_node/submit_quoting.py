"""Value syntaxes of the HTCondor submit language, as condor_submit reads them.

Every function here is pure and raises ``ValueError`` (``MacroError`` for macros)
with a readable message; ``control_node.submit_file`` adds the file and line.

- ``arguments``: the "new" syntax (the whole value in double quotes, ``""`` for
  a literal double quote, white space between arguments, single quotes group,
  ``''`` inside them for a literal single quote) and the "old" one (white space
  between arguments, ``\\"`` for a literal double quote, nothing else special).
- ``environment``: the new syntax (double-quoted, ``NAME=value`` entries
  separated by white space, quoted like the new arguments) and the old one
  (``NAME=value;NAME2=value2``, no quoting at all).
- File lists (comma and/or white space separated) and the memory / disk units.
- Lines: ``key = value`` statements, ``key @=TAG`` multi-line values (the lines up to
  ``@TAG``, stripped, blank and ``#`` lines left out, joined by newlines: a newline
  separates arguments as a blank does), and ``queue``; a trailing backslash continues a
  line (a comment line inside the continuation is skipped when it ends with a backslash
  too, and refused otherwise, as condor_submit ends the value there); ``#`` starts a
  comment line.
- Macros: ``$(name)``, ``$(name:default)``, ``$ENV(VAR[:default])`` and the macro
  functions of ``submit_functions`` (the random ones drawn by ``MacroContext.call``).
  Names are case-insensitive; an undefined macro is empty (``undefined_macros`` lists
  them for warnings); ``$(DOLLAR)`` is a literal ``$``. What condor_submit does not
  read as a macro (``$(oops``, ``$( x )``, ``$FOO(x)``) stays as text.
  ``$$(NAME[:default])`` is left in place for the scheduler to substitute from the
  matched worker (HTCondor's match-time substitution; ``scheduler.matching.macros``),
  ``$$(DOLLARDOLLAR)`` too, which becomes a literal ``$$`` there.
"""

from __future__ import annotations

import contextlib
import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from control_node.submit_functions import RANDOM_FUNCTIONS, call_function, is_function
from control_node.submit_queue import QueueError, parse_queue
from scheduler.protocol import MACHINE_ATTRIBUTES

__all__ = [
    "CONTROL_CHARS",
    "MAX_VALUE_CHARS",
    "MULTI_LINE",
    "LineError",
    "MacroContext",
    "MacroError",
    "MacroRef",
    "expand_macros",
    "lookup_macro",
    "parse_arguments",
    "parse_environment",
    "read_statements",
    "replace_self_reference",
    "scan_macros",
    "printable",
    "split_list",
    "undefined_macros",
    "used_names",
    "PREDEFINED_MACROS",
    "Statement",
    "valid_env_name",
]

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Blanks between arguments; a newline is one too (a multi-line ``@=`` value).
_BLANKS = " \t\n"
_MACRO_START = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\(")
MAX_VALUE_CHARS = 1 << 20
#: ``MacroRef.func`` of a ``$$(NAME)``, which expands to itself.
MACHINE = "$$"
#: ``$$(DOLLARDOLLAR)``: a literal ``$$`` once the job is matched (kept until then).
LITERAL_DOLLARS = "dollardollar"
#: ``MacroRef.func`` of a ``$(...)`` whose name holds macros.
COMPOSED = "$()"
#: A macro name as condor_submit reads one inside ``$(...)``.
_REF_NAME = re.compile(r"[A-Za-z0-9_.]+")
MAX_MACRO_DEPTH = 100
#: The characters a value cannot hold. condor_submit keeps every other control
#: character of a value as it is (a job may take them in its arguments).
CONTROL_CHARS = re.compile(r"[\x00\n]")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_QUEUE = re.compile(r"queue\b(.*)", re.IGNORECASE | re.DOTALL)
_CONDITIONALS = frozenset({"if", "elif", "else", "endif"})
_STATEMENT_WORDS = frozenset({"include", "error", "warning"})
#: ``include : FILE``, ``include command : CMD |``, ``error : TEXT``, ``warning : TEXT``.
_COLON_STATEMENT = re.compile(
    r"(include(?:\s+command)?|error|warning)\s*:(.*)", re.IGNORECASE | re.DOTALL
)
#: ``key @=TAG``: a multi-line value, up to the line ``@TAG``.
MULTI_LINE = re.compile(r"[ \t]*([^\s=]+)[ \t]+@=[ \t]*(.*?)[ \t\r]*")
#: A queue line that opens a list it does not close: the list goes on to a ")" line.
_OPEN_LIST = re.compile(r"queue\b.*\([^()]*", re.IGNORECASE | re.DOTALL)


def _dequote_v2(value: str) -> str:
    """Strip the outer double quotes of a new-syntax value and undouble ``""``."""
    out: list[str] = []
    i, n = 1, len(value)
    while i < n:
        c = value[i]
        if c != '"':
            out.append(c)
            i += 1
        elif i + 1 < n and value[i + 1] == '"':
            out.append('"')
            i += 2
        elif i == n - 1:
            return "".join(out)
        else:
            raise ValueError(
                "unexpected text after the closing double quote"
                ' (write "" for a literal double quote inside the quotes)'
            )
    raise ValueError("missing closing double quote")


# Tokens of the two syntaxes: a run of blanks ends a word, every other token is
# a piece of the current word.
_V2_TOKEN = re.compile(r"[ \t\n]+|'(?:[^']|'')*'|[^ \t\n']+|'")
_V1_TOKEN = re.compile(r'[ \t\n]+|\\"|"|[^ \t\n"\\]+|\\')


def _v2_piece(token: str) -> str:
    if token == "'":
        raise ValueError("missing closing single quote")
    return token[1:-1].replace("''", "'") if token[0] == "'" else token


def _v1_piece(token: str) -> str:
    if token == '"':
        raise ValueError(
            'unescaped double quote in old-syntax arguments (write \\" for a literal'
            " double quote, or put the whole value in double quotes for the new syntax)"
        )
    return '"' if token == '\\"' else token


def _split(text: str, token: re.Pattern[str], piece: Callable[[str], str]) -> list[str]:
    words: list[str] = []
    current: list[str] | None = None
    for match in token.finditer(text):
        t = match.group()
        if t[0] in _BLANKS:
            if current is not None:
                words.append("".join(current))
            current = None
        else:
            current = current if current is not None else []
            current.append(piece(t))
    if current is not None:
        words.append("".join(current))
    return words


def _split_v2(raw: str) -> list[str]:
    """Split dequoted new-syntax text on blanks; single quotes group, '' is a literal '."""
    return _split(raw, _V2_TOKEN, _v2_piece)


def _split_v1_arguments(value: str) -> list[str]:
    """Old syntax: blanks separate arguments, \\" is a literal double quote."""
    return _split(value, _V1_TOKEN, _v1_piece)


def parse_arguments(value: str) -> list[str]:
    """Parse an ``arguments`` value in either HTCondor syntax into a list of arguments."""
    value = value.strip(_BLANKS)
    if value.startswith('"'):
        return _split_v2(_dequote_v2(value))
    return _split_v1_arguments(value)


def valid_env_name(name: str) -> bool:
    """True when ``name`` is a portable environment variable name."""
    return _ENV_NAME.fullmatch(name) is not None


def _env_entry(entry: str, env: dict[str, str]) -> None:
    name, eq, val = entry.partition("=")
    if not eq:
        raise ValueError(f"environment entry {entry!r} has no '='")
    if not valid_env_name(name):
        raise ValueError(f"invalid environment variable name {name!r}")
    env[name] = val


def parse_environment(value: str) -> dict[str, str]:
    """Parse an ``environment`` value in either HTCondor syntax into a dict (later wins)."""
    value = value.strip(_BLANKS)
    env: dict[str, str] = {}
    if value.startswith('"'):
        entries = _split_v2(_dequote_v2(value))
    else:
        entries = [e for e in value.split(";") if e != ""]
    for entry in entries:
        _env_entry(entry, env)
    return env


def split_list(value: str) -> list[str]:
    """Split an HTCondor file list on commas and/or white space, dropping empty items."""
    return [item for item in re.split(r"[,\s]+", value) if item]


# ----------------------------------------------------------------------------- macros


class MacroError(ValueError):
    """A macro reference that cannot be expanded."""


@dataclass(frozen=True)
class MacroRef:
    """One ``$(name[:default])``, ``$ENV(name[:default])`` or ``$FUNC(args)`` in a value
    (then ``func`` is set and ``name`` holds the raw arguments)."""

    name: str
    default: str | None
    env: bool
    raw: str
    func: str | None = None


@dataclass
class MacroContext:
    """What macros expand to: raw definitions (lower-case names) and predefined values.

    ``fixed`` always wins; ``soft`` is used only when the file does not define the name.
    """

    defs: Mapping[str, str]
    fixed: Mapping[str, str]
    soft: Mapping[str, str]
    environ: Mapping[str, str]
    memo: dict[str, str]
    #: Evaluates ``$FUNC(args)``: (function, expanded arguments, macro holding the call).
    call: Callable[[str, str, str], str] | None = field(default=None)


def _closing_paren(text: str, start: int) -> int:
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    raise MacroError(f"unterminated macro reference {text[start - 1 :]!r}")


def _scan_ref(text: str, at: int) -> tuple[MacroRef | None, int]:
    """The macro at ``text[at]`` (a ``$``) and where it ends; ``None`` when the ``$``
    starts no macro, which condor_submit leaves as text: an unclosed ``$(``, a name
    it cannot hold (``$( x )``), or a ``$NAME(`` that is not a macro function."""
    if text.startswith("$$(", at):
        return _machine_ref(text, at)
    m = _MACRO_START.match(text, at)
    if m is None:
        return None, at + 1
    try:
        end = _closing_paren(text, m.end() - 1)
    except MacroError:
        return None, at + 1
    func, body, raw = m.group(1), text[m.end() : end], text[at : end + 1]
    if func == "ENV":
        name, colon, default = body.partition(":")
        return MacroRef(name, default if colon else None, True, raw), end + 1
    if func is not None:
        if not is_function(func):
            return None, at + 1
        return MacroRef(body, None, False, raw, func), end + 1
    name, colon, default = body.partition(":")
    if not _REF_NAME.fullmatch(name):
        if "$" in name:  # a name made by macros, $(a$(b)): expanded, then looked up
            return MacroRef(body, None, False, raw, COMPOSED), end + 1
        return None, at + 1
    return MacroRef(name, default if colon else None, False, raw), end + 1


def _machine_ref(text: str, at: int) -> tuple[MacroRef | None, int]:
    """``$$(NAME[:default])``: left in place, substituted when the job is matched (the
    name is checked when the value is expanded: an unused value may hold any)."""
    try:
        end = _closing_paren(text, at + 2)
    except MacroError:
        return None, at + 2
    name, colon, default = text[at + 3 : end].partition(":")
    raw = text[at : end + 1]
    return MacroRef(name, default if colon else None, False, raw, MACHINE), end + 1


@lru_cache(maxsize=4096)
def scan_macros(text: str) -> tuple[str | MacroRef, ...]:
    """Split text into literal strings and macro references; a lone ``$`` is literal."""
    parts: list[str | MacroRef] = []
    i = lit = 0
    while (j := text.find("$", i)) >= 0:
        ref, i = _scan_ref(text, j)
        if ref is not None:
            parts += [text[lit:j], ref]
            lit = i
    parts.append(text[lit:])
    return tuple(p for p in parts if p != "")


def replace_self_reference(value: str, key: str, previous: str | None) -> str:
    """Replace ``$(key)`` in key's new definition by its earlier raw value, as HTCondor
    does (by nothing when there is none)."""
    out = []
    for p in scan_macros(value):
        if isinstance(p, str) or p.env or p.func or p.name.lower() != key:
            out.append(p if isinstance(p, str) else p.raw)
        elif previous is not None:
            out.append(previous)
        elif p.default is not None:
            out.append(p.default)
    return "".join(out)


def expand_macros(text: str, ctx: MacroContext, stack: tuple[str, ...] = ()) -> str:
    """Expand every macro in text, recursively; ``stack`` holds names being expanded."""
    if "$" not in text and len(text) <= MAX_VALUE_CHARS:
        return text
    result = "".join(
        p if isinstance(p, str) else _resolve(p, ctx, stack) for p in scan_macros(text)
    )
    if len(result) > MAX_VALUE_CHARS:
        raise MacroError(f"macro expansion is longer than {MAX_VALUE_CHARS} characters")
    return result


def _machine_expression(raw: str) -> str:
    """``$$([expression])``, left in place (evaluated against the worker the job is
    matched to); refused where the expression does not parse."""
    from scheduler.matching.classad import ClassAdError, compile_expression

    try:
        compile_expression(raw[4:-2])
    except ClassAdError as e:
        raise MacroError(f"'{raw}': cannot parse the expression: {e}") from None
    return raw


def _resolve(ref: MacroRef, ctx: MacroContext, stack: tuple[str, ...]) -> str:
    if ref.func == MACHINE:
        if ref.raw.startswith("$$([") and ref.raw.endswith("])"):
            return _machine_expression(ref.raw)
        if ref.name.lower() not in MACHINE_ATTRIBUTES and ref.name.lower() != LITERAL_DOLLARS:
            known = ", ".join(sorted(MACHINE_ATTRIBUTES))
            raise MacroError(
                f"'{ref.raw}': dfarm substitutes $$(NAME) for these worker attributes"
                f" only: {known} (write $(DOLLAR) for a literal '$')"
            )
        return ref.raw
    if ref.env:
        value = ctx.environ.get(ref.name)
        if value is not None:
            return value
        return "UNDEFINED" if ref.default is None else expand_macros(ref.default, ctx, stack)
    if ref.func == COMPOSED:
        inner = expand_macros(ref.name, ctx, stack)
        made = scan_macros(f"$({inner})")
        if len(made) == 1 and isinstance(made[0], MacroRef) and made[0].func is None:
            return _resolve(made[0], ctx, stack)
        return f"$({inner})"
    if ref.func is not None:
        return _call(ref, ctx, stack)
    value = lookup_macro(ref.name, ctx, stack)
    if not value and ref.default is not None:
        return expand_macros(ref.default, ctx, stack)
    return value or ""


def _call(ref: MacroRef, ctx: MacroContext, stack: tuple[str, ...]) -> str:
    """``$FUNC(args)``: the random ones draw through ``ctx.call``, the others here."""
    assert ref.func is not None
    args = expand_macros(ref.name, ctx, stack)
    try:
        if ref.func in RANDOM_FUNCTIONS:
            if ctx.call is None:
                raise MacroError(f"${ref.func}() cannot be used here")
            if ref.func == "RANDOM_CHOICE" and "," not in args:  # a macro holding the list
                args = lookup_macro(args.strip(), ctx, stack) or args
            return ctx.call(ref.func, args, stack[-1] if stack else "")
        return call_function(
            ref.func, args, lambda name: lookup_macro(name, ctx, stack), ctx.environ
        )
    except ValueError as e:
        raise MacroError(str(e)) from None


def lookup_macro(name: str, ctx: MacroContext, stack: tuple[str, ...] = ()) -> str | None:
    """The expanded value of macro ``name``, or None when nothing defines it."""
    key = name.lower()
    if key in ctx.fixed:
        return ctx.fixed[key]
    if key in ctx.defs:
        if len(stack) > MAX_MACRO_DEPTH:
            raise MacroError(f"macros nested more than {MAX_MACRO_DEPTH} deep")
        if key in stack:
            chain = " -> ".join([*stack[stack.index(key) :], key])
            raise MacroError(f"macro '{name}' refers to itself ({chain})")
        if key not in ctx.memo:
            ctx.memo[key] = expand_macros(ctx.defs[key], ctx, (*stack, key))
        return ctx.memo[key]
    return ctx.soft.get(key)


def printable(text: str) -> str:
    """Text for a terminal: control characters written as escapes (``\\x1b``)."""
    return _UNPRINTABLE.sub(lambda m: repr(m[0])[1:-1], text)


# ----------------------------------------------------------------------------- lines


class LineError(ValueError):
    """A line that is not a statement dfarm accepts; ``line`` is its 1-based number."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


@dataclass(frozen=True)
class Statement:
    """``key = value`` (value stripped), ``queue`` and its arguments (``key`` None), a
    conditional line (``kind`` ``if``, ``elif``, ``else`` or ``endif``, ``key`` None), or
    an ``include``, ``include command``, ``error`` or ``warning`` statement (``key`` None,
    ``value`` what follows the colon)."""

    line: int
    key: str | None
    value: str
    #: ``set``, ``queue``, ``if``, ``elif``, ``else``, ``endif``, ``include``,
    #: ``include command``, ``error`` or ``warning``.
    kind: str = "set"
    #: The lines of a queue list that goes on after its line, up to the ``)`` line
    #: (``#`` comments left out; a blank line is an item of a ``from`` list).
    block: tuple[str, ...] | None = None
    #: The included file the statement comes from (None: the submit file itself).
    file: str | None = None


Line = tuple[int, str, tuple[str, ...] | None]


def _list_block(raw: list[str], i: int, start: int) -> tuple[tuple[str, ...], int]:
    """The lines of a queue list from raw line ``i`` to the line that begins with ')'."""
    block: list[str] = []
    while i < len(raw):
        text = raw[i].strip()
        i += 1
        if text.startswith(")"):
            if text[1:].strip():
                raise LineError(i, "unexpected text after the ')' that closes the queue list")
            return tuple(block), i
        if not text.startswith("#"):
            block.append(text)
    raise LineError(start, "the queue list opened with '(' has no line beginning with ')'")


_COMMENT_ENDS_VALUE = (
    "a comment line inside a value continued with '\\' ends the value in condor_submit"
    " (which then misreads or refuses the lines after it): end the comment line with"
    " '\\' too, or move the comment above the value"
)


def _multi_line_value(raw: list[str], i: int, start: int, tag: str) -> tuple[str, int]:
    """The value of ``key @=TAG`` (on line ``start``) from raw line ``i`` to the line
    ``@TAG``, and the line after that, as condor_submit reads it: each line stripped,
    blank and ``#`` lines left out, a trailing backslash joining the next line, the
    lines joined by newlines."""
    lines: list[str] = []
    while i < len(raw):
        line = raw[i].strip()
        i += 1
        while line.endswith("\\") and i < len(raw):
            line = line[:-1] + raw[i].strip()
            i += 1
        if line == "@" + tag:
            return "\n".join(lines), i
        if line and not line.startswith("#"):
            lines.append(line)
    raise LineError(start, f"the multi-line value opened with '@={tag}' has no line '@{tag}'")


def _logical_lines(text: str) -> list[Line]:
    raw = text.split("\n")
    for no, line in enumerate(raw, 1):
        m = CONTROL_CHARS.search(line.rstrip("\r"))
        if m:
            raise LineError(no, f"control character U+{ord(m[0]):04X} in line")
    out: list[Line] = []
    i = 0
    while i < len(raw):
        start, line = i + 1, raw[i].rstrip(" \t\r")
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        multi = MULTI_LINE.fullmatch(line)
        if multi:
            if multi[1].startswith("+"):
                name = multi[1][1:]
                raise LineError(
                    start,
                    f"condor_submit reads no multi-line '+{name}': write 'MY.{name} @=TAG'",
                )
            value, i = _multi_line_value(raw, i, start, multi[2])
            out.append((start, f"{multi[1]} = {value}", None))
            continue
        parts = []
        while line.endswith("\\"):
            parts.append(line[:-1])
            while i < len(raw) and raw[i].lstrip().startswith("#"):
                if not raw[i].rstrip(" \t\r").endswith("\\"):
                    raise LineError(i + 1, _COMMENT_ENDS_VALUE)
                i += 1
            line = raw[i].rstrip(" \t\r").lstrip(" \t") if i < len(raw) else ""
            i += 1
        parts.append(line)
        joined = "".join(parts)
        if not joined.strip():
            continue
        block = None
        if _OPEN_LIST.fullmatch(joined.strip()):
            block, i = _list_block(raw, i, start)
        out.append((start, joined, block))
    return out


def _statement(no: int, text: str, block: tuple[str, ...] | None) -> Statement:
    m = _QUEUE.fullmatch(text.strip())
    if m:
        return Statement(no, None, m.group(1).strip(), "queue", block)
    m = _COLON_STATEMENT.fullmatch(text.strip())
    if m:
        return Statement(no, None, m.group(2).strip(), " ".join(m.group(1).lower().split()))
    key, eq, value = text.partition("=")
    key = key.strip()
    word = text.split(None, 1)[0].lower()
    if word in _CONDITIONALS and (not eq or key.lower() != word):
        return Statement(no, None, text.strip()[len(word) :].strip(), word)
    if not eq:
        word = word.lstrip("@")
        if word in _STATEMENT_WORDS:
            raise LineError(no, f"expected '{word} : ...' (a colon after '{word}')")
        raise LineError(no, "expected 'key = value' or 'queue'")
    if key.endswith("@"):
        raise LineError(
            no,
            "a multi-line value is written 'key @=TAG' (blanks before '@='), then its"
            " lines, then a line '@TAG'",
        )
    if key.startswith("+") or key.lower().startswith("my."):
        raise LineError(no, f"custom job attribute '{key}' (+Attr / MY.Attr) is not supported yet")
    if not _KEY.fullmatch(key):
        raise LineError(no, f"invalid submit key {key!r}")
    return Statement(no, key, value.strip())


def read_statements(text: str) -> list[Statement]:
    """Split submit-file text into statements, joining continued lines; raises LineError."""
    return [_statement(no, line, block) for no, line, block in _logical_lines(text)]


# ----------------------------------------------------------------------------- warnings

#: Macros condor_submit defines for every job, whether or not the file sets them.
PREDEFINED_MACROS = frozenset(
    {"cluster", "clusterid", "process", "procid", "step", "item", "itemindex", "row", "node",
     "dollar", "submit_file"}
)  # fmt: skip


def _plain_refs(text: str) -> list[MacroRef]:
    """The ``$(NAME)`` and ``$ENV(NAME)`` without a default in text, also inside functions."""
    refs: list[MacroRef] = []
    try:
        parts = scan_macros(text)
    except MacroError:
        return refs  # a value that is never expanded: nothing to warn of
    for p in parts:
        if isinstance(p, str) or p.func == MACHINE:
            continue
        if p.func is not None:
            refs += _plain_refs(p.name)
        elif p.default is None:
            refs.append(p)
    return refs


def _queue_names(stmts: list[Statement]) -> list[str]:
    names: list[str] = []
    for st in stmts:
        if st.kind == "queue":
            with contextlib.suppress(QueueError):  # the statement itself reports it
                names += parse_queue(st.value, st.block).names
    return names


def undefined_macros(
    stmts: list[Statement], environ: Mapping[str, str]
) -> list[tuple[Statement, str]]:
    """(statement, warning) for each macro that the statements use and none defines, which
    condor_submit expands to nothing, and each unset ``$ENV(NAME)`` (it gives UNDEFINED)."""
    spelled = {s.key.lower(): s.key for s in stmts if s.key is not None}
    spelled |= {n.lower(): n for n in _queue_names(stmts)}
    known = set(spelled) | PREDEFINED_MACROS
    out: list[tuple[Statement, str]] = []
    for st in stmts:
        for text in (st.value, *(st.block or ())):
            for ref in _plain_refs(text):
                if ref.env:
                    if ref.name not in environ:
                        out.append((st, f"$ENV({ref.name}) is not set in the environment"
                                    " and expands to UNDEFINED"))  # fmt: skip
                elif ref.name.lower() not in known:
                    out.append((st, _undefined(ref.name, spelled)))
    return out


def _undefined(name: str, spelled: dict[str, str]) -> str:
    close = difflib.get_close_matches(name.lower(), list(spelled), n=1, cutoff=0.7)
    if close:
        return f"$({name}) is not defined; did you mean $({spelled[close[0]]})?"
    return f"$({name}) is not defined and expands to nothing"


def used_names(text: str) -> set[str]:
    """The (lower-case) macro names text refers to: in ``$(NAME)`` and as the arguments
    of macro functions (``$CHOICE(Process, colors)`` refers to ``colors``)."""
    names: set[str] = set()
    try:
        parts = scan_macros(text)
    except MacroError:
        return names  # reported with its line when the value is expanded
    for p in parts:
        if isinstance(p, str) or p.env or p.func == MACHINE:
            continue
        if p.func is None:
            names.add(p.name.lower())
            names |= used_names(p.default or "")
            continue
        names |= used_names(p.name)
        names |= {arg.strip().lower() for arg in re.split(r"[,:]", p.name) if arg.strip()}
    return names
