"""The dfarm submit-file parser: the seed format and HTCondor's submit language.

Where dfarm accepts HTCondor syntax it means what condor_submit means; what it does not
support is rejected with the file name, line number and a clear message. Every
``key = value`` also defines a macro, expanded when a ``queue`` statement is reached with
the values in force there (see ``submit_quoting`` for macros, quoting and units,
``submit_queue`` for the queue forms, ``submit_conditions`` for if/else,
``submit_functions`` for the macro functions and ``submit_keys`` for what each key
means). This module holds the parser's core: statements in order, keys and macros,
and each proc's assembly; its parts are mixed in: ``submit_includes`` (include, error
and warning statements, and the reading of the text), ``submit_paths`` (the files a
proc names), ``submit_universe`` (the universe and transfer choices) and
``submit_values`` (typed values).

A key HTCondor does not know is a macro, as there; one the file never uses gets a
warning with the key it may have meant. ``+Name = value`` and ``MY.Name = value`` are
custom job attributes (a ClassAd expression, kept as text). A file may redefine a
predefined macro (``Process``, ``Cluster``, ``Step``...): its value wins, as in
condor_submit; a queue variable wins over the file's value of the same key.
As in HTCondor, an undefined macro expands to nothing (with a warning). An empty
value (``key =``) leaves the key unset, except that an empty or ``""``
``transfer_output_files`` means "no output files" and an empty ``arguments`` still
counts as given (so a seed ``data`` file is then not passed as an argument).
"""

from __future__ import annotations

import difflib
import os
import re
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from control_node.submit_conditions import ConditionError, Conditions
from control_node.submit_errors import SubmitFileError
from control_node.submit_functions import RandomDraws
from control_node.submit_includes import (
    DIRECTIVES,
    IncludeReader,
    mark_custom_attributes,
    refuse_byte_order_mark,
)
from control_node.submit_keys import (
    CARRIED_OUT,
    CUSTOM_PREFIX,
    HTCONDOR_KEYS,
    STORED,
    canonical,
    classad_value,
    suggestion,
    warning_for,
)
from control_node.submit_lines import CONTROL_CHARS, LineError, Statement, read_statements
from control_node.submit_macros import (
    MacroContext,
    MacroError,
    expand_macros,
    replace_self_reference,
    undefined_macros,
    used_names,
)
from control_node.submit_paths import PathReaders
from control_node.submit_queue import (
    PREDEFINED,
    Item,
    QueueError,
    evaluate_count,
    parse_queue,
    queue_items,
)
from control_node.submit_requirements import Derived, DerivedError, derive
from control_node.submit_universe import ChoiceChecks, with_clause
from control_node.submit_values import INT, INT32, ValueReaders
from scheduler.matching.requirements import REQUIREMENT_ATTRIBUTES
from scheduler.protocol import (
    parse_disk_kb,
    parse_memory_mb,
)
from worker_node import checkpoint

__all__ = [
    "ProcDescription",
    "SubmitDescription",
    "SubmitFileError",
    "parse_disk_kb",
    "parse_memory_mb",
    "parse_submit_file",
    "parse_submit_text",
]


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
    #: Job attributes by their ClassAd name: ``+Name``/``MY.Name`` and the stored keys
    #: (``submit_keys.STORED``), each a ClassAd expression as text.
    attributes: dict[str, str] = field(default_factory=dict)
    #: ``hold = true``: queued held, until released.
    hold: bool = False


@dataclass(frozen=True)
class SubmitDescription:
    """A parsed submit file: its procs in order and non-fatal warnings."""

    path: str
    procs: list[ProcDescription]
    warnings: list[str]
    #: The seed of the random functions (``random_seed``, or drawn when not set).
    random_seed: int = 0
    #: ``file:line: unknown key ...`` for each key that is neither HTCondor's nor used
    #: as a macro (also among the warnings; ``dsub --strict`` refuses them).
    unknown_keys: list[str] = field(default_factory=list)


