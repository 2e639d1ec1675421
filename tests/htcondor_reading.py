"""HTCondor's and dfarm's readings of a submit file, in one normalised form.

HTCondor's reading comes from its own submit code (``htcondor.Submit(text).jobs()``
of the v1 bindings). That code ends the process on some inputs (``$INT()`` of a
word calls ``abort()``) and loops forever on others, so it runs in a child process
(``python tests/htcondor_reading.py FILE...``) that prints one JSON line per file;
:func:`htcondor_readings` restarts it after the file that killed or stalled it and
counts that file as refused.

Each reading is ``{"refused": message or None, "jobs": [job, ...]}``, a job being a
dict of the keys compared (see :data:`COMPARED`) with paths relative to the
submit file's folder, and ``ad``: every attribute of the job's ClassAd (lower-case
name -> expression text), against which the attributes dfarm stores are compared.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterable
from typing import Any

#: The normalised keys of a job, in the order differences are reported.
COMPARED = (
    "executable", "arguments", "environment", "input", "output", "error", "log",
    "initialdir", "transfer_input_files", "transfer_output_files", "request_cpus",
    "request_memory", "request_disk", "request_gpus", "priority", "max_retries",
    "notify_user", "notification", "requirements", "custom", "policies", "item",
)  # fmt: skip
#: Submit policy key -> HTCondor job attribute.
POLICIES = {
    "periodic_hold": "PeriodicHold",
    "periodic_release": "PeriodicRelease",
    "periodic_remove": "PeriodicRemove",
    "on_exit_hold": "OnExitHold",
    "on_exit_remove": "OnExitRemove",
}
#: The value of a policy attribute HTCondor sets when the file does not.
POLICY_DEFAULTS = {"on_exit_remove": "true"}
NOTIFICATIONS = {0: "never", 1: "always", 2: "complete", 3: "error", 4: "start"}
#: ``+Name = value`` and ``MY.Name = value`` lines: the file's custom attributes.
CUSTOM = re.compile(r"^[ \t]*(?:\+|MY\.)([A-Za-z_][A-Za-z0-9_]*)[ \t]*=", re.I | re.M)
#: Clauses HTCondor adds to every Requirements (the user's expression comes first).
DEFAULT_CLAUSE = re.compile(
    r"TARGET\.(Arch|OpSys|Disk|Memory|Cpus|GPUs|HasFileTransfer|FileSystemDomain|"
    r"HasDocker|HasContainer|HasSingularity|HasSandboxImage|HasDockerURL|"
    r"HasJobTransferPlugins|CUDACapability|GPUs_Capability|GPUs_GlobalMemoryMb|"
    r"HasSelfCheckpointTransfers|HasEncryptExecuteDirectory|HasJICLocalStdin)\b"
)
QDATE = 1_700_000_000
#: The environment both readers see (``getenv`` copies it into the jobs).
ENVIRONMENT = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/nonexistent", "LANG": "C.UTF-8"}
#: A queue statement; one that opens a list ends at the line that closes it.
QUEUE_LINE = re.compile(r"^[ \t]*queue\b", re.I)
PER_FILE_TIMEOUT = 20.0
#: ``queue 0``: condor_submit queues no job (the bindings' ``jobs()`` would queue one).
ZERO = re.compile(r"\s*0+\s*")


# ----------------------------------------------------------------------------- shared


def relative(path: str | None, base: str, folder: str) -> str | None:
    """``path`` (absolute, or relative to ``base``) relative to the submit file's folder."""
    if path is None:
        return None
    return os.path.relpath(os.path.normpath(os.path.join(base, path)), folder)


def split_conjuncts(text: str) -> list[str]:
    """The top-level ``&&`` operands of a ClassAd expression (quotes and parentheses kept)."""
    parts, depth, start, quote, i = [], 0, 0, False, 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == '"':
                quote = False
        elif c == '"':
            quote = True
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0 and text.startswith("&&", i):
            parts.append(text[start:i].strip())
            start = i + 2
            i += 1
        i += 1
    parts.append(text[start:].strip())
    return [p for p in parts if p]


def unwrap(text: str) -> str:
    """``text`` without parentheses around the whole of it."""
    text = text.strip()
    while (
        text.startswith("(")
        and text.endswith(")")
        and split_conjuncts(text[1:-1])
        and (_balanced(text[1:-1]))
    ):
        text = text[1:-1].strip()
    return text


def _balanced(text: str) -> bool:
    depth, quote = 0, False
    for c in text:
        if quote:
            quote = c != '"'
        elif c == '"':
            quote = True
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth < 0:
                return False
    return depth == 0


