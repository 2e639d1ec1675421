"""Helpers of the fuzz tests: hostile message bodies generated from the protocol's own
message definitions, their JSON text, and raw connections to a scheduler.

Bodies are built from each message class's dataclass fields and type hints, so a
new message type or field is fuzzed without a change here.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import struct
import types
import typing
from typing import Any

from hypothesis import strategies as st

from scheduler import protocol as p


class Raw(str):
    """JSON text put in a body as it is: what ``json.dumps`` cannot write (an integer
    past Python's digit limit, nesting deeper than its stack)."""


def dumps(value: Any) -> str:
    """``value`` as JSON text, :class:`Raw` parts verbatim (NaN and Infinity as Python
    writes them)."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    return json.dumps(value)


def frame(body: dict[str, Any] | bytes) -> bytes:
    """A whole frame: length header and body."""
    data = body if isinstance(body, bytes) else dumps(body).encode()
    return struct.pack(">I", len(data)) + data


#: A line of log a value tries to forge (it must stay inside the line that logs it).
FORGED_LINE = "\n2001-01-01 00:00:00,000 ERROR scheduler.server: forged"
#: Texts a handler may take for ids, names, paths, states and actions, and some that
#: no handler should choke on.
HOSTILE_TEXT = [
    "1", FORGED_LINE, "1.0", "0.0", "-1", "1.-1", "99999999999999999999", "9" * 40, "*", "",
    " ", ".",
    "..", "../../etc/passwd", "/etc/passwd", "/srv/dfarm/worker.secret", "..\\..\\x",
    "stdout", "stderr", "outputs/../../x", "outputs/", "input/../../x", "part-0",
    "remove", "hold", "release", "idle", "running", "completed", "held", "removed",
    "request_memory", "executable", "requirements", "TARGET.Cpus > 0 &&", "$(Process)",
    "alice", "root", "\x00", "a\x00b",
    "\x1b[31m", "\u202e", "\ufeff", "é" * 300, "\U0001f600", "%s%s%n", "{}", "[]",
    "1:1", "1.0:1", "1.0:-1", ":", "x" * 70_000,
]  # fmt: skip
text = st.sampled_from(HOSTILE_TEXT) | st.text(max_size=30)
#: Numbers at every edge a field's type allows ...
EDGE_INTEGERS = [0, 1, -1, 2, 7, -(2**31), 2**31, 2**53 + 1, 2**63 - 1, -(2**63)]
EDGE_FLOATS = [0.5, -0.0, 1e-9, 1e308, -1e308, 5e-324]
#: ... and past them.
BEYOND_NUMBERS = [2**63, -(2**63) - 1, 2**64, 10**30, float("nan"), float("inf"), float("-inf")]
integers = st.sampled_from(EDGE_INTEGERS) | st.integers(-5, 10)
numbers = integers | st.sampled_from(EDGE_FLOATS)
#: Whole values that no field takes and the parser itself must refuse cleanly.
RAW_VALUES = [
    Raw("9" * 5000), Raw("-" + "9" * 5000), Raw("1e999999"), Raw("NaN"), Raw("Infinity"),
    Raw("[" * 100_000 + "]" * 100_000), Raw('{"a":' * 3000 + "1" + "}" * 3000),
    Raw("[" * 400 + "]" * 400), Raw('"\\ud800"'), Raw('"\\udfff\\ud800"'),
]  # fmt: skip
raw_values = st.sampled_from(RAW_VALUES)

json_values = st.recursive(
    st.none() | st.booleans() | numbers | st.sampled_from(BEYOND_NUMBERS) | text,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


def typed(hint: Any, depth: int = 0) -> st.SearchStrategy[Any]:
    """Values of the right JSON shape for ``hint``, with hostile contents."""
    origin = typing.get_origin(hint)
    if depth > 3:
        return json_values
    if origin in (typing.Union, types.UnionType):
        return st.one_of([typed(a, depth + 1) for a in typing.get_args(hint)])
    if origin is list:
        return st.lists(typed(typing.get_args(hint)[0], depth + 1), max_size=4)
    if origin is dict:
        value = typed(typing.get_args(hint)[1], depth + 1)
        return st.dictionaries(text, value, max_size=4)
    if dataclasses.is_dataclass(hint):
        return fields(hint, depth + 1)
    simple = {
        int: integers,
        float: numbers,  # an int is a float on the wire
        str: text,
        bool: st.booleans(),
        type(None): st.none(),
    }
    return simple.get(hint, json_values)


def fields(cls: type, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    """A dict of ``cls``'s fields, each of its type with hostile contents: the
    required ones always, the others sometimes."""
    hints = typing.get_type_hints(cls)
    required, optional = {}, {}
    for f in dataclasses.fields(cls):
        if f.name == "id" and issubclass(cls, p.Message):
            continue
        must = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        (required if must else optional)[f.name] = typed(hints[f.name], depth)
    return st.fixed_dictionaries(required, optional=optional)


#: How a body is spoiled: mostly not at all (its values are hostile enough), else a
#: field dropped, an unknown one added, one of another type, or one that no parser
#: takes.
SPOILS = ["none"] * 6 + ["drop", "add", "retype", "raw"]


@st.composite
def message_bodies(draw: st.DrawFn, cls: type[p.Message]) -> dict[str, Any]:
    """A body of message type ``cls``, with hostile values, sometimes spoiled."""
    body: dict[str, Any] = {"type": cls.type}
    if draw(st.booleans()):
        body["id"] = draw(st.integers(1, 2**40) | integers)
    body.update(draw(fields(cls)))
    spoil = draw(st.sampled_from(SPOILS))
    names = sorted(k for k in body if k != "type")
    if spoil == "drop" and names:
        del body[draw(st.sampled_from(names))]
    elif spoil == "add":
        body[draw(text)] = draw(json_values)
    elif spoil in ("retype", "raw") and names:
        body[draw(st.sampled_from(names))] = draw(json_values if spoil == "retype" else raw_values)
    return body


#: The values each field of a type is set to, one field at a time, by :func:`edge_bodies`.
EDGES: dict[Any, list[Any]] = {
    str: ["", "\u202e\u00e9\U0001f600", FORGED_LINE, "../../etc/passwd", "x" * 70_000],
    int: [-1, 2**63 - 1, -(2**63)],
    float: [-1e308, 5e-324, -1],
    bool: [True],
}


def minimal(hint: Any) -> Any:
    """The simplest well-typed value for ``hint``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return None if type(None) in typing.get_args(hint) else minimal(typing.get_args(hint)[0])
    if origin is list:
        return []
    if origin is dict:
        return {}
    if dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint)
        return {
            f.name: minimal(hints[f.name])
            for f in dataclasses.fields(hint)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
    return {str: "x", int: 1, float: 1.0, bool: False}.get(hint)


def _edges(hint: Any) -> list[Any]:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return [v for arg in typing.get_args(hint) if arg is not type(None) for v in _edges(arg)]
    if origin is list:
        return [[v] for v in _edges(typing.get_args(hint)[0])[:2]]
    if origin is dict:
        return [{k: v} for k in EDGES[str][:3] for v in _edges(typing.get_args(hint)[1])[:1]]
    return EDGES.get(hint, [])


def edge_bodies(cls: type[p.Message], base: dict[str, Any]) -> list[dict[str, Any]]:
    """``base`` (a body of ``cls``) with one top-level field at a time set to each
    edge value of its type: the same bodies every run, so that a handler's handling
    of each such value is tried whatever the random examples draw."""
    hints = typing.get_type_hints(cls)
    return [
        {**base, f.name: value}
        for f in dataclasses.fields(cls)
        if f.name != "id"
        for value in _edges(hints[f.name])
    ]


def fuzzed_types() -> list[type[p.Message]]:
    """Every message type in the protocol's registry, in a stable order."""
    return [p.MESSAGE_TYPES[name] for name in sorted(p.MESSAGE_TYPES)]


# ---------------------------------------------------------------------- connections


def handshake(port: int, role: str, name: str, key: bytes, timeout: float = 20) -> socket.socket:
    """A raw connection authenticated as ``name`` in ``role``."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    hello = p.Hello(role=role, version=p.PROTOCOL_VERSION, name=name, nonce=p.new_nonce())
    sock.sendall(p.encode(hello))
    challenge = p.recv_message(sock)
    assert isinstance(challenge, p.Challenge), challenge
    sock.sendall(p.encode(p.answer_challenge(key, hello, challenge)))
    welcome = p.recv_message(sock)
    assert isinstance(welcome, p.Welcome), welcome
    return sock


def until_closed(sock: socket.socket) -> list[p.Message]:
    """Every message the scheduler sends until it closes the connection (a stall
    fails on the socket's timeout)."""
    replies = []
    while True:
        try:
            replies.append(p.recv_message(sock))
        except ConnectionError:
            return replies
