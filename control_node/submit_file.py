"""The dfarm submit-file parser: the seed format and a subset of HTCondor's submit language.

Where dfarm accepts HTCondor syntax it means what condor_submit means; what it does not
support is rejected with the file name, line number and a clear message. Every
``key = value`` also defines a macro, expanded when a ``queue`` statement is reached with
the values in force there (see ``submit_quoting`` for macros, quoting and units,
``submit_queue`` for the queue forms, ``submit_conditions`` for if/else and
``submit_functions`` for the random functions).
As in HTCondor, an undefined macro expands to nothing (with a warning). An empty
value (``key =``) leaves the key unset, except that an empty or ``""``
``transfer_output_files`` means "no output files" and an empty ``arguments`` still
counts as given (so a seed ``data`` file is then not passed as an argument).
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from control_node.submit_conditions import ConditionError, Conditions
from control_node.submit_functions import RandomDraws
from control_node.submit_queue import (
    PREDEFINED,
    Item,
    QueueError,
    evaluate_count,
    parse_queue,
    queue_items,
)
from control_node.submit_quoting import (
    CONTROL_CHARS,
    LineError,
    MacroContext,
    MacroError,
    Statement,
    expand_macros,
    printable,
    read_statements,
    replace_self_reference,
    split_list,
    undefined_macros,
    used_names,
)
from control_node.submit_values import INT, INT32, ValueReaders
from scheduler.protocol import (
    parse_disk_kb,
    parse_memory_mb,
)

__all__ = [
    "ProcDescription",
    "SubmitDescription",
    "SubmitFileError",
    "parse_disk_kb",
    "parse_memory_mb",
    "parse_submit_file",
    "parse_submit_text",
]


class SubmitFileError(Exception):
    """A submit file that dfarm refuses: ``str(e)`` is ``"file:line: message"``."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        super().__init__(path, line, message)
        self.path, self.line, self.message = path, line, printable(message)

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class ProcDescription:
    """One proc of a cluster, with every path absolute on the submit machine."""

    proc: int
    executable: str
    arguments: list[str]
    environment: dict[str, str]
    input: str | None
    output: str | None
    error: str | None
    log: str | None
    transfer_input_files: list[str]
    transfer_output_files: list[str] | None
    initialdir: str
    request_cpus: int
    request_memory: int | None
    request_disk: int | None
    request_gpus: int
    notify_user: str | None
    notification: str
    notification_per_job: bool
    priority: int
    machine: str | None
    getenv: bool
    #: The queue variables of this proc's item and the values its $RANDOM_* drew.
    params: dict[str, str]
    #: A file whose content is the job's result (else the last line of stdout).
    result_file: str | None
    max_retries: int = 0
    allowed_job_duration: int | None = None
    #: A ``requirements`` expression over worker attributes (checked when parsed).
    requirements: str | None = None


@dataclass(frozen=True)
class SubmitDescription:
    """A parsed submit file: its procs in order and non-fatal warnings."""

    path: str
    procs: list[ProcDescription]
    warnings: list[str]
    #: The seed of the random functions (``random_seed``, or drawn when not set).
    random_seed: int = 0


SEED_KEYS = frozenset({"executable", "data", "email", "client"})
SUPPORTED_KEYS = SEED_KEYS | {
    "arguments", "input", "output", "error", "log", "transfer_input_files",
    "transfer_output_files", "initialdir", "environment", "getenv", "request_cpus",
    "request_memory", "request_disk", "request_gpus", "notify_user", "notification",
    "notification_per_job",
    "priority", "universe", "should_transfer_files", "when_to_transfer_output",
    "max_retries", "allowed_job_duration",
    "random_seed", "result_file", "requirements",
}  # fmt: skip
UNSUPPORTED_KEYS = frozenset({
    "rank", "retry_until", "success_exit_code",
    "transfer_executable", "transfer_output_remaps", "periodic_remove", "periodic_hold",
    "periodic_release", "on_exit_remove", "on_exit_hold", "hold", "stream_output",
    "stream_error", "stream_input", "batch_name", "accounting_group", "accounting_group_user",
    "concurrency_limits", "nice_user", "docker_image", "container_image", "deferral_time",
    "job_max_vacate_time", "max_idle", "max_materialize", "skip_filechecks", "copy_to_spool",
    "leave_in_queue", "next_job_start_delay", "allowed_execute_duration",
    "remote_initialdir", "log_xml", "job_lease_duration",
    "output_destination", "transfer_plugins", "want_graceful_removal", "kill_sig",
    "encrypt_input_files", "encrypt_output_files", "dont_encrypt_input_files",
    "dont_encrypt_output_files", "max_transfer_input_mb", "max_transfer_output_mb",
    "preserve_relative_paths", "image_size", "coresize", "description",
})  # fmt: skip

