"""The differential test: every file of tests/htcondor_corpus read by HTCondor's own
submit code (the oracle) and by dfarm's parser, job by job.

dfarm's reading is the one ``dsub --dry-run --json`` prints (``parse_description``,
cluster 1, run from the file's folder). It reports one figure: files expanded
identically / files HTCondor accepts, and files dfarm refuses with a line number /
files HTCondor refuses. It fails when dfarm raises anything but its SubmitError, when
a file HTCondor refuses is accepted (or refused without a line), and when the set of
accepted files read differently is not the one in tests/htcondor_corpus/KNOWN_DIFFERENCES.
"""

from __future__ import annotations

import os
import re
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from htcondor_reading import (
    COMPARED,
    ENVIRONMENT,
    POLICIES,
    POLICY_DEFAULTS,
    canonical,
    htcondor_readings,
    relative,
    split_conjuncts,
)

with warnings.catch_warnings():
    # Without a condor_config the bindings warn that they use an empty one: as wanted here.
    warnings.simplefilter("ignore")
    try:
        import classad2  # noqa: F401
        import htcondor  # noqa: F401
    except ImportError as exc:  # not installed, or no wheel for this platform
        pytest.skip(f"the oracle is HTCondor's own submit code: {exc}", allow_module_level=True)

CORPUS = Path(__file__).parent / "htcondor_corpus"
KNOWN = CORPUS / "KNOWN_DIFFERENCES"
#: Corpus files on which HTCondor's reading is undefined: its submit code reads past
#: the end of a list, and whether that crashes depends on the process's memory layout.
#: dfarm must refuse them with a line; HTCondor's outcome is not compared.
UNDEFINED_IN_HTCONDOR = {
    "refused/function_choice_out_of_range.sub": "$CHOICE with an index past its list",
}
SEED = 1234
#: Where dfarm may keep a job's custom attributes (``+Name``), by the parser's version.
CUSTOM_FIELDS = ("custom_attributes", "attributes", "custom", "job_attributes")


def corpus_files() -> list[Path]:
    return sorted(CORPUS.glob("*/*.sub"))


def dfarm_custom(proc: Any) -> dict[str, str | None]:
    for name in CUSTOM_FIELDS:
        value = getattr(proc, name, None)
        if isinstance(value, dict):
            return {str(k).lower(): canonical(str(v)) for k, v in value.items()}
    return {}


def dfarm_policies(proc: Any) -> dict[str, str]:
    """The policy expressions, stored as job attributes under HTCondor's names."""
    held = {str(k).lower(): v for k, v in getattr(proc, "attributes", {}).items()}
    policies = {}
    for key, attr in POLICIES.items():
        value = held.get(attr.lower())
        text = canonical(None if value is None else str(value))
        if key == "on_exit_remove" and text is not None and "JobMaxRetries" in text:
            continue  # folded with max_retries, as HTCondor's is: compared as an attribute
        if text is not None and text != POLICY_DEFAULTS.get(key, "false"):
            policies[key] = text
    return policies


#: The clauses a container image adds (see control_node.submit_container): HTCondor's
#: own, which its reading leaves out of the user's part as well.
CONTAINER_CLAUSES = frozenset({
    "TARGET.HasContainer", "TARGET.HasDockerURL", "TARGET.HasSIF", "TARGET.HasSandboxImage",
    "TARGET.HasDocker",
})  # fmt: skip


def dfarm_requirements(proc: Any) -> str | None:
    """The user's part of the requirements: less the clauses of a container image."""
    text = proc.requirements
    attrs = {str(k).lower() for k in getattr(proc, "attributes", {})}
    if text is None or not attrs & {"wantcontainer", "wantdocker", "singularityimage"}:
        return canonical(text)
    parts = split_conjuncts(text)
    while parts and parts[-1] in CONTAINER_CLAUSES:
        parts.pop()
    return canonical(" && ".join(parts)) if parts else None


