"""Frames and encoding: length-prefixed JSON, validated field by field."""

from __future__ import annotations

import base64
import dataclasses
import enum
import functools
import json
import math
import re
import socket
import types
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, Union

from scheduler.protocol.messages import MESSAGE_TYPES, Message

if TYPE_CHECKING:
    import asyncio  # the control node's commands start without it
from scheduler.protocol.records import (
    DEFAULT_MAX_FRAME,
    HEADER,
    INT64_MAX,
    INT64_MIN,
    JobSpec,
    ProtocolError,
)

__all__ = [
    "pack_bytes",
    "parse_json",
    "unpack_bytes",
    "decode",
    "encode",
    "encode_wire",
    "json_text",
    "record",
    "from_wire",
    "read_message",
    "recv_message",
    "to_wire",
    "write_message",
]


R = TypeVar("R")

_PLAIN = frozenset({str, int, float, bool, type(None)})
#: Immutable records sent again and again (a job's spec in every RunJob): their
#: wire form is computed once and kept on the instance.
_KEEP_WIRE = frozenset({JobSpec})


@functools.cache
def _field_names(cls: type) -> tuple[str, ...] | None:
    """The fields of a dataclass type (None for other types), looked up once."""
    if not dataclasses.is_dataclass(cls):
        return None
    return tuple(f.name for f in dataclasses.fields(cls))


def to_wire(value: Any) -> Any:
    """A message or record as plain JSON-able data."""
    cls: type = type(value)
    if cls in _PLAIN:
        return value
    names = _field_names(cls)
    if names is not None:
        kept = value.__dict__
        if "_given_wire" in kept:  # see :func:`record`
            return dict(kept["_given_wire"])
        if cls in _KEEP_WIRE and "_wire" in kept:
            return kept["_wire"]
        out = {}
        for name in names:
            field = getattr(value, name)
            # Most fields are plain: converted here, without a call.
            out[name] = field if type(field) in _PLAIN else to_wire(field)
        if cls in _KEEP_WIRE:
            object.__setattr__(value, "_wire", out)
        if isinstance(value, Message):
            out["type"] = value.type
            if out.get("id") is None:
                out.pop("id")
        return out
    if isinstance(value, enum.Enum):
        return value.value
    if cls is list or cls is tuple:
        return [v if type(v) in _PLAIN else to_wire(v) for v in value]
    if cls is dict:
        return {k: v if type(v) in _PLAIN else to_wire(v) for k, v in value.items()}
    return value


def pack_bytes(data: bytes) -> str:
    """File content as it travels inside a message."""
    return base64.b64encode(data).decode("ascii")


