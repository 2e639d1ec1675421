"""Configuration files and environment variables for ``dfarm scheduler`` and ``dfarm worker``.

The keys are not listed anywhere: they are derived from the node's argparse
parser, so an option added to the command line is a key of the file too. The
key of ``--ftp-passive-ports`` is ``ftp_passive_ports``, in the environment
``DFARM_FTP_PASSIVE_PORTS``. A value wins in this order::

    flag  >  environment (DFARM_<KEY>)  >  file (scheduler.toml / worker.toml)  >  default

The file is ``--config FILE``, else ``$DFARM_CONFIG``, else ``/etc/dfarm/<node>.toml``
when it exists. Unknown keys and values of the wrong type are errors naming the
file, the line and the key::

    args, sources = load(build_parser(), argv, "worker")
"""

from __future__ import annotations

import argparse
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Where a node looks for its file when neither --config nor $DFARM_CONFIG names one.
SYSTEM_DIR = Path("/etc/dfarm")
ENV_PREFIX = "DFARM_"
CONFIG_ENV = "DFARM_CONFIG"
#: Options that are actions, not settings: never read from a file or the environment.
NOT_SETTINGS = frozenset({"help", "config", "drain", "backup"})
#: Part of a key that marks its value as secret (shown masked); ``*_file``/``*_env``
#: keys name where a secret is, and are shown.
SECRET_WORDS = ("password", "secret", "token", "passphrase", "private_key")


class ConfigError(Exception):
    """A configuration file or variable that cannot be used; the message says where."""


@dataclass(frozen=True)
class Source:
    """Where an effective value came from: ``flag``, ``env``, ``file`` or ``default``."""

    kind: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind} {self.detail}".strip()


def add_config_option(parser: argparse.ArgumentParser, node: str) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        type=Path,
        help=f"configuration file (default ${CONFIG_ENV}, else {SYSTEM_DIR}/{node}.toml "
        "if it exists); flags and DFARM_<KEY> variables override it",
    )


def settings(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The options that are configuration keys, by key."""
    found = {}
    for action in parser._actions:
        longs = [s for s in action.option_strings if s.startswith("--")]
        if not longs or action.dest in NOT_SETTINGS:
            continue
        found[longs[0][2:].replace("-", "_")] = action
    return found


def is_secret(key: str) -> bool:
    return any(w in key for w in SECRET_WORDS) and not key.endswith(("_file", "_env", "_path"))


def config_path(flag: Path | None, node: str, env: Mapping[str, str]) -> Path | None:
    """The file to read: the flag, ``$DFARM_CONFIG``, or the system one if it exists."""
    if flag is not None:
        return flag
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    default = SYSTEM_DIR / f"{node}.toml"
    return default if default.exists() else None


def read_file(path: Path) -> tuple[dict[str, Any], str]:
    """The table in ``path`` and its text; :class:`ConfigError` naming the file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def line_of(text: str, key: str) -> int | None:
    """The line (1-based) where ``key`` is set in a TOML text, if it can be found."""
    pattern = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
    for number, line in enumerate(text.splitlines(), 1):
        if pattern.match(line):
            return number
    return None


def coerce(action: argparse.Action, value: Any, where: str) -> Any:
    """``value`` (from TOML, or a string from the environment) as the option would
    have parsed it; :class:`ConfigError` naming ``where`` otherwise."""
    from_env = isinstance(value, str) and where.startswith("$")
    # store_true / store_false, and --x / --no-x
    if isinstance(action, argparse._StoreConstAction | argparse.BooleanOptionalAction):
        if from_env and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            value = value.lower() in ("1", "true", "yes", "on")
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        if isinstance(action, argparse.BooleanOptionalAction):
            return value
        return action.const if value else action.default
    if isinstance(action, argparse._CountAction):
        return _number(int, value, where)
    if isinstance(action, argparse._AppendAction) or action.nargs not in (None, "?"):
        if from_env:
            value = value.split()
        if isinstance(value, dict) and isinstance(action, argparse._AppendAction):
            # A table is a list of NAME=VALUE items: [attributes] in worker.toml.
            value = [f"{k}={toml_value(v)}" for k, v in value.items()]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_one(action, item, where) for item in value]
    return _one(action, value, where)