SEED_KEYS = frozenset({"executable", "data", "email", "client"})
#: The keys dfarm carries out.
SUPPORTED_KEYS = CARRIED_OUT
#: HTCondor's keys that dfarm stores as job attributes or accepts with a warning.
ACCEPTED_KEYS = HTCONDOR_KEYS - CARRIED_OUT

_DEFINED = re.compile(r"\bdefined\s+([A-Za-z_][A-Za-z0-9_.]*)", re.IGNORECASE)
#: What a custom resource request ``request_<name>`` stores: ``Request<name>``.
_REQUEST = re.compile(r"request_([A-Za-z_][A-Za-z0-9_]*)")
MAX_PROCS = 1_000_000
#: Keys whose value may span lines (``key @=TAG``): a newline is a blank there.
_MULTI_LINE_KEYS = frozenset({"arguments", "environment", "requirements"})
#: The macros condor_submit defines itself (a file may redefine them: not a typo).
AUTOMATIC = PREDEFINED | {
    "step", "itemindex", "row", "item", "node", "submit_file", "arch", "opsys",
    "opsysandver", "opsysmajorver", "opsysver", "spool", "islinux", "iswindows",
}  # fmt: skip
# ----------------------------------------------------------------------------- parser


class _Parser(ValueReaders, PathReaders, ChoiceChecks, IncludeReader):
    def __init__(
        self, filename: str, cluster: int, cwd: str, environ: Mapping[str, str], seed: int
    ):
        self.filename, self.cluster, self.cwd, self.environ = filename, cluster, cwd, environ
        self.default_seed = seed
        self.submit_file = os.path.join(cwd, filename)
        self.raw: dict[str, str] = {}  # lower-case key -> raw value, for macro expansion
        self.lines: dict[str, int] = {}  # lower-case key -> line of its definition
        self.files: dict[str, str] = {}  # lower-case key -> included file defining it
        #: Job attributes: lower-case name -> (name as first written, its submit key).
        self.attrs: dict[str, tuple[str, str]] = {}
        #: The queue variables of the item being built (lower case): they win over keys.
        self.item: dict[str, str] = {}
        self.unknown: list[str] = []
        self.procs: list[ProcDescription] = []
        self.warnings: dict[str, None] = {}
        self.executable: str | None = None
        self.outputs: dict[tuple[str, str, int], int] = {}
        self._stat: dict[str, int] = {}

    # -- errors, warnings and raw values
    def error(self, key: str, message: str) -> SubmitFileError:
        """An error on the line where key was last set."""
        return SubmitFileError(self.files.get(key, self.filename), self.lines.get(key), message)

    def unknown_name(self, key: str, name: str) -> None:
        """``key``'s expression names ``name``, neither a standard machine attribute
        nor the job's: a warning (it is UNDEFINED where no worker advertises it, as in
        HTCondor), an error with ``dsub --strict``."""
        close = difflib.get_close_matches(name.lower(), sorted(REQUIREMENT_ATTRIBUTES), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        text = (
            f"{key} names '{name}', neither a standard machine attribute nor a job"
            f" attribute: it is undefined on every worker that does not advertise it{hint}"
        )
        line = self.lines.get(key)
        if f"{self.filename}:{line}: {text}" not in self.unknown:
            self.unknown.append(f"{self.filename}:{line}: {text}")
        self.warn(line, text)

    def warn(self, line: int | None, text: str, file: str | None = None) -> None:
        name = file or self.filename
        where = name if line is None else f"{name}:{line}"
        self.warnings[f"{where}: {text}"] = None

    def get(self, ctx: MacroContext, key: str) -> str | None:
        """The expanded, stripped value of key, or None when it is not set."""
        raw = self.item.get(key, self.raw.get(key))
        if raw is None:
            return None
        try:
            value = expand_macros(raw, ctx, (key,)).strip()
        except MacroError as e:
            raise self.error(key, str(e)) from None
        m = CONTROL_CHARS.search(value)
        if m and m[0] == "\n" and key not in _MULTI_LINE_KEYS and key not in self.attr_keys():
            raise self.error(
                key, f"the value of '{key}' spans lines (a line break): it takes one line"
            )
        if m and m[0] != "\n":
            raise self.error(key, f"value of '{key}' contains control character U+{ord(m[0]):04X}")
        if "$$(" in value and key not in ("arguments", "environment", *self.attr_keys()):
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
        #: Active assignments and queue statements, by their place in reading order.
        assigned: list[tuple[int, Statement]] = []
        active: list[Statement] = []
        #: The statements being read, innermost include last, with the file each reads.
        pending: list[tuple[Iterator[Statement], str]] = [(iter(stmts), self.submit_file)]
        while pending:
            st = next(pending[-1][0], None)
            if st is None:
                pending.pop()
                continue
            if st.kind in ("if", "elif", "else", "endif"):
                try:
                    conditions.step(st.kind, st.value, st.line)
                except (ConditionError, MacroError) as e:
                    raise SubmitFileError(self.where(st), st.line, str(e)) from None
            elif not conditions.active:
                continue
            elif st.kind in DIRECTIVES:
                self.directive(st, pending, used)
            elif st.kind == "queue":
                queues.append(len(active))
                active.append(st)
                self.queue(st)
            else:
                self.assign(st, used)
                assigned.append((len(active), st))
                active.append(st)
        if conditions.blocks:
            line = conditions.blocks[-1].line
            raise SubmitFileError(self.filename, line, "this 'if' has no 'endif'")
        for st, text in undefined_macros(active, self.environ):
            self.warn(st.line, text, st.file)
        for order, st in assigned:
            if queues and order > queues[-1]:
                self.warn(
                    st.line, f"'{st.key}' is set after the last 'queue' and has no effect", st.file
                )
        if not queues:
            if any(k not in SEED_KEYS for k in self.raw):
                raise SubmitFileError(self.filename, None, "no 'queue' statement")
            self.queue(Statement(0, None, "", "queue"))
        self.shared_output_warnings()

    def is_defined(self, name: str) -> bool:
        return bool(self.raw.get(name, "").strip()) or name in PREDEFINED

    def expand_condition(self, text: str) -> str:
        return expand_macros(text, self.context(len(self.procs), 0, None), ())

    def attr_keys(self) -> list[str]:
        return [key for _, key in self.attrs.values()]

    def assign(self, st: Statement, used: set[str]) -> None:
        assert st.key is not None
        if st.key.startswith(CUSTOM_PREFIX):
            name = st.key[len(CUSTOM_PREFIX) :]
            key = "my." + name.lower()
            first = self.attrs.get(name.lower(), (name, key))[0]
            self.attrs[name.lower()] = (first, key)
        else:
            key = self.classify(st.line, st.key, canonical(st.key), used, st.file)
        try:
            self.raw[key] = replace_self_reference(st.value, key, self.raw.get(key))
        except MacroError as e:
            raise SubmitFileError(self.where(st), st.line, str(e)) from None
        self.lines[key] = st.line
        if st.file:
            self.files[key] = st.file
        else:
            self.files.pop(key, None)
        if st.key.lower() != key:  # an alias: $(Args) still names what the file wrote
            self.raw[st.key.lower()] = self.raw[key]

    def classify(
        self, line: int, written: str, key: str, used: set[str], file: str | None = None
    ) -> str:
        """Note what setting ``key`` (``written`` as in the file) means: a job
        attribute, a warning, a typo; returns the key."""
        request = _REQUEST.fullmatch(key)
        if key in STORED:
            attr = STORED[key][0]
            self.attrs[attr.lower()] = (attr, key)
        elif request and key not in HTCONDOR_KEYS:
            attr = "Request" + written[len("request_") :]
            self.attrs[attr.lower()] = (attr, key)
            return key
        why = warning_for(key, written)
        if why:
            self.warn(line, why, file)
        elif key not in HTCONDOR_KEYS and key not in used and key not in AUTOMATIC:
            near = suggestion(key)
            hint = f", did you mean '{near}'?" if near else " (it only defines a macro)"
            text = f"{file or self.filename}:{line}: unknown key '{written}'{hint}"
            self.unknown.append(text)
            self.warn(line, f"unknown key '{written}'{hint}", file)
        return key

    def context(
        self, proc: int, step: int, item: Item | None, seed: int | None = None
    ) -> MacroContext:
        """Predefined macros: the queue variables always win; Cluster, Process and
        the others only when the file does not define them (as in condor_submit). With an
        ``item`` (a proc being built), ``seed`` seeds its ``$RANDOM_*()`` draws."""
        auto = {"cluster": str(self.cluster), "process": str(proc), "dollar": "$"}
        auto |= {"clusterid": auto["cluster"], "procid": auto["process"]}
        fixed = {name: value for name, value in auto.items() if name not in self.raw}
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
            raise SubmitFileError(self.where(st), line, str(e)) from None
        if len(self.procs) + count * len(items) > MAX_PROCS:
            raise SubmitFileError(self.where(st), line, f"more than {MAX_PROCS} procs")
        seed = self.seed()
        for item in items:
            for step in range(count):
                self.procs.append(self.build(len(self.procs), step, line, item, seed))
        self.item = {}

    # -- one proc
    def build(
        self, proc: int, step: int, qline: int | None, item: Item, seed: int
    ) -> ProcDescription:
        self.item = {canonical(name): value for name, value in item.values.items()}
        ctx = self.context(proc, step, item, seed)
        self.check_fixed_choices(ctx)
        initialdir = self.initialdir(ctx)
        executable = self.the_executable(ctx, qline)
        stdin = self.existing_file(ctx, "input", initialdir, "input file")
        inputs = self.input_files(ctx, initialdir)
        container = self.container(ctx, initialdir)
        if container.stage is not None and container.stage not in inputs:
            inputs.append(container.stage)
        data = self.existing_file(ctx, "data", initialdir, "data file")
        if data is not None and data not in inputs:
            inputs.append(data)
        self.check_collisions(executable, stdin, inputs, data)
        out = {k: self.output_path(ctx, k, initialdir) for k in ("output", "error", "log")}
        if out["output"] is not None and out["output"] == out["error"]:
            self.warn(self.lines.get("error"), "'output' and 'error' name the same file")
        arguments = self.arguments(ctx, data)
        notify_user, notification = self.notification(ctx)
        getenv = self.getenv(ctx)
        environment = self.environment(ctx, getenv)
        result_file = self.result_file(ctx)
        outputs = self.output_files(ctx)
        if result_file and outputs is not None and result_file not in outputs:
            outputs = [*outputs, result_file]
        draws = ctx.call
        derived = self.derived(ctx)
        attributes = self.attributes(ctx) | derived.attributes
        self.check_checkpointing(attributes)
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
            request_cpus=self.count(ctx, "request_cpus", 1, 1),
            request_memory=self.quantity(ctx, "request_memory", parse_memory_mb),
            request_disk=self.quantity(ctx, "request_disk", parse_disk_kb),
            request_gpus=self.count(ctx, "request_gpus", 0, 0),
            notify_user=notify_user,
            notification=notification,
            notification_per_job=self.boolean(ctx, "notification_per_job"),
            priority=self.integer(ctx, "priority", 0, -INT32),
            machine=self.machine(ctx),
            getenv=getenv is not None,
            max_retries=derived.max_retries or self.integer(ctx, "max_retries", 0, 0),
            allowed_job_duration=self.integer(ctx, "allowed_job_duration", 0, 1) or None,
            params={**item.values, **draws.drawn} if isinstance(draws, RandomDraws) else {},
            result_file=result_file,
            requirements=with_clause(derived.requirements, container.clause),
            attributes=attributes | container.attributes,
            hold=self.boolean(ctx, "hold"),
        )

    def check_checkpointing(self, attributes: dict[str, str]) -> None:
        """Refuse checkpoint keys whose values a worker could not act on (see
        :func:`worker_node.checkpoint.policy`), on the line of the key."""
        try:
            checkpoint.policy(attributes)
        except ValueError as exc:
            key = str(exc).split(":", 1)[0]
            raise self.error(key, str(exc)) from None
        if "SuccessCheckpointExitCode" not in attributes:
            for key in ("transfer_checkpoint_files", "job_max_vacate_time", "kill_sig"):
                if key in self.lines:
                    self.warn(
                        self.lines[key],
                        f"'{key}' acts only for a job that sets checkpoint_exit_code",
                        self.files.get(key),
                    )

    def attributes(self, ctx: MacroContext) -> dict[str, str]:
        """The job attributes, as HTCondor puts them in the job's ClassAd."""
        out: dict[str, str] = {}
        for name, key in self.attrs.values():
            value = self.get(ctx, key)
            if value is None or (value == "" and not key.startswith("my.")):
                continue
            kind = STORED[key][1] if key in STORED else "expr"
            if kind == "kb":
                value, kind = str(self.quantity(ctx, key, parse_disk_kb)), "expr"
            if kind == "expr" and value:
                shown = f"job attribute {name}" if key.startswith("my.") else key
                value = self.expression(key, value, shown)
            out[name] = classad_value(value, kind) if value else "undefined"
        return out

    def derived(self, ctx: MacroContext) -> Derived:
        """The requirements with the clauses HTCondor derives from keys (see
        ``submit_requirements``), and the attributes these name."""
        requests = [name[len("Request") :] for name, key in self.attrs.values()
                    if _REQUEST.fullmatch(key) and key not in HTCONDOR_KEYS]  # fmt: skip
        try:
            return derive(
                lambda key: self.get(ctx, key),
                self.requirements(ctx),
                requests,
                self.count(ctx, "request_gpus", 0, 0),
            )
        except DerivedError as e:
            raise self.error(e.key, e.message) from None