def unpack_bytes(text: str) -> bytes:
    """The inverse of :func:`pack_bytes`; raises :class:`ProtocolError`."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raise ProtocolError("inline file content is not valid base64") from None


#: Compact JSON; made once (``json.dumps`` with separators makes one per call). Its
#: input is what :func:`to_wire` built, a tree with no cycle: none is looked for.
_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False)


def encode(message: Message) -> bytes:
    """A whole frame: length header and JSON body."""
    wire = to_wire(message)
    cls: type = type(message)
    kept = _kept_fields(cls)
    if not kept:
        return encode_wire(wire)
    # A record sent again and again (a job's spec in every RunJob) goes in as the
    # JSON text it was written as the first time.
    parts = []
    for name in kept:
        del wire[name]
        parts.append(f'"{name}":{json_text(getattr(message, name))}')
    rest = _ENCODER.encode(wire)  # never "{}": it holds the message's type
    body = f"{{{','.join(parts)},{rest[1:]}".encode()
    return HEADER.pack(len(body)) + body


@functools.cache
def _kept_fields(cls: type) -> tuple[str, ...]:
    """The fields of a message type that hold a record of :data:`_KEEP_WIRE`."""
    hints = typing.get_type_hints(cls)
    return tuple(name for name in _field_names(cls) or () if hints[name] in _KEEP_WIRE)


def json_text(value: Any) -> str:
    """A record of :data:`_KEEP_WIRE` as compact JSON, made once and kept on it (also
    what the store writes a job's spec as)."""
    text: str | None = value.__dict__.get("_text")
    if text is None:
        text = _ENCODER.encode(to_wire(value))
        object.__setattr__(value, "_text", text)
    return text


def record(cls: type[R], fields: dict[str, Any], wire: dict[str, Any] | None = None) -> R:
    """A record (a dataclass without ``__post_init__``) of ``fields``: each of its
    fields, in order, of its type, as checked by the caller; without the cost of a
    frozen dataclass's ``__init__``. ``wire``: its wire form, built by the caller
    (who has it at hand for less), that :func:`to_wire` then gives a copy of."""
    made = object.__new__(cls)
    made.__dict__.update(fields)
    if wire is not None:
        made.__dict__["_given_wire"] = wire
    return made


def encode_wire(data: dict[str, Any]) -> bytes:
    """A whole frame of a message already in its wire form (as :func:`to_wire` makes
    it, ``type`` included)."""
    body = _ENCODER.encode(data).encode()
    return HEADER.pack(len(body)) + body


def decode(body: bytes) -> Message:
    """Parse and validate one frame body; raises :class:`ProtocolError`."""
    data = parse_json(body)
    if not isinstance(data, dict):
        raise ProtocolError("a message must be a JSON object")
    kind = data.pop("type", None)
    cls = MESSAGE_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProtocolError(f"unknown message type {kind!r}")
    return from_wire(cls, data, kind)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


#: Strict JSON (RFC 8259): no NaN or Infinity, which no peer sends and no field takes.
_DECODER = json.JSONDecoder(parse_constant=_no_constant)
#: The escape of a UTF-16 surrogate: in pairs it spells a character beyond the BMP
#: (``json.dumps`` writes emoji so); alone it is no character at all.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def parse_json(body: bytes) -> Any:
    """A frame body as JSON data: strict UTF-8 and strict JSON, whose every string
    encodes back to UTF-8 (no lone surrogates); raises :class:`ProtocolError`.

    Every way a hostile body can fail the parser (bad bytes, bad syntax, an integer
    past Python's digit limit, nesting deeper than the stack) is that one error, so
    that the connection gets an ``error`` reply and one line in the log."""
    try:
        data = _DECODER.decode(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"malformed JSON: not UTF-8 (byte {exc.start})") from None
    except RecursionError:
        raise ProtocolError("malformed JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and the int-string conversion limit
        why = "an integer has too many digits" if "integer string" in str(exc) else str(exc)
        raise ProtocolError(f"malformed JSON: {why[:200]}") from None
    if _SURROGATE_ESCAPE.search(body):
        try:
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ProtocolError("malformed JSON: a string holds a lone surrogate") from None
    return data


class _Invalid(Exception):
    """A value that does not fit its type; ``path`` grows as it propagates up."""

    def __init__(self, path: str, problem: str):
        self.path, self.problem = path, problem


def from_wire(cls: type, data: Any, where: str) -> Any:
    """Build dataclass ``cls`` from JSON data, checking every field's type."""
    try:
        return _converter(cls)(data)
    except _Invalid as exc:
        raise ProtocolError(f"{where}{exc.path}: {exc.problem}") from None


Converter = Callable[[Any], Any]


@functools.cache
def _converter(hint: Any) -> Converter:
    """A function that checks and converts JSON data for ``hint``, built once per type."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return _union(hint)
    if origin is list:
        item = typing.get_args(hint)[0]
        return _list(_converter(item), _exact_type(item))
    if origin is dict:
        item = typing.get_args(hint)[1]
        return _dict(_converter(item), _exact_type(item))
    if hint is Any:
        return lambda value: value
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _record(hint)
    if hint is float:
        return _to_float
    if hint is int:
        return _to_int
    name = getattr(hint, "__name__", str(hint))

    def exact(value: Any) -> Any:
        if type(value) is hint:
            return value
        raise _Invalid("", f"expected {name}")

    return exact


def _to_float(value: Any) -> float:
    if type(value) is float and math.isfinite(value):
        return value
    if type(value) is int and INT64_MIN <= value <= INT64_MAX:
        return float(value)
    # No infinity (``1e999`` parses as one) and no integer that a float cannot hold.
    raise _Invalid(
        "", "expected float" if type(value) not in (int, float) else "float out of range"
    )


def _to_int(value: Any) -> int:
    # Every integer on the wire fits SQLite's (and most peers') 64 bits.
    if type(value) is int and INT64_MIN <= value <= INT64_MAX:
        return value
    raise _Invalid("", "expected int" if type(value) is not int else "int out of range")


def _union(hint: Any) -> Converter:
    args = typing.get_args(hint)
    nullable = type(None) in args
    options = [_converter(arg) for arg in args if arg is not type(None)]
    if nullable and len(options) == 1:  # ``T | None``, the usual union: no loop
        (option,) = options

        def optional(value: Any) -> Any:
            return None if value is None else option(value)

        return optional

    def convert(value: Any) -> Any:
        if value is None and nullable:
            return None
        first: _Invalid | None = None
        for option in options:
            try:
                return option(value)
            except _Invalid as exc:
                first = first or exc
        raise first or _Invalid("", "must not be null")

    return convert


#: Types whose JSON values are taken as they are, once their type is checked.
_EXACT = frozenset({str, bool})


def _exact_type(hint: Any) -> type | None:
    """The type of ``hint`` when a value of exactly that type needs no conversion."""
    return hint if hint in _EXACT else None


def _list(item: Converter, exact: type | None = None) -> Converter:
    def convert(value: Any) -> list[Any]:
        if exact is not None and type(value) is list:
            # The usual case (a list of strings) checked in one pass, without a call each.
            for v in value:
                if type(v) is not exact:
                    break
            else:
                return list(value)
        if type(value) is not list:
            raise _Invalid("", "expected a list")
        out = []
        for i, v in enumerate(value):
            try:
                out.append(item(v))
            except _Invalid as exc:
                raise _Invalid(f"[{i}]{exc.path}", exc.problem) from None
        return out

    return convert


def _dict(item: Converter, exact: type | None = None) -> Converter:
    def convert(value: Any) -> dict[str, Any]:
        if exact is not None and type(value) is dict:
            for v in value.values():
                if type(v) is not exact:
                    break
            else:
                return dict(value)  # JSON's keys are strings already
        if type(value) is not dict:
            raise _Invalid("", "expected an object")
        out = {}
        for k, v in value.items():
            try:
                out[str(k)] = item(v)
            except _Invalid as exc:
                # A key is the sender's text: quoted unless plain, so that it cannot
                # forge a line in a log.
                key = f".{k}" if k.isascii() and k.isprintable() else f"[{k!r}]"
                raise _Invalid(f"{key}{exc.path}", exc.problem) from None
        return out

    return convert


def _record(cls: type) -> Converter:
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    #: Per field: its name, its converter, the types taken as they are (a plain
    #: string, or null where allowed: no call), and its default or default factory.
    plan = []
    for f in fields:
        hint = hints[f.name]
        args = typing.get_args(hint) if typing.get_origin(hint) in (Union, types.UnionType) else ()
        exact = {t for t in (hint, *args) if t in _EXACT or t is type(None)}
        plan.append((f.name, _converter(hint), frozenset(exact), f.default, f.default_factory))
    known = {f.name for f in fields}
    # A record built field by field, without its ``__init__``: the same object, as the
    # values are checked already, at a fraction of a frozen dataclass's cost.
    direct = (
        len(fields) == len(dataclasses.fields(cls))
        and not hasattr(cls, "__post_init__")
        and all("__slots__" not in vars(c) for c in cls.__mro__[:-1])
    )
    missing = dataclasses.MISSING

    def convert(value: Any) -> Any:
        if type(value) is not dict:
            raise _Invalid("", "expected an object")
        if not known.issuperset(value):
            unknown = sorted(set(value) - known)[0]
            raise _Invalid("", f"unknown field {unknown!r}")
        kwargs = {}
        for name, field_converter, exact, default, factory in plan:
            if name in value:
                v = value[name]
                if type(v) in exact:
                    kwargs[name] = v
                    continue
                try:
                    kwargs[name] = field_converter(v)
                except _Invalid as exc:
                    raise _Invalid(f".{name}{exc.path}", exc.problem) from None
            elif default is not missing:
                if direct:
                    kwargs[name] = default
            elif factory is not missing:
                if direct:
                    kwargs[name] = factory()
            else:
                raise _Invalid("", f"missing field {name!r}")
        if not direct:
            return cls(**kwargs)
        return record(cls, kwargs)

    return convert


async def read_message(reader: asyncio.StreamReader, max_frame: int = DEFAULT_MAX_FRAME) -> Message:
    """Read one frame; raises :class:`ProtocolError` or ``asyncio.IncompleteReadError``."""
    header = await reader.readexactly(HEADER.size)
    (length,) = HEADER.unpack(header)
    if length > max_frame:
        raise ProtocolError(f"frame of {length} bytes exceeds the limit of {max_frame}")
    return decode(await reader.readexactly(length))


async def write_message(writer: asyncio.StreamWriter, message: Message) -> None:
    writer.write(encode(message))
    await writer.drain()


def recv_message(sock: socket.socket, max_frame: int = DEFAULT_MAX_FRAME) -> Message:
    """Blocking read of one frame from a socket (for the client library)."""
    return decode(recv_frame(sock, max_frame))


def recv_frame(sock: socket.socket, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """Blocking read of one frame's body from a socket, not decoded."""
    (length,) = HEADER.unpack(_recv_exactly(sock, HEADER.size))
    if length > max_frame:
        raise ProtocolError(f"frame of {length} bytes exceeds the limit of {max_frame}")
    return _recv_exactly(sock, length)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(min(n - len(chunks), 1 << 20))
        if not chunk:
            raise ConnectionError("the scheduler closed the connection")
        chunks += chunk
    return bytes(chunks)