def _one(action: argparse.Action, value: Any, where: str) -> Any:
    kind = action.type
    if kind in (int, float):
        value = _number(kind, value, where)
    elif not isinstance(value, str) and (
        kind in (None, str) or isinstance(value, bool) or not isinstance(value, int | float)
    ):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    else:
        value = str(value)
        if callable(kind):
            try:
                value = kind(value)
            except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
                raise ConfigError(f"{where}: {exc}") from None
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise ConfigError(f"{where}: {value!r} is not one of {choices}")
    return value


def _number(kind: type, value: Any, where: str) -> Any:
    if isinstance(value, str):
        try:
            value = kind(value)
        except ValueError:
            raise ConfigError(f"{where}: expected {_name(kind)}, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: expected {_name(kind)}, got {value!r}")
    if kind is int and isinstance(value, float):
        if not value.is_integer():
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        value = int(value)
    return kind(value)


def _name(kind: type) -> str:
    return "an integer" if kind is int else "a number"


def layered_defaults(
    parser: argparse.ArgumentParser,
    node: str,
    config: Path | None,
    env: Mapping[str, str],
) -> tuple[dict[str, Any], dict[str, Source]]:
    """Values from the file and the environment (env over file), by ``dest``, and
    the source of each."""
    keys = settings(parser)
    values: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    path = config_path(config, node, env)
    if path is not None:
        table, text = read_file(path)
        for key, value in table.items():
            line = line_of(text, key)
            where = f"{path}:{line}" if line else str(path)
            action = keys.get(key)
            if action is None:
                raise ConfigError(
                    f"{where}: unknown key {key!r} for dfarm {node}"
                    + _suggestion(key, keys)
                    + f" (see 'dfarm {node} --help')"
                )
            values[action.dest] = coerce(action, value, f"{where}: key {key!r}")
            sources[action.dest] = Source("file", where)
    for key, action in keys.items():
        name = ENV_PREFIX + key.upper()
        if name in env:
            values[action.dest] = coerce(action, env[name], f"${name}")
            sources[action.dest] = Source("env", name)
    return values, sources


def _suggestion(key: str, keys: Mapping[str, object]) -> str:
    import difflib

    close = difflib.get_close_matches(key, list(keys), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


_UNSET = object()


def load(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    node: str,
    env: Mapping[str, str] | None = None,
) -> tuple[argparse.Namespace, dict[str, Source]]:
    """Parse ``argv`` over the file and environment; returns the arguments and the
    source of every setting (by ``dest``). Raises :class:`ConfigError`."""
    env = os.environ if env is None else env
    keys = settings(parser)
    # Which options were given as flags: parse once over a namespace where every
    # setting is already present, so argparse fills in no default.
    # (append and count actions build on what is there, and start afresh from None.)
    fresh = (argparse._AppendAction, argparse._CountAction)
    required = [a for a in keys.values() if a.required]
    for action in required:
        action.required = False  # it may come from the file or the environment
    probe = argparse.Namespace(
        **{a.dest: None if isinstance(a, fresh) else _UNSET for a in keys.values()}
    )
    given = parser.parse_args(argv, namespace=probe)
    values, sources = layered_defaults(parser, node, getattr(given, "config", None), env)
    parser.set_defaults(**values)
    for action in required:
        action.required = action.dest not in values
    args = parser.parse_args(argv)
    for action in keys.values():
        if getattr(given, action.dest) not in (_UNSET, None):
            sources[action.dest] = Source("flag")
        else:
            sources.setdefault(action.dest, Source("default"))
    return args, sources


def effective(
    parser: argparse.ArgumentParser, args: argparse.Namespace, sources: Mapping[str, Source]
) -> list[tuple[str, Any, Source]]:
    """(key, value, source) of every setting, secrets masked, in the parser's order."""
    rows = []
    for key, action in settings(parser).items():
        value = getattr(args, action.dest)
        if is_secret(key) and value not in (None, ""):
            value = "********"
        rows.append((key, value, sources.get(action.dest, Source("default"))))
    return rows


def toml_value(value: Any) -> str:
    """A value as TOML writes it (None: empty, shown as a comment by the caller)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'