# ----------------------------------------------------------------------------- entry points


def parse_submit_text(
    text: str,
    *,
    filename: str,
    cluster: int,
    cwd: str,
    environ: Mapping[str, str] | None = None,
    seed: int | None = None,
    macros: Mapping[str, str] | None = None,
    append_macros: Mapping[str, str] | None = None,
) -> SubmitDescription:
    """Parse submit-file text; relative paths start from ``cwd``. Raises SubmitFileError.

    ``seed`` seeds the random functions when the file sets no ``random_seed``
    (default: a fresh random seed, returned in the description). A DAG node's
    ``VARS``: ``macros`` are set before the file's first line, ``append_macros``
    just before each ``queue`` statement, as condor_submit's ``-append`` lines are."""
    refuse_byte_order_mark(text, filename)
    seed = secrets.randbits(48) if seed is None else seed
    parser = _Parser(
        filename, cluster, os.path.abspath(cwd), os.environ if environ is None else environ, seed
    )
    try:
        stmts = read_statements(mark_custom_attributes(text))
    except LineError as e:
        raise SubmitFileError(filename, e.line, str(e)) from None
    if macros or append_macros:
        stmts = _with_macros(stmts, macros or {}, append_macros or {})
    parser.run(stmts)
    random_seed = parser.seed() if parser.procs else seed
    return SubmitDescription(
        filename, parser.procs, list(parser.warnings), random_seed, parser.unknown
    )


def _with_macros(
    stmts: list[Statement], before: Mapping[str, str], appended: Mapping[str, str]
) -> list[Statement]:
    """``stmts`` with ``before`` set first and ``appended`` before each ``queue``; a
    ``My.Name`` macro (a DAG's ``VARS node +Name=...``) sets the job attribute."""

    def key_of(name: str) -> str:
        return CUSTOM_PREFIX + name[3:] if name[:3].lower() == "my." else name

    out = [Statement(0, key_of(key), value) for key, value in before.items()]
    for st in stmts:
        if st.kind == "queue":
            out += [Statement(st.line, key_of(key), value) for key, value in appended.items()]
        out.append(st)
    return out


def parse_submit_file(
    path: str | os.PathLike[str],
    *,
    cluster: int,
    cwd: str | None = None,
    environ: Mapping[str, str] | None = None,
    seed: int | None = None,
    macros: Mapping[str, str] | None = None,
    append_macros: Mapping[str, str] | None = None,
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
        text,
        filename=name,
        cluster=cluster,
        cwd=cwd or os.getcwd(),
        environ=environ,
        seed=seed,
        macros=macros,
        append_macros=append_macros,
    )
