"""``dsub --dry-run FILE``: every job the submit file would make, queueing nothing.

The text form also says which connected workers could run each job (asking the
scheduler for its workers when it can be reached). ``--json`` prints a list of
objects with HTCondor's submit keys: ``request_memory`` in MB and
``request_disk`` in KB, ``arguments`` and ``transfer_input_files`` as lists,
``environment`` as an object, ``attributes`` (the job attributes, by ClassAd name) too.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from typing import Any

from control_node import render
from control_node.cli.common import connect
from control_node.connection import DfarmError
from control_node.input_files import is_url, with_url_requirements
from control_node.submit import parse_description
from control_node.submit_file import ProcDescription
from scheduler.matching.capacity import Capacity, capacity_of, describe_requests, never_reasons

#: The keys of each job in ``--dry-run --json``, in order.
KEYS = (
    "proc", "executable", "arguments", "input", "output", "error", "log", "initialdir",
    "environment", "transfer_input_files", "transfer_output_files", "request_cpus",
    "request_memory", "request_disk", "request_gpus", "requirements", "notify_user",
    "notification", "priority", "max_retries", "hold", "attributes",
)  # fmt: skip


def job_record(proc: ProcDescription) -> dict[str, Any]:
    """One job as ``--dry-run --json`` prints it."""
    return {key: getattr(proc, key) for key in KEYS}


def dry_run(args: argparse.Namespace) -> int:
    """Parse the file (cluster id 0) and print what it would queue."""
    description = parse_description(
        args.file, None, 0, None, None, strict=getattr(args, "strict", False)
    )
    if args.json:
        for warning in description.warnings:  # stdout is the JSON alone
            print(f"dsub: warning: {warning}", file=sys.stderr)
        print(render.dump_json([job_record(proc) for proc in description.procs]))
        return 0
    try:
        with connect(args) as client:
            workers: list[Capacity] | None = [capacity_of(w) for w in client.workers()]
        unknown = ""
    except DfarmError as exc:
        workers, unknown = None, f"unknown (cannot ask the scheduler: {exc})"
    for warning in description.warnings:
        print(f"dsub: warning: {warning}")
    for proc in description.procs:
        print(describe(proc, workers, unknown))
    print(f"{len(description.procs)} job(s) would be submitted; nothing was queued.")
    return 0


def describe(proc: ProcDescription, workers: list[Capacity] | None, unknown: str) -> str:
    """A job in a few lines: what runs, what is staged, what it needs, where it fits."""
    lines = [f"job {proc.proc}: {' '.join([proc.executable, *proc.arguments])}"]
    base = proc.initialdir
    staged = [
        f if is_url(f) else os.path.relpath(f, base) + ("/" if f.endswith("/") else "")
        for f in proc.transfer_input_files
    ]
    lines.append(f"  initialdir: {base}")
    if staged:
        lines.append(f"  inputs: {', '.join(staged)}")
    if proc.input:
        lines.append(f"  stdin: {os.path.relpath(proc.input, base)}")
    outs = [f"{k} {os.path.relpath(v, base)}" for k, v in
            (("output", proc.output), ("error", proc.error), ("log", proc.log)) if v]  # fmt: skip
    if outs:
        lines.append(f"  writes: {', '.join(outs)}")
    if proc.transfer_output_files is not None:
        lines.append(f"  outputs: {', '.join(proc.transfer_output_files) or '(none)'}")
    lines.append(f"  resources: {describe_requests(proc)}; priority {proc.priority}")
    if proc.requirements:
        lines.append(f"  requirements: {proc.requirements}")
    if proc.machine:
        lines.append(f"  pinned to worker: {proc.machine}")
    if workers is None:
        lines.append(f"  matching workers: {unknown}")
    else:
        urls = [f for f in proc.transfer_input_files if is_url(f)]
        job = replace(proc, requirements=with_url_requirements(proc.requirements, urls))
        matching, reasons = never_reasons(job, workers)
        shown = ", ".join(matching) if matching else "none: " + "; ".join(reasons)
        lines.append(f"  matching workers: {shown}")
    return "\n".join(lines)
