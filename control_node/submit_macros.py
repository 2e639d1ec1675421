"""Macros of the HTCondor submit language, as condor_submit expands them.

``$(name)``, ``$(name:default)``, ``$ENV(VAR[:default])`` and the macro functions of
``submit_functions`` (the random ones drawn by ``MacroContext.call``). Names are
case-insensitive; an undefined macro is empty (``undefined_macros`` lists them for
warnings); ``$(DOLLAR)`` is a literal ``$``. What condor_submit does not read as a
macro (``$(oops``, ``$( x )``, ``$FOO(x)``) stays as text. ``$$(NAME[:default])`` is
left in place for the scheduler to substitute from the matched worker (HTCondor's
match-time substitution; ``scheduler.matching.macros``), ``$$(DOLLARDOLLAR)`` too,
which becomes a literal ``$$`` there. Errors are ``MacroError`` (a ``ValueError``).
"""

from __future__ import annotations

import contextlib
import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from control_node.submit_functions import RANDOM_FUNCTIONS, call_function, is_function
from control_node.submit_lines import Statement
from control_node.submit_queue import QueueError, parse_queue
from scheduler.protocol import MACHINE_ATTRIBUTES

__all__ = [
    "MAX_VALUE_CHARS",
    "PREDEFINED_MACROS",
    "MacroContext",
    "MacroError",
    "MacroRef",
    "expand_macros",
    "lookup_macro",
    "replace_self_reference",
    "scan_macros",
    "undefined_macros",
    "used_names",
]

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