_DEFINED = re.compile(r"\bdefined\s+([A-Za-z_][A-Za-z0-9_.]*)", re.IGNORECASE)
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
MAX_PROCS = 1_000_000


# ----------------------------------------------------------------------------- parser


class _Parser(ValueReaders):
    def __init__(
        self, filename: str, cluster: int, cwd: str, environ: Mapping[str, str], seed: int
    ):
        self.filename, self.cluster, self.cwd, self.environ = filename, cluster, cwd, environ
        self.default_seed = seed
        self.submit_file = os.path.join(cwd, filename)
        self.raw: dict[str, str] = {}  # lower-case key -> raw value, for macro expansion
        self.lines: dict[str, int] = {}  # lower-case key -> line of its definition
        self.procs: list[ProcDescription] = []
        self.warnings: dict[str, None] = {}
        self.executable: str | None = None
        self.outputs: dict[tuple[str, str, int], int] = {}
        self._stat: dict[str, int] = {}

    # -- errors, warnings and raw values
    def error(self, key: str, message: str) -> SubmitFileError:
        """An error on the line where key was last set."""
        return SubmitFileError(self.filename, self.lines.get(key), message)

    def warn(self, line: int | None, text: str) -> None:
        where = self.filename if line is None else f"{self.filename}:{line}"
        self.warnings[f"{where}: {text}"] = None

    def get(self, ctx: MacroContext, key: str) -> str | None:
        """The expanded, stripped value of key, or None when it is not set."""
        if key not in self.raw:
            return None
        try:
            value = expand_macros(self.raw[key], ctx, (key,)).strip()
        except MacroError as e:
            raise self.error(key, str(e)) from None
        m = CONTROL_CHARS.search(value)
        if m:
            raise self.error(key, f"value of '{key}' contains control character U+{ord(m[0]):04X}")
        if "$$(" in value and key not in ("arguments", "environment"):
            raise self.error(
                key,
                f"$$(...) is substituted when the job is matched to a worker: only in"
                f" arguments and environment, not in '{key}'",
            )
        return value

    # -- statements
    def run(self, stmts: list[Statement]) -> None:
        used = {m for s in stmts for m in used_names(s.value)}
        used |= {m.lower() for s in stmts if s.kind != "set" for m in _DEFINED.findall(s.value)}
        conditions = Conditions(self.is_defined, self.expand_condition)
        queues: list[int] = []
        assigned: list[Statement] = []
        active: list[Statement] = []
        for st in stmts:
            if st.kind in ("if", "elif", "else", "endif"):
                try:
                    conditions.step(st.kind, st.value, st.line)
                except (ConditionError, MacroError) as e:
                    raise SubmitFileError(self.filename, st.line, str(e)) from None
            elif not conditions.active:
                continue
            elif st.kind == "queue":
                queues.append(st.line)
                active.append(st)
                self.queue(st)
            else:
                self.assign(st, used)
                assigned.append(st)
                active.append(st)
        if conditions.blocks:
            line = conditions.blocks[-1].line
            raise SubmitFileError(self.filename, line, "this 'if' has no 'endif'")
        for line, text in undefined_macros(active, self.environ):
            self.warn(line, text)
        for st in assigned:
            if queues and st.line > queues[-1]:
                self.warn(st.line, f"'{st.key}' is set after the last 'queue' and has no effect")
        if not queues:
            if any(k not in SEED_KEYS for k in self.raw):
                raise SubmitFileError(self.filename, None, "no 'queue' statement")
            self.queue(Statement(0, None, "", "queue"))
        self.shared_output_warnings()

    def is_defined(self, name: str) -> bool:
        return bool(self.raw.get(name, "").strip()) or name in PREDEFINED

    def expand_condition(self, text: str) -> str:
        return expand_macros(text, self.context(len(self.procs), 0, None), ())

    def assign(self, st: Statement, used: set[str]) -> None:
        assert st.key is not None
        key = st.key.lower()
        if key in PREDEFINED:
            raise SubmitFileError(self.filename, st.line, f"'{st.key}' is predefined")
        if key in UNSUPPORTED_KEYS or (key.startswith("request_") and key not in SUPPORTED_KEYS):
            raise SubmitFileError(
                self.filename, st.line, f"submit key '{st.key}' is not supported yet"
            )
        if key not in SUPPORTED_KEYS and key not in used:
            raise SubmitFileError(self.filename, st.line, f"unknown submit key '{st.key}'")
        try:
            self.raw[key] = replace_self_reference(st.value, key, self.raw.get(key))
        except MacroError as e:
            raise SubmitFileError(self.filename, st.line, str(e)) from None
        self.lines[key] = st.line

    def context(
        self, proc: int, step: int, item: Item | None, seed: int | None = None
    ) -> MacroContext:
        """Predefined macros: Cluster, Process and the queue variables always win;
        Step, ItemIndex and Row only when the file does not define them. With an
        ``item`` (a proc being built), ``seed`` seeds its ``$RANDOM_*()`` draws."""
        fixed = {"cluster": str(self.cluster), "process": str(proc), "dollar": "$"}
        fixed |= {"clusterid": fixed["cluster"], "procid": fixed["process"]}
        soft = {"step": str(step), "itemindex": "0", "row": "0", "node": ""}
        soft["submit_file"] = self.submit_file
        draws = None
        if item is not None:
            fixed |= {name.lower(): value for name, value in item.values.items()}
            soft |= {"itemindex": str(item.index), "row": str(item.row)}
            assert seed is not None  # build() always passes the parse's seed
            draws = RandomDraws(seed, proc)
        return MacroContext(self.raw, fixed, soft, self.environ, {}, draws)

    def seed(self) -> int:
        """``random_seed`` when set (a whole number), else the one drawn for this parse."""
        if "random_seed" not in self.raw:
            return self.default_seed
        value = self.get(self.context(0, 0, None), "random_seed")
        if not value or not INT.fullmatch(value):
            raise self.error("random_seed", f"random_seed must be a whole number, not {value!r}")
        return int(value)

    def queue(self, st: Statement) -> None:
        line = st.line or None
        try:
            spec = parse_queue(st.value, st.block)
            ctx = self.context(len(self.procs), 0, None)
            count = evaluate_count(expand_macros(spec.count, ctx, ()))
            items = queue_items(spec, expand_macros(spec.source, ctx, ()).strip(), self.cwd)
        except (QueueError, MacroError) as e:
            raise SubmitFileError(self.filename, line, str(e)) from None
        if len(self.procs) + count * len(items) > MAX_PROCS:
            raise SubmitFileError(self.filename, line, f"more than {MAX_PROCS} procs")
        seed = self.seed()
        for item in items:
            for step in range(count):
                self.procs.append(self.build(len(self.procs), step, line, item, seed))

    # -- one proc
    def build(
        self, proc: int, step: int, qline: int | None, item: Item, seed: int
    ) -> ProcDescription:
        ctx = self.context(proc, step, item, seed)
        self.check_fixed_choices(ctx)
        initialdir = self.initialdir(ctx)
        executable = self.the_executable(ctx, qline)
        stdin = self.existing_file(ctx, "input", initialdir, "input file")
        inputs = self.input_files(ctx, initialdir)
        data = self.existing_file(ctx, "data", initialdir, "data file")
        if data is not None and data not in inputs:
            inputs.append(data)
        self.check_collisions(executable, stdin, inputs, data)
        out = {k: self.output_path(ctx, k, initialdir) for k in ("output", "error", "log")}
        if out["output"] is not None and out["output"] == out["error"]:
            self.warn(self.lines["error"], "'output' and 'error' name the same file")
        arguments = self.arguments(ctx, data)
        notify_user, notification = self.notification(ctx)
        getenv = self.boolean(ctx, "getenv")
        environment = self.environment(ctx, getenv)
        result_file = self.result_file(ctx)
        outputs = self.output_files(ctx)
        if result_file and outputs is not None and result_file not in outputs:
            outputs = [*outputs, result_file]
        draws = ctx.call
        return ProcDescription(
            proc=proc,
            executable=executable,
            arguments=arguments,
            environment=environment,
            input=stdin,
            output=out["output"],
            error=out["error"],
            log=out["log"],
            transfer_input_files=inputs,
            transfer_output_files=outputs,
            initialdir=initialdir,
            request_cpus=self.integer(ctx, "request_cpus", 1, 1),
            request_memory=self.quantity(ctx, "request_memory", parse_memory_mb),
            request_disk=self.quantity(ctx, "request_disk", parse_disk_kb),
            request_gpus=self.integer(ctx, "request_gpus", 0, 0),
            notify_user=notify_user,
            notification=notification,
            notification_per_job=self.boolean(ctx, "notification_per_job"),
            priority=self.integer(ctx, "priority", 0, -INT32),
            machine=self.machine(ctx),
            getenv=getenv,
            max_retries=self.integer(ctx, "max_retries", 0, 0),
            allowed_job_duration=self.integer(ctx, "allowed_job_duration", 0, 1) or None,
            params={**item.values, **draws.drawn} if isinstance(draws, RandomDraws) else {},
            result_file=result_file,
            requirements=self.requirements(ctx),
        )

    def check_fixed_choices(self, ctx: MacroContext) -> None:
        universe = self.get(ctx, "universe")
        if universe and universe.lower() != "vanilla":
            raise self.error("universe", f"universe '{universe}' is not supported (only vanilla)")
        transfer = self.get(ctx, "should_transfer_files")
        if transfer and transfer.upper() == "NO":
            raise self.error("should_transfer_files", "dfarm always transfers files")
        if transfer and transfer.upper() not in ("YES", "IF_NEEDED"):
            raise self.error("should_transfer_files", f"invalid should_transfer_files {transfer!r}")
        when = self.get(ctx, "when_to_transfer_output")
        if when and when.upper() != "ON_EXIT":
            raise self.error(
                "when_to_transfer_output",
                f"when_to_transfer_output = {when} is not supported (only ON_EXIT)",
            )

    # -- paths
    def kind(self, path: str) -> int:
        """0: missing, 1: regular file, 2: directory, 3: something else."""
        if path not in self._stat:
            isfile, isdir = os.path.isfile(path), os.path.isdir(path)
            exists = isfile or isdir or os.path.exists(path)
            self._stat[path] = 1 if isfile else 2 if isdir else 3 if exists else 0
        return self._stat[path]

    def initialdir(self, ctx: MacroContext) -> str:
        value = self.get(ctx, "initialdir")
        if not value:
            return self.cwd
        path = os.path.normpath(os.path.join(self.cwd, value))
        if self.kind(path) != 2:
            raise self.error("initialdir", f"initialdir '{value}' is not an existing directory")
        return path

    def existing_file_path(self, value: str, base: str, key: str, what: str) -> str:
        path = os.path.normpath(os.path.join(base, value))
        where = "" if os.path.isabs(value) else f" (looked for {path})"
        kind = self.kind(path)
        if kind == 0:
            raise self.error(key, f"{what} '{value}' does not exist{where}")
        if kind == 2 and key == "transfer_input_files":
            raise self.error(
                key, f"'{value}': directories in transfer_input_files are not supported yet"
            )
        if kind != 1:
            raise self.error(key, f"{what} '{value}' is not a regular file{where}")
        return path

    def existing_file(self, ctx: MacroContext, key: str, base: str, what: str) -> str | None:
        value = self.get(ctx, key)
        return self.existing_file_path(value, base, key, what) if value else None

    def the_executable(self, ctx: MacroContext, qline: int | None) -> str:
        value = self.get(ctx, "executable")
        if not value:
            raise SubmitFileError(self.filename, qline, "missing 'executable'")
        path = self.existing_file_path(value, self.cwd, "executable", "executable")
        if self.executable is None:
            self.executable = path
        elif path != self.executable:
            raise self.error(
                "executable",
                "a second executable in one submit file would start a second cluster"
                " in HTCondor; dfarm submits one cluster per file",
            )
        return path

    def input_files(self, ctx: MacroContext, base: str) -> list[str]:
        items = split_list(self.get(ctx, "transfer_input_files") or "")
        for item in items:
            what = "URL inputs" if _URL.match(item) else "directories" if item.endswith("/") else ""
            if what:
                raise self.error(
                    "transfer_input_files",
                    f"'{item}': {what} in transfer_input_files are not supported yet",
                )
        return [
            self.existing_file_path(p, base, "transfer_input_files", "input file") for p in items
        ]

    def check_collisions(
        self, executable: str, stdin: str | None, inputs: list[str], data: str | None
    ) -> None:
        named = [(executable, "executable"), (stdin, "input")]
        named += [(p, "data" if p == data else "transfer_input_files") for p in inputs]
        seen: dict[str, str] = {}
        for path, key in named:
            if path is None:
                continue
            other = seen.setdefault(os.path.basename(path), path)
            if other != path:
                raise self.error(
                    key,
                    f"'{path}' and '{other}' have the same name '{os.path.basename(path)}'"
                    " and would collide in the job's sandbox",
                )

    def output_path(self, ctx: MacroContext, key: str, base: str) -> str | None:
        value = self.get(ctx, key)
        if not value:
            return None
        path = os.path.normpath(os.path.join(base, value))
        if self.kind(path) == 2:
            raise self.error(key, f"{key} file '{value}' is a directory")
        if self.kind(os.path.dirname(path)) != 2:
            raise self.error(key, f"directory of {key} file '{value}' does not exist ({path})")
        if key != "log":
            slot = (key, path, self.lines[key])
            self.outputs[slot] = self.outputs.get(slot, 0) + 1
        return path

    def shared_output_warnings(self) -> None:
        for (key, path, line), count in self.outputs.items():
            if count > 1:
                self.warn(line, f"{count} procs write their {key} to the same file '{path}'")

    def output_files(self, ctx: MacroContext) -> list[str] | None:
        value = self.get(ctx, "transfer_output_files")
        if value is None:
            return None
        names = [] if value == '""' else split_list(value)
        for name in names:
            parts = name.replace("\\", "/").split("/")
            if os.path.isabs(name) or name.startswith("/") or ".." in parts:
                raise self.error(
                    "transfer_output_files",
                    f"transfer_output_files entry '{name}' must be a relative path inside"
                    " the job's sandbox (no absolute path, no '..')",
                )
            if all(p in ("", ".") for p in parts):
                raise self.error(
                    "transfer_output_files", f"invalid transfer_output_files entry '{name}'"
                )
        return names


