"""Value syntaxes of the HTCondor submit language, as condor_submit reads them.

Every function here is pure and raises ``ValueError`` with a readable message;
``control_node.submit_file`` adds the file and line.

- ``arguments``: the "new" syntax (the whole value in double quotes, ``""`` for
  a literal double quote, white space between arguments, single quotes group,
  ``''`` inside them for a literal single quote) and the "old" one (white space
  between arguments, ``\\"`` for a literal double quote, nothing else special).
- ``environment``: the new syntax (double-quoted, ``NAME=value`` entries
  separated by white space, quoted like the new arguments) and the old one
  (``NAME=value;NAME2=value2``, no quoting at all).
- File lists (comma and/or white space separated).

The lines of a file are read by :mod:`control_node.submit_lines`, macros expanded by
:mod:`control_node.submit_macros`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["parse_arguments", "parse_environment", "printable", "split_list", "valid_env_name"]

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Blanks between arguments; a newline is one too (a multi-line ``@=`` value).
_BLANKS = " \t\n"
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


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


def printable(text: str) -> str:
    """Text for a terminal: control characters written as escapes (``\\x1b``)."""
    return _UNPRINTABLE.sub(lambda m: repr(m[0])[1:-1], text)