def canonical(expr: str | None) -> str | None:
    """A ClassAd expression as HTCondor's unparser writes it (white space collapsed
    when it does not parse)."""
    if expr is None:
        return None
    import classad2

    try:
        text = str(classad2.ExprTree(expr))
    except Exception:
        text = " ".join(expr.split())
    return unwrap(text)


# ----------------------------------------------------------------------------- HTCondor side


def parse_args_v2(text: str) -> list[str]:
    """HTCondor's new-syntax argument string (``Arguments``): white space separates,
    single quotes group, ``''`` inside them is a literal quote."""
    args: list[str] = []
    current, in_arg, quoted, i = "", False, False, 0
    while i < len(text):
        c = text[i]
        if quoted:
            if c == "'":
                if text.startswith("''", i):
                    current += "'"
                    i += 1
                else:
                    quoted = False
            else:
                current += c
        elif c == "'":
            quoted, in_arg = True, True
        elif c in " \t":
            if in_arg:
                args.append(current)
            current, in_arg = "", False
        else:
            current += c
            in_arg = True
        i += 1
    if in_arg:
        args.append(current)
    return args


def condor_arguments(ad: Any) -> list[str]:
    if "Arguments" in ad and ad["Arguments"]:
        return parse_args_v2(ad["Arguments"])
    return str(ad.get("Args", "")).split()


def condor_environment(ad: Any) -> dict[str, str]:
    if "Environment" in ad and ad["Environment"]:
        entries = parse_args_v2(ad["Environment"])
    else:
        entries = [e for e in str(ad.get("Env", "")).split(";") if e]
    env = dict(e.split("=", 1) if "=" in e else (e, "") for e in entries)
    if "CONDOR_CONFIG" not in ENVIRONMENT:
        env.pop("CONDOR_CONFIG", None)  # the bindings' own setting, seen by getenv
    return env


