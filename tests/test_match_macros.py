"""$$(NAME): worker attributes substituted when a job is matched, end to end and unit."""

from __future__ import annotations

import json
import platform
import socket
from pathlib import Path

from conftest import TestCluster, write

from scheduler.dispatch import Slots
from scheduler.matching.macros import match_spec
from scheduler.protocol import JobSpec, WorkerMetrics


def test_worker_attributes_reach_arguments_and_environment(
    cluster: TestCluster, tmp_path: Path
) -> None:
    write(tmp_path / "show.sh", '#!/bin/sh\necho "$@" "$HOST_OF_JOB"\n', executable=True)
    write(
        tmp_path / "job.sub",
        "executable = show.sh\narguments = $$(Name) $$(Cpus) $$(OpSys) $$(Arch) $$(gpus:none)\n"
        'environment = "HOST_OF_JOB=$$(Machine)"\nrequest_cpus = 1\nqueue 2\n',
    )
    done = cluster.run("dsub", "--wait", "--per-job", "--json", "job.sub", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    arch = {"x86_64": "X86_64", "aarch64": "aarch64"}.get(platform.machine(), platform.machine())
    for job in json.loads(done.stdout)["jobs"]:
        words = (tmp_path / job["id"] / "stdout").read_text().split()
        assert words == [job["worker"], "1", "LINUX", arch, "0", socket.gethostname()]
        assert job["arguments"][0] == "$$(Name)"  # the job keeps what was submitted


def test_match_spec_defaults_and_untouched_specs() -> None:
    slots = Slots(worker_id=3, name="w3", slots=2, cpus=8, memory_mb=4096, gpus=0,
                  disk_free_mb=10)  # fmt: skip
    metrics = WorkerMetrics(
        cores=8, threads=8, memory_total_mb=4096, memory_available_mb=4000, disk_total_mb=20,
        disk_free_mb=10, load_avg=[0.0, 0.0, 0.0], os="Linux", arch="x86_64", hostname="h",
    )  # fmt: skip
    plain = JobSpec(executable="x", arguments=["a"])
    assert match_spec(plain, slots, metrics) is plain
    spec = JobSpec(
        executable="x",
        arguments=[
            "$$(TotalCpus)/$$(totalmemory)",
            "$$(Memory)",
            "$$(OpSys:unix)",
            "$$(DOLLARDOLLAR)(Name)",
        ],  # fmt: skip
        environment={"D": "$$(Disk)", "N": "$$(Name:x)"},
        request_memory=512,
    )
    matched = match_spec(spec, slots, metrics)
    assert matched.arguments == ["8/4096", "512", "LINUX", "$$(Name)"]
    assert matched.environment == {"D": "10240", "N": "w3"}
    assert match_spec(spec, slots, None).arguments[2] == "unix"


def test_expressions_are_evaluated_against_the_matched_worker() -> None:
    ad = {"memory": 4096, "name": "w3", "site": "lab"}
    slots = Slots(worker_id=3, name="w3", slots=2, cpus=8, memory_mb=4096, gpus=0,
                  disk_free_mb=10, attributes=ad)  # fmt: skip
    spec = JobSpec(
        executable="x",
        arguments=["--memory", "$$([TARGET.Memory", "*", "0.9])", "$$([int(Memory * 0.9)])",
                   '$$([strcat(TARGET.Site, "-", RequestCpus)])', "$$([TARGET.Missing])"],
        environment={"HALF": "$$([TARGET.Memory / 2])$$(Name)",
                     "Q": '$$([ifThenElse(true, "a)", 1)])'},
        request_cpus=2,
    )  # fmt: skip
    matched = match_spec(spec, slots, None)
    assert matched.arguments == [
        "--memory", "3.686400000000000E+03", "3686", "lab-2", "undefined",
    ]  # fmt: skip
    assert matched.environment == {"HALF": "2048w3", "Q": "a)"}


def test_an_expression_reaches_the_job(cluster: TestCluster, tmp_path: Path) -> None:
    write(tmp_path / "show.sh", '#!/bin/sh\necho "$@"\n', executable=True)
    write(
        tmp_path / "job.sub",
        "executable = show.sh\narguments = $$([TARGET.Cpus * 10]) $$([toUpper(TARGET.Name)])\n"
        "queue\n",
    )
    done = cluster.run("dsub", "--wait", "--per-job", "--json", "job.sub", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    [job] = json.loads(done.stdout)["jobs"]
    words = (tmp_path / job["id"] / "stdout").read_text().split()
    assert words[1] == job["worker"].upper() and int(words[0]) % 10 == 0, words
