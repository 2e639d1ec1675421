"""Frames and encoding: length-prefixed JSON, validated field by field."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import enum
import json
import socket
import types
import typing
from typing import Any, Union

from scheduler.protocol.messages import MESSAGE_TYPES, Message
from scheduler.protocol.records import DEFAULT_MAX_FRAME, HEADER, ProtocolError

__all__ = [
    "pack_bytes",
    "unpack_bytes",
    "decode",
    "encode",
    "from_wire",
    "read_message",
    "recv_message",
    "to_wire",
    "write_message",
]


def to_wire(value: Any) -> Any:
    """A message or record as plain JSON-able data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {f.name: to_wire(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, Message):
            out["type"] = value.type
            if out.get("id") is None:
                out.pop("id")
        return out
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [to_wire(v) for v in value]
    if isinstance(value, dict):
        return {k: to_wire(v) for k, v in value.items()}
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


def encode(message: Message) -> bytes:
    """A whole frame: length header and JSON body."""
    body = json.dumps(to_wire(message), separators=(",", ":")).encode()
    return HEADER.pack(len(body)) + body


def decode(body: bytes) -> Message:
    """Parse and validate one frame body; raises :class:`ProtocolError`."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"malformed JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError("a message must be a JSON object")
    kind = data.pop("type", None)
    cls = MESSAGE_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProtocolError(f"unknown message type {kind!r}")
    return from_wire(cls, data, kind)


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def from_wire(cls: type, data: Any, where: str) -> Any:
    """Build dataclass ``cls`` from JSON data, checking every field's type."""
    if not isinstance(data, dict):
        raise ProtocolError(f"{where}: expected an object")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = set(data) - set(fields)
    if unknown:
        raise ProtocolError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    hints = _hints(cls)
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ProtocolError(f"{where}: missing field {name!r}")
            continue
        kwargs[name] = _convert(hints[name], data[name], f"{where}.{name}")
    return cls(**kwargs)


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, where)
            except ProtocolError as exc:
                errors.append(str(exc))
        raise ProtocolError(errors[0] if errors else f"{where}: must not be null")
    if origin is list:
        if not isinstance(value, list):
            raise ProtocolError(f"{where}: expected a list")
        (item,) = typing.get_args(hint)
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ProtocolError(f"{where}: expected an object")
        _, item = typing.get_args(hint)
        return {str(k): _convert(item, v, f"{where}.{k}") for k, v in value.items()}
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint):
        return from_wire(hint, value, where)
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool) and type(value) is hint:
        return value
    raise ProtocolError(f"{where}: expected {getattr(hint, '__name__', hint)}")


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
    (length,) = HEADER.unpack(_recv_exactly(sock, HEADER.size))
    if length > max_frame:
        raise ProtocolError(f"frame of {length} bytes exceeds the limit of {max_frame}")
    return decode(_recv_exactly(sock, length))


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(min(n - len(chunks), 1 << 20))
        if not chunk:
            raise ConnectionError("the scheduler closed the connection")
        chunks += chunk
    return bytes(chunks)