def _int_or_none(ad: Any, key: str, default: int | None, evaluate: bool = False) -> int | None:
    """The whole number ``key`` holds; with ``evaluate``, the one an expression gives by
    itself (``request_cpus = 2 * 2``; HTCondor's own default memory and disk requests
    are expressions over the job's usage, compared as None)."""
    value = ad.get(key, default)
    if evaluate and key in ad and not isinstance(value, int | float | str):
        value = ad.eval(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _expr_text(ad: Any, key: str) -> str | None:
    if key not in ad:
        return None
    return canonical(str(ad.lookup(key)))


def condor_requirements(ad: Any, given: bool) -> str | None:
    """The user's part of ``Requirements``: when the file sets ``requirements``
    (``given``), the first clause (HTCondor puts the user's expression first, in
    parentheses, whatever attributes it names); else nothing but the clauses HTCondor
    adds, or a clause it adds of its own (``request_<name>``, ``cuda_version``...)."""
    if "Requirements" not in ad:
        return None
    clauses = split_conjuncts(str(ad.lookup("Requirements")))
    if given and clauses:
        return canonical(clauses[0])
    user = [c for c in clauses if not DEFAULT_CLAUSE.search(c)]
    return canonical(" && ".join(user)) if user else None


def condor_job(
    ad: Any, folder: str, custom: list[str], item: dict[str, str] | None, given: bool
) -> dict:
    iwd = ad["Iwd"]

    def path(key: str) -> str | None:
        value = ad.get(key)
        return None if value in (None, "", "/dev/null") else relative(value, iwd, folder)

    transfer_out = ad.get("TransferOutput")
    policies = {}
    for key, attr in POLICIES.items():
        text = _expr_text(ad, attr)
        if text is None or text == POLICY_DEFAULTS.get(key, "false"):
            continue
        if key == "on_exit_remove" and "JobMaxRetries" in text:
            continue  # what max_retries makes of it: max_retries is compared itself
        policies[key] = text
    return {
        "executable": relative(ad.get("Cmd"), iwd, folder),
        "arguments": condor_arguments(ad),
        "environment": condor_environment(ad),
        "input": path("In"),
        "output": path("Out"),
        "error": path("Err"),
        "log": path("UserLog"),
        "initialdir": relative(iwd, iwd, folder),
        "transfer_input_files": [
            relative(f.strip(), iwd, folder)
            for f in str(ad.get("TransferInput", "")).split(",")
            if f.strip()
        ],
        "transfer_output_files": None
        if transfer_out is None
        else [f.strip() for f in str(transfer_out).split(",") if f.strip()],
        "request_cpus": _int_or_none(ad, "RequestCpus", 1, evaluate=True),
        "request_memory": _int_or_none(ad, "RequestMemory", None),
        "request_disk": _int_or_none(ad, "RequestDisk", None),
        "request_gpus": _int_or_none(ad, "RequestGPUs", 0, evaluate=True),
        "priority": _int_or_none(ad, "JobPrio", 0),
        "max_retries": _int_or_none(ad, "JobMaxRetries", 0),
        "notify_user": ad.get("NotifyUser"),
        "notification": NOTIFICATIONS.get(ad.get("JobNotification", 0), "?"),
        "requirements": condor_requirements(ad, given),
        "custom": {n.lower(): _expr_text(ad, n) for n in custom if n in ad},
        "policies": policies,
        "item": item,
        "ad": {str(n).lower(): _expr_text(ad, str(n)) for n in ad},
    }


def condor_reading(path: str) -> dict:
    """HTCondor's reading of the submit file at ``path``, run in its folder."""
    import htcondor

    folder = os.path.dirname(os.path.abspath(path))
    os.chdir(folder)
    with open(path, "rb") as f:
        text = f.read().decode("utf-8", errors="replace")
    custom = list(dict.fromkeys(CUSTOM.findall(text)))
    jobs: list[dict] = []
    try:
        for part in one_queue_each(text):
            submit = htcondor.Submit(part)
            if ZERO.fullmatch(submit.getQArgs()):
                continue  # jobs() takes a count of 0 as "the statement's count": 1
            given = bool(submit.get("requirements", "").strip())
            ads = list(submit.jobs(clusterid=1, procid=len(jobs), qdate=QDATE))
            items = [
                {k.lower(): v for k, v in i.items()} if isinstance(i, dict) else {"item": i}
                for i in submit.itemdata()
            ]
            per_item = len(ads) // len(items) if items and len(ads) % len(items) == 0 else 0
            jobs += [
                condor_job(ad, folder, custom, items[n // per_item] if per_item else None, given)
                for n, ad in enumerate(ads)
            ]
    except Exception as exc:
        return {"refused": f"{type(exc).__name__}: {exc}".strip(), "jobs": []}
    return {"refused": None, "jobs": jobs}


def one_queue_each(text: str) -> list[str]:
    """The text once per queue statement, each with only that statement: the bindings'
    ``Submit`` expands one queue statement, condor_submit all of them in turn."""
    lines = text.splitlines(keepends=True)
    statements: list[tuple[int, int]] = []  # (first line, line after)
    i = 0
    while i < len(lines):
        if QUEUE_LINE.match(lines[i]):
            end = i + 1
            if "(" in lines[i] and ")" not in lines[i].split("(", 1)[1]:
                while end < len(lines) and not lines[end].strip().startswith(")"):
                    end += 1
                end = min(end + 1, len(lines))
            statements.append((i, end))
            i = end
        else:
            i += 1
    if len(statements) < 2:
        return [text]
    parts = []
    for k, (_, after) in enumerate(statements):
        earlier = {n for a, b in statements[:k] for n in range(a, b)}
        parts.append("".join(line for n, line in enumerate(lines[:after]) if n not in earlier))
    return parts


def htcondor_readings(paths: list[str]) -> dict[str, dict]:
    """HTCondor's reading of each file, from child processes (see the module's docstring)."""
    readings: dict[str, dict] = {}
    todo = list(paths)
    while todo:
        readings.update(_read_some(todo))
        todo = [p for p in todo if p not in readings]
    return readings


def _read_some(paths: list[str]) -> dict[str, dict]:
    """Read files in one child until it ends; a file it died or stalled on is refused."""
    child = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), *paths],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENVIRONMENT,
    )
    assert child.stdout is not None
    readings: dict[str, dict] = {}
    buffer = b""
    deadline = time.monotonic() + PER_FILE_TIMEOUT
    while True:
        ready, _, _ = select.select([child.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            child.kill()
            break
        chunk = os.read(child.stdout.fileno(), 1 << 16)
        if not chunk:
            break
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            record = json.loads(line)
            readings[record.pop("file")] = record
        deadline = time.monotonic() + PER_FILE_TIMEOUT
    child.wait()
    assert child.stderr is not None
    stderr = child.stderr.read().decode(errors="replace").strip().splitlines()
    child.stdout.close()
    child.stderr.close()
    stalled = next((p for p in paths if p not in readings), None)
    if stalled is not None:
        why = stderr[-1] if stderr else f"exit status {child.returncode}"
        readings[stalled] = {"refused": f"the submit code stopped: {why}", "jobs": []}
    return readings


def _main(paths: Iterable[str]) -> None:
    import warnings

    warnings.simplefilter("ignore")  # the bindings warn that there is no condor_config
    for path in paths:
        record = {"file": path, **condor_reading(path)}
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    _main(sys.argv[1:])