def dfarm_job(proc: Any, folder: str, items: dict[str, str] | None) -> dict[str, Any]:
    """One proc of dfarm's reading in the form of :func:`htcondor_reading.condor_job`."""
    params = {k.lower(): v for k, v in proc.params.items()}
    return {
        "executable": relative(proc.executable, folder, folder),
        "arguments": list(proc.arguments),
        "environment": dict(proc.environment),
        "input": relative(proc.input, folder, folder),
        "output": relative(proc.output, folder, folder),
        "error": relative(proc.error, folder, folder),
        "log": relative(proc.log, folder, folder),
        "initialdir": relative(proc.initialdir, folder, folder),
        "transfer_input_files": [relative(f, folder, folder) for f in proc.transfer_input_files],
        "transfer_output_files": proc.transfer_output_files,
        "request_cpus": proc.request_cpus,
        "request_memory": proc.request_memory,
        "request_disk": proc.request_disk,
        "request_gpus": proc.request_gpus,
        "priority": proc.priority,
        "max_retries": proc.max_retries,
        "notify_user": proc.notify_user,
        "notification": str(proc.notification).lower(),
        "requirements": dfarm_requirements(proc),
        "custom": dfarm_custom(proc),
        "policies": dfarm_policies(proc),
        "item": None if items is None else {k: params.get(k) for k in items},
    }


def dfarm_reading(path: Path) -> dict[str, Any]:
    """dfarm's reading: ``{"refused": ..., "line": ..., "jobs": [...], "crash": ...}``."""
    from control_node.submit import SubmitError, parse_description

    folder = str(path.parent)
    try:
        description = parse_description(path, None, 1, folder, SEED, ENVIRONMENT)
    except SubmitError as exc:
        message = str(exc).replace(f"{folder}{os.sep}", "")  # the same on any checkout
        return {"refused": message, "line": exc.line, "jobs": [], "crash": None}
    except Exception:
        return {"refused": None, "line": None, "jobs": [], "crash": traceback.format_exc()}
    return {"refused": None, "line": None, "jobs": description.procs, "crash": None}


def condor_attributes(theirs: dict[str, Any], ours: dict[str, str | None]) -> dict[str, Any]:
    """HTCondor's value of each custom attribute the file sets and of each attribute
    dfarm stores (a key such as ``rank`` stored as ``Rank``): None where HTCondor's
    job ad lacks one dfarm has."""
    ad = theirs["ad"]
    names = [*theirs["custom"], *(n for n in ours if n not in theirs["custom"])]
    return {n: ad.get(n) for n in names if n in ad or n in ours}


def first_difference(condor: dict[str, Any], procs: list[Any], path: Path) -> str | None:
    """The first difference of the two readings of an accepted file, or None."""
    if len(procs) != len(condor["jobs"]):
        return f"job count: htcondor {len(condor['jobs'])}, dfarm {len(procs)}"
    random = "$RANDOM_" in path.read_text(encoding="utf-8", errors="replace").upper()
    if random:
        return None  # the values are random draws: only the job count is compared
    for n, (theirs, proc) in enumerate(zip(condor["jobs"], procs, strict=True)):
        ours = dfarm_job(proc, str(path.parent), theirs["item"])
        theirs = {**theirs, "custom": condor_attributes(theirs, ours["custom"])}
        for key in COMPARED:
            if theirs[key] != ours[key]:
                return f"job {n} {key}: htcondor {theirs[key]!r}, dfarm {ours[key]!r}"
    return None


def one_line(text: str) -> str:
    """``text`` on one line, the corpus folder written as ``CORPUS`` (so that the list
    does not depend on where the checkout lies)."""
    return re.sub(r"\s+", " ", text.replace(str(CORPUS), "CORPUS")).strip()[:200]


def read_known() -> dict[str, str]:
    known = {}
    for line in KNOWN.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, why = line.partition(" ")
            known[name] = why.strip()
    return known


