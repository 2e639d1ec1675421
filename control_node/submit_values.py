"""The typed values of a submit file: arguments, environment, numbers, quantities,
addresses and the other keys whose value must have a given form.

Mixed into the parser of :mod:`control_node.submit_file`, whose ``get`` expands a
key's value and whose ``error`` names the file and line where the key was set.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from control_node.submit_lines import CONTROL_CHARS
from control_node.submit_macros import MacroContext
from control_node.submit_quoting import parse_arguments, parse_environment, valid_env_name
from scheduler.matching.classad import ClassAdError, compile_expression
from scheduler.matching.classad_values import unparse
from scheduler.matching.requirements import RequirementsError, compile_requirements

if TYPE_CHECKING:
    from control_node.submit_file import SubmitFileError

INT = re.compile(r"[+-]?[0-9]+")
INT32 = 2**31 - 1
_GETENV_SEPARATORS = re.compile(r"[\s,;]+")
_NOTIFICATIONS = {n.lower(): n for n in ("Never", "Complete", "Error", "Always")}
_EMAIL = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
)
_MACHINE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")


#: What the ClassAd parser here refuses that HTCondor's parses (and evaluates to ERROR,
#: or, for a quoted name, reads): not a syntax error of the file.
_NOT_SYNTAX = re.compile(
    r"unknown function|takes [0-9].* arguments, not|longer than|nested too deeply"
    r"|unexpected character \"'\""
)


#: A plain string literal or number, which the parser always accepts (most values of
#: a large cluster's custom attributes: checked without parsing).
_PLAIN_LITERAL = re.compile(r'\s*(?:"[^"\\]*"|[0-9]+(?:\.[0-9]+)?)\s*')


def syntax_error(text: str) -> str | None:
    """Why HTCondor's ClassAd parser refuses ``text``, else None."""
    if _PLAIN_LITERAL.fullmatch(text):
        return None
    try:
        compile_expression(text)
    except ClassAdError as e:
        return None if _NOT_SYNTAX.search(str(e)) else str(e)
    return None


