"""A submit description given as a Python dict, written as submit-file text.

    {"executable": "fit.py", "arguments": ["--n", 10], "queue": 5}

Keys are submit-file keys, custom attributes ``+Name`` and ``MY.Name`` included;
``queue`` is the count (default 1). Lists are
written as HTCondor expects them: ``arguments`` and ``environment`` (a dict)
in the new, double-quoted syntax, file lists comma-separated.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_KEY = re.compile(r"(?:\+|[Mm][Yy]\.)?[A-Za-z_][A-Za-z0-9_]*")


def _quote(value: str) -> str:
    """One argument in the new syntax: single quotes around it if it needs them."""
    if value and not any(c in value for c in " \t'\""):
        return value
    return "'" + value.replace("'", "''").replace('"', '""') + "'"


def _value(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if key == "arguments" and isinstance(value, (list, tuple)):
        return '"' + " ".join(_quote(str(v)) for v in value) + '"'
    if key == "environment" and isinstance(value, Mapping):
        return '"' + " ".join(f"{k}={_quote(str(v))}" for k, v in value.items()) + '"'
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    text = str(value)
    if "\n" in text:
        raise ValueError(f"submit key {key!r}: a value cannot span lines")
    return text


def submit_text(description: Mapping[str, Any]) -> str:
    """The submit-file text for ``description``."""
    count = description.get("queue", 1)
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise ValueError(f"submit key 'queue': expected a count, got {count!r}")
    lines = []
    for key, value in description.items():
        if key == "queue":
            continue
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise ValueError(f"not a submit-file key: {key!r}")
        lines.append(f"{key} = {_value(key, value)}")
    lines.append(f"queue {count}")
    return "\n".join(lines) + "\n"