@dataclass
class Comparison:
    """The two readings of the whole corpus, compared."""

    accepted: int = 0
    identical: int = 0
    refused: int = 0
    refused_with_line: int = 0
    #: file -> its first difference: accepted files read differently, and refused
    #: files that dfarm accepts (or refuses without a line).
    differences: dict[str, str] = field(default_factory=dict)
    crashes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"HTCondor corpus: {self.identical}/{self.accepted} accepted files expanded"
            f" identically, {self.refused_with_line}/{self.refused} refused files refused"
            f" with a line number, {len(self.crashes)} tracebacks"
        )


def compare_corpus() -> Comparison:
    files = corpus_files()
    condor = htcondor_readings([str(p) for p in files])
    result = Comparison()
    for path in files:
        name = path.relative_to(CORPUS).as_posix()
        theirs, ours = condor[str(path)], dfarm_reading(path)
        if ours["crash"]:
            result.crashes.append(f"{name}:\n{ours['crash']}")
        elif theirs["refused"] or name in UNDEFINED_IN_HTCONDOR:
            result.refused += 1
            if ours["refused"] and ours["line"] is not None:
                result.refused_with_line += 1
            else:
                how = "refuses without a line" if ours["refused"] else "accepts"
                result.differences[name] = one_line(
                    f"htcondor refuses ({theirs['refused'] or UNDEFINED_IN_HTCONDOR[name]}),"
                    f" dfarm {how}"
                )
        else:
            result.accepted += 1
            diff = (
                f"dfarm refuses: {ours['refused']}"
                if ours["refused"]
                else first_difference(theirs, ours["jobs"], path)
            )
            if diff is None:
                result.identical += 1
            else:
                result.differences[name] = one_line(diff)
    return result


def test_every_corpus_file_names_its_source() -> None:
    index = (CORPUS / "SOURCES.md").read_text(encoding="utf-8")
    for path in corpus_files():
        name = path.relative_to(CORPUS).as_posix()
        first = path.read_text(encoding="utf-8").lstrip("\ufeff").splitlines()[0]
        assert first.startswith("# source: "), f"{name} starts without a '# source:' line"
        assert f"| {name} |" in index, f"{name} is not in tests/htcondor_corpus/SOURCES.md"


def test_htcondor_corpus_reads_as_htcondor_reads_it() -> None:
    assert len(corpus_files()) >= 200, "the corpus holds at least 200 submit files"
    result = compare_corpus()
    print("\n" + result.summary())
    for name, why in sorted(result.differences.items()):
        print(f"  differs: {name} {why}")
    assert not result.crashes, "dfarm raised on corpus files:\n" + "\n".join(result.crashes)
    known = read_known()
    fixed = sorted(set(known) - set(result.differences))
    broken = sorted(set(result.differences) - set(known))
    update = (
        f"{result.summary()}. Update tests/htcondor_corpus/KNOWN_DIFFERENCES"
        " (.venv/bin/python tests/test_htcondor_oracle.py rewrites it)."
    )
    assert not fixed, f"now read as HTCondor reads them: {fixed}. {update}"
    assert not broken, (
        "read differently from HTCondor: "
        + "; ".join(f"{n}: {result.differences[n]}" for n in broken)
        + f". {update}"
    )


def write_known_differences() -> None:
    """Rewrite KNOWN_DIFFERENCES from the current readings."""
    result = compare_corpus()
    if result.crashes:
        raise SystemExit("dfarm raised:\n" + "\n".join(result.crashes))
    header = (
        "# Files dfarm reads differently from HTCondor 24.12.24: '<file> <first difference>'.\n"
        "# tests/test_htcondor_oracle.py fails when this list is not exact;\n"
        "# rewrite it with: .venv/bin/python tests/test_htcondor_oracle.py\n"
    )
    lines = "".join(f"{n} {why}\n" for n, why in sorted(result.differences.items()))
    KNOWN.write_text(header + lines, encoding="utf-8")
    print(result.summary())
    print(f"{len(result.differences)} differences written to {KNOWN}")


if __name__ == "__main__":
    write_known_differences()