class ValueReaders:
    """Readers of typed keys; each returns the value or raises the parser's error."""

    # Provided by the parser.
    environ: Mapping[str, str]
    lines: dict[str, int]
    get: Callable[[MacroContext, str], str | None]
    error: Callable[[str, str], SubmitFileError]
    warn: Callable[[int | None, str], None]
    unknown_name: Callable[[str, str], None]
    #: Job attributes: lower-case name -> (name as first written, its submit key).
    attrs: dict[str, tuple[str, str]]

    def arguments(self, ctx: MacroContext, data: str | None) -> list[str]:
        value = self.get(ctx, "arguments")
        if value is None:
            return [os.path.basename(data)] if data else []
        try:
            return parse_arguments(value)
        except ValueError as e:
            raise self.error("arguments", f"invalid arguments: {e}") from None

    def getenv(self, ctx: MacroContext) -> Callable[[str], bool] | None:
        """Which of the submitter's variables ``getenv`` imports (None: none).

        ``true``/``1`` imports all, ``false``/``0`` (or unset) none; any other value is a
        list of names (separated by commas, semicolons or blanks; case-insensitive;
        ``*`` matches any text) of the variables to import, an entry ``!NAME`` excluding
        the names it matches, as condor_submit 24 reads it."""
        value = (self.get(ctx, "getenv") or "").strip()
        if value.lower() in ("true", "1"):
            return lambda name: True
        if value.lower() in ("false", "0", ""):
            return None
        wanted: list[str] = []
        excluded: list[str] = []
        for word in _GETENV_SEPARATORS.split(value):
            if word:
                target = excluded if word.startswith("!") else wanted
                target.append(".*".join(re.escape(part) for part in word.lstrip("!").split("*")))
        take = re.compile("|".join(wanted) or "(?!)", re.IGNORECASE)
        drop = re.compile("|".join(excluded) or "(?!)", re.IGNORECASE)
        return lambda name: take.fullmatch(name) is not None and not drop.fullmatch(name)

    def environment(
        self, ctx: MacroContext, getenv: Callable[[str], bool] | None
    ) -> dict[str, str]:
        env: dict[str, str] = {}
        if getenv is not None:
            skipped = []
            for name, val in self.environ.items():
                if not getenv(name):
                    continue
                if valid_env_name(name) and not CONTROL_CHARS.search(val):
                    env[name] = val
                else:
                    skipped.append(name)
            if skipped:
                names = ", ".join(repr(n) for n in sorted(skipped))
                self.warn(self.lines.get("getenv"), f"getenv skipped unusable variables: {names}")
        value = self.get(ctx, "environment")
        if value:
            try:
                env.update(parse_environment(value))
            except ValueError as e:
                raise self.error("environment", f"invalid environment: {e}") from None
        return env

    def boolean(self, ctx: MacroContext, key: str) -> bool:
        value = (self.get(ctx, key) or "false").lower()
        if value not in ("true", "false", "1", "0"):
            raise self.error(key, f"{key} must be true or false, not {value!r}")
        return value in ("true", "1")

    def integer(self, ctx: MacroContext, key: str, default: int, minimum: int) -> int:
        value = self.get(ctx, key)
        if not value:
            return default
        if not INT.fullmatch(value):
            raise self.error(key, f"{key} must be a whole number, not {value!r}")
        if not minimum <= int(value) <= INT32:
            raise self.error(key, f"{key} must be between {minimum} and {INT32}, not {value}")
        return int(value)

    def count(self, ctx: MacroContext, key: str, default: int, minimum: int) -> int:
        """A request such as ``request_cpus``: a whole number, or a ClassAd expression
        that gives one by itself (condor_submit stores any expression, evaluated against
        each machine at match time; dfarm needs the number when the job is queued)."""
        value = self.get(ctx, key)
        if not value or INT.fullmatch(value):
            return self.integer(ctx, key, default, minimum)
        try:
            result = compile_expression(value).evaluate({})
        except ClassAdError as e:
            raise self.error(key, f"{key}: cannot parse the expression {value!r}: {e}") from None
        if type(result) is not int:
            raise self.error(
                key,
                f"{key} = {value} gives {unparse(result)} without a machine: dfarm needs"
                " a whole number, or an expression that gives one by itself (condor_submit"
                " stores the expression and evaluates it against each machine; an"
                " undefined one matches no machine)",
            )
        if not minimum <= result <= INT32:
            raise self.error(key, f"{key} must be between {minimum} and {INT32}, not {result}")
        return result

    def quantity(self, ctx: MacroContext, key: str, parse: Callable[[str], int]) -> int | None:
        value = self.get(ctx, key)
        if not value:
            return None
        try:
            result = parse(value)
        except ValueError as e:
            raise self.error(key, f"{key}: {e}") from None
        if result >= 2**63:
            raise self.error(key, f"{key} {value!r} is too large")
        return result

    def notification(self, ctx: MacroContext) -> tuple[str | None, str]:
        notify, email = self.get(ctx, "notify_user"), self.get(ctx, "email")
        if notify and email and notify != email:
            raise self.error("email", "'email' and 'notify_user' give different addresses")
        address = notify or email
        if address and not _EMAIL.fullmatch(address):
            raise self.error(
                "notify_user" if notify else "email", f"invalid e-mail address {address!r}"
            )
        value = self.get(ctx, "notification")
        if not value:  # HTCondor 24: notify_user alone sends no mail; dfarm's email does
            return address or None, "Complete" if email else "Never"
        if value.lower() not in _NOTIFICATIONS:
            raise self.error(
                "notification",
                f"notification must be Never, Complete, Error or Always, not {value!r}",
            )
        return address or None, _NOTIFICATIONS[value.lower()]

    def result_file(self, ctx: MacroContext) -> str | None:
        value = self.get(ctx, "result_file")
        if value and ("/" in value or "\\" in value or value in (".", "..")):
            raise self.error(
                "result_file", f"result_file '{value}' must be a file name in the job's directory"
            )
        return value or None

    def requirements(self, ctx: MacroContext) -> str | None:
        value = self.get(ctx, "requirements")
        if not value:
            return None
        try:
            rule = compile_requirements(value, [name for name, _ in self.attrs.values()])
        except RequirementsError as e:
            raise self.error("requirements", f"requirements: {e}") from None
        for name in rule.unknown:
            self.unknown_name("requirements", name)
        return value

    def expression(self, key: str, value: str, shown: str = "") -> str:
        """A ClassAd expression kept as text: refused, with the parser's reason, where
        HTCondor's ClassAd parser refuses it (condor_submit then refuses the file);
        ``shown``: how the message names it (default: the key)."""
        problem = syntax_error(value)
        if problem:
            raise self.error(
                key, f"{shown or key}: cannot parse the expression {value!r}: {problem}"
            )
        return value

    def machine(self, ctx: MacroContext) -> str | None:
        value = self.get(ctx, "client")
        if value and not _MACHINE.fullmatch(value):
            raise self.error("client", f"invalid client {value!r}: expected a worker id or name")
        return value or None
