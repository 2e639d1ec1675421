"""The requirement clauses and attributes condor_submit 24 derives from submit keys.

The expected values are what HTCondor 24.12.24's own submit code writes for the same
lines (``htcondor.Submit(text).jobs()``), less the clauses it adds to every job.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from control_node.submit_file import ProcDescription, SubmitFileError, parse_submit_text
from control_node.submit_requirements import cuda_version


def proc(tmp_path: Path, lines: str) -> ProcDescription:
    (tmp_path / "job.sh").write_text("#!/bin/sh\n")
    text = f"executable = job.sh\n{lines}\nqueue\n"
    desc = parse_submit_text(text, filename="job.sub", cluster=1, cwd=str(tmp_path), seed=1)
    return desc.procs[0]


def test_a_custom_resource_request_is_a_clause(tmp_path: Path) -> None:
    p = proc(tmp_path, "request_foo = 2\nrequest_Bar_baz = 1.5")
    assert p.requirements == "(TARGET.Bar_baz >= RequestBar_baz) && (TARGET.foo >= Requestfoo)"
    assert p.attributes == {"Requestfoo": "2", "RequestBar_baz": "1.5"}


def test_the_clauses_follow_the_files_own_requirements(tmp_path: Path) -> None:
    p = proc(tmp_path, "requirements = Memory > 5\nrequest_foo = 2\ncuda_version = 11")
    assert p.requirements == (
        "(Memory > 5) && (TARGET.foo >= Requestfoo)"
        " && CUDAVersion <= TARGET.CUDAMaxSupportedVersion"
    )
    assert p.attributes["CUDAVersion"] == "11000"


@pytest.mark.parametrize(("text", "number"), [("11.2", 11002), ("12", 12000), ("9.10", 9010)])
def test_cuda_version_as_htcondor_writes_it(text: str, number: int) -> None:
    assert cuda_version(text) == number


def test_a_cuda_version_of_another_form_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SubmitFileError, match="job.sub:2: cuda_version must be of the form"):
        proc(tmp_path, "cuda_version = 11.2.1")


def test_gpu_keys_make_require_gpus(tmp_path: Path) -> None:
    p = proc(
        tmp_path,
        "request_gpus = 1\ngpus_minimum_capability = 7.5\ngpus_maximum_capability = 9\n"
        "gpus_minimum_memory = 8G",
    )
    assert p.attributes == {
        "GPUsMinCapability": "7.5",
        "GPUsMaxCapability": "9",
        "GPUsMinMemory": "8192",
        "RequireGPUs": "Capability >= GPUsMinCapability && Capability <= GPUsMaxCapability"
        " && GlobalMemoryMb >= GPUsMinMemory",
    }
    assert p.requirements == "(countMatches(MY.RequireGPUs,TARGET.AvailableGPUs) >= RequestGPUs)"


def test_require_gpus_wins_and_needs_request_gpus(tmp_path: Path) -> None:
    p = proc(
        tmp_path, "request_gpus = 1\nrequire_gpus = Capability >= 8\ngpus_minimum_capability = 7"
    )
    assert p.attributes["RequireGPUs"] == "Capability >= 8"
    p = proc(tmp_path, "require_gpus = Capability >= 8\ngpus_minimum_capability = 7")
    assert p.requirements is None and p.attributes == {}


def test_deferral(tmp_path: Path) -> None:
    p = proc(tmp_path, "deferral_time = 1800000000\ndeferral_window = 60")
    assert p.attributes == {
        "DeferralTime": "1800000000",
        "DeferralWindow": "60",
        "DeferralPrepTime": "300",
        "ScheddInterval": "300",
    }
    assert p.requirements == (
        "TARGET.HasJobDeferral && (((time() + ScheddInterval) >= (DeferralTime -"
        " DeferralPrepTime)) && (time() < (DeferralTime + DeferralWindow)))"
    )


def test_on_exit_remove_with_max_retries_folds_as_in_htcondor(tmp_path: Path) -> None:
    p = proc(
        tmp_path, "max_retries = 3\non_exit_remove = (ExitBySignal == False) && (ExitCode == 0)"
    )
    assert p.max_retries == 3
    assert p.attributes["OnExitRemove"] == (
        "NumJobCompletions > JobMaxRetries || ExitCode is 0 || (ExitBySignal == False)"
        " && (ExitCode == 0)"
    )
    assert proc(tmp_path, "on_exit_remove = ExitCode == 0").attributes == {
        "OnExitRemove": "ExitCode == 0"
    }


@pytest.mark.parametrize(
    ("lines", "retries", "on_exit_remove"),
    [
        (
            "retry_until = 3",
            2,
            "NumJobCompletions > JobMaxRetries || ExitCode is 0 || ExitCode is 3",
        ),
        (
            "max_retries = 5\nsuccess_exit_code = 2\nretry_until = ExitCode == 7",
            5,
            "NumJobCompletions > JobMaxRetries || ExitCode is JobSuccessExitCode || ExitCode == 7",
        ),
        (
            "retry_until = ExitCode == 7\nmax_retries = 1\non_exit_remove = ExitCode == 9",
            1,
            "NumJobCompletions > JobMaxRetries || ExitCode is 0 || ExitCode == 7 || ExitCode == 9",
        ),
    ],
)
def test_retries_fold_into_on_exit_remove(
    tmp_path: Path, lines: str, retries: int, on_exit_remove: str
) -> None:
    p = proc(tmp_path, lines)
    assert p.max_retries == retries
    assert p.attributes["OnExitRemove"] == on_exit_remove


def test_keys_that_derive_nothing_alone(tmp_path: Path) -> None:
    p = proc(tmp_path, "max_retries = 3\ngpus_minimum_capability = 7.5")
    assert (p.max_retries, p.attributes, p.requirements) == (3, {}, None)