# ----------------------------------------------------------------------------- entry points


def parse_submit_text(
    text: str,
    *,
    filename: str,
    cluster: int,
    cwd: str,
    environ: Mapping[str, str] | None = None,
    seed: int | None = None,
) -> SubmitDescription:
    """Parse submit-file text; relative paths start from ``cwd``. Raises SubmitFileError.

    ``seed`` seeds the random functions when the file sets no ``random_seed``
    (default: a fresh random seed, returned in the description)."""
    if text.startswith("\ufeff"):
        text = text[1:]
    seed = secrets.randbits(48) if seed is None else seed
    parser = _Parser(
        filename, cluster, os.path.abspath(cwd), os.environ if environ is None else environ, seed
    )
    try:
        stmts = read_statements(text)
    except LineError as e:
        raise SubmitFileError(filename, e.line, str(e)) from None
    parser.run(stmts)
    random_seed = parser.seed() if parser.procs else seed
    return SubmitDescription(filename, parser.procs, list(parser.warnings), random_seed)


def parse_submit_file(
    path: str | os.PathLike[str],
    *,
    cluster: int,
    cwd: str | None = None,
    environ: Mapping[str, str] | None = None,
    seed: int | None = None,
) -> SubmitDescription:
    """Read and parse a submit file; ``cwd`` defaults to the current directory, as condor_submit."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            data = f.read()
    except OSError as e:
        raise SubmitFileError(name, None, f"cannot read submit file: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise SubmitFileError(name, line, "submit file is not valid UTF-8") from None
    return parse_submit_text(
        text, filename=name, cluster=cluster, cwd=cwd or os.getcwd(), environ=environ, seed=seed
    )
