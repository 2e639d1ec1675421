"""Matchmaking with real processes: workers advertise resources (``--cpus``,
``--memory``, ``--gpus``), jobs ask with ``request_*`` and ``requirements``, and a
job no worker could ever run is reported at submit and by ``dq -analyze``."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import TestCluster, wait_until, write

from control_node import Client
from worker_node import container_runtimes

SPAN = "#!/bin/sh\necho $(date +%s.%N) ${CUDA_VISIBLE_DEVICES-unset}\n"


def two_workers(make_cluster) -> TestCluster:  # noqa: ANN001
    """w1: 2 cpus, 1 GB, no GPU; w2: 1 cpu, 4 GB, one GPU."""
    cluster = make_cluster(workers=0)
    cluster.add_worker("w1", "--cpus", "2", "--memory", "1GB", "--gpus", "0", slots=2)
    cluster.add_worker("w2", "--cpus", "1", "--memory", "4GB", "--gpus", "1", slots=1)
    wait_until(lambda: cluster.log("scheduler").count("registered from") >= 2, what="2 workers")
    return cluster


def client(cluster: TestCluster) -> Client:
    return Client(scheduler=f"127.0.0.1:{cluster.access.port}", token=cluster.token)


def submit(cluster: TestCluster, where: Path, text: str) -> str:
    write(where / "job.sub", text)
    out = cluster.run("dsub", "--quiet", "job.sub", cwd=where)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_two_cpu_job_waits_for_two_free_cores(make_cluster, tmp_path: Path) -> None:
    cluster = two_workers(make_cluster)
    gate = tmp_path / "go"
    write(tmp_path / "wait.sh", f"#!/bin/sh\nwhile [ ! -e {gate} ]; do sleep 0.05; done\n", True)
    small = submit(cluster, tmp_path, "executable = wait.sh\nqueue 3\n")
    with client(cluster) as me:
        wait_until(lambda: all(j.state == "running" for j in me.jobs([small])), what="3 running")
        assert sorted(j.worker for j in me.jobs([small])) == ["w1", "w1", "w2"]
        write(tmp_path / "span.sh", SPAN, True)
        big = submit(cluster, tmp_path, "executable = span.sh\nrequest_cpus = 2\nqueue\n")
        [analysis] = me.analyze([big])
        assert analysis.state == "idle" and analysis.reasons == []
        assert (analysis.workers_matching, analysis.workers_free) == (1, 0)
        assert "1 of 2 connected worker(s) could run it" in analysis.summary
        gate.touch()
        [done] = me.wait([f"{big}.0"], timeout=60)
        assert done.state == "completed" and done.worker == "w1"
        before = [j for j in me.jobs([small], states=[]) if j.worker == "w1"]
        assert all(j.end_time is not None and j.end_time <= done.start_time for j in before)


def test_gpus_requirements_and_impossible_jobs(make_cluster, tmp_path: Path) -> None:
    cluster = two_workers(make_cluster)
    write(tmp_path / "span.sh", SPAN, True)
    with client(cluster) as me:
        # A GPU job goes to the worker with a GPU and sees only the GPU reserved for it.
        gpu = submit(cluster, tmp_path, "executable = span.sh\nrequest_gpus = 1\nqueue\n")
        [job] = me.wait([f"{gpu}.0"], timeout=60)
        assert job.worker == "w2"
        # requirements select the worker, whatever else is free.
        rule = 'requirements = TotalMemory >= 2048 && OpSys == "linux"\n'
        picky = submit(cluster, tmp_path, f"executable = span.sh\n{rule}queue 2\n")
        named = submit(
            cluster, tmp_path, 'executable = span.sh\nrequirements = Name == "W1"\nqueue\n'
        )
        jobs = me.wait([picky, named], timeout=60)
        assert [j.worker for j in jobs] == ["w2", "w2", "w1"]
    fetched = cluster.run("dfetch", "--per-job", gpu, picky, named, cwd=tmp_path)
    assert fetched.returncode == 0, fetched.stderr
    assert (tmp_path / f"{gpu}.0" / "stdout").read_text().split()[1] == "0"
    # Jobs without GPUs on a GPU worker see none.
    assert (tmp_path / f"{picky}.0" / "stdout").read_text().split()[1:] == []
    assert (tmp_path / f"{named}.0" / "stdout").read_text().split()[1] == "unset"

    # A job no worker could ever run: told at submit, idle, and explained by dq -analyze.
    write(tmp_path / "huge.sub", "executable = span.sh\nrequest_memory = 64GB\nqueue\n")
    out = cluster.run("dsub", "huge.sub", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "no worker has 64 GB of memory; largest is 4 GB" in out.stderr
    huge = out.stdout.split()[-1].rstrip(".")
    text = cluster.run("dq", "-analyze", huge)
    assert text.returncode == 0, text.stderr
    assert "cannot run on any connected worker: no worker has 64 GB of memory" in text.stdout
    [analysis] = json.loads(cluster.run("dq", "-analyze", f"{huge}.0", "--json").stdout)
    assert analysis["reasons"] == ["no worker has 64 GB of memory; largest is 4 GB"]
    assert analysis["state"] == "idle" and analysis["workers_matching"] == 0
    write(
        tmp_path / "gpus.sub", "executable = span.sh\nrequest_gpus = 2\nrequest_cpus = 4\nqueue\n"
    )
    out = cluster.run("dsub", "gpus.sub", cwd=tmp_path)
    assert "no worker has 4 cpus; largest has 2; no worker has 2 GPUs; largest has 1" in out.stderr
    write(tmp_path / "bad.sub", "executable = span.sh\nrequirements = Memory >< 2\nqueue\n")
    bad = cluster.run("dsub", "bad.sub", cwd=tmp_path)
    assert bad.returncode == 1
    assert "bad.sub:2: requirements: column 9: unexpected '<'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_standard_and_administrator_machine_attributes(make_cluster, tmp_path: Path) -> None:
    cluster = make_cluster(workers=0)
    cluster.add_worker("w1", "--attributes", "HasCVMFS=true", "--attributes", 'Site="lab"')
    cluster.add_worker("w2")
    wait_until(lambda: cluster.log("scheduler").count("registered from") >= 2, what="2 workers")
    write(tmp_path / "span.sh", SPAN, True)
    # HasDocker: a docker whose daemon answers, not only its program on the PATH.
    docker = "true" if container_runtimes.detect(["docker"]) else "false"
    rule = (
        f"requirements = OpSysAndVer =!= undefined && HasDocker =?= {docker}"
        ' && TARGET.HasCVMFS && TARGET.Site == "LAB" && member(Arch, {"X86_64", "aarch64"})'
        " && ifThenElse(GPUs > 0, CUDACapability >= 7.0, isUndefined(CUDACapability))\n"
    )
    write(tmp_path / "job.sub", f"executable = span.sh\n{rule}queue 2\n")
    dry = cluster.run("dsub", "--dry-run", "job.sub", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "matching workers: w1\n" in dry.stdout
    cluster_id = submit(cluster, tmp_path, f"executable = span.sh\n{rule}queue 2\n")
    with client(cluster) as me:
        jobs = me.wait([cluster_id], timeout=60)
        assert [(j.state, j.worker) for j in jobs] == [("completed", "w1")] * 2
        # No worker advertises Site "elsewhere": the job waits, and says why.
        other = submit(
            cluster,
            tmp_path,
            'executable = span.sh\nrequirements = TARGET.Site == "elsewhere"\nqueue\n',
        )
        [analysis] = me.analyze([other])
        assert analysis.reasons == [
            'no worker satisfies the requirements (TARGET.Site == "elsewhere")'
        ]
    write(
        tmp_path / "typo.sub",
        "executable = span.sh\nrequirements = OpSysAndVr =!= undefined\nqueue\n",
    )
    # As in HTCondor, an unknown name is UNDEFINED: a warning, an error with --strict.
    typo = cluster.run("dsub", "--strict", "typo.sub", cwd=tmp_path)
    assert typo.returncode == 1
    assert (
        "typo.sub:2: requirements names 'OpSysAndVr', neither a standard machine attribute"
        " nor a job attribute" in typo.stderr
    )
    assert "did you mean 'opsysandver'?" in typo.stderr
    typo = cluster.run("dsub", "--dry-run", "typo.sub", cwd=tmp_path)
    assert typo.returncode == 0 and "requirements names 'OpSysAndVr'" in typo.stdout + typo.stderr


DRY_KEYS = [
    "proc", "executable", "arguments", "input", "output", "error", "log", "initialdir",
    "environment", "transfer_input_files", "transfer_output_files", "request_cpus",
    "request_memory", "request_disk", "request_gpus", "requirements", "notify_user",
    "notification", "priority", "max_retries", "hold", "attributes",
]  # fmt: skip


def test_dry_run_expands_without_queueing(make_cluster, tmp_path: Path) -> None:
    cluster = two_workers(make_cluster)
    write(tmp_path / "span.sh", SPAN, True)
    write(tmp_path / "a.txt", "a")
    write(tmp_path / "in.txt", "in")
    write(
        tmp_path / "job.sub",
        "executable = span.sh\narguments = \"-n $(Process) 'two words'\"\ninput = in.txt\n"
        "output = out.$(Process)\nerror = err.$(Process)\nlog = job.log\n"
        "transfer_input_files = a.txt\ntransfer_output_files = r.txt\n"
        'environment = "A=1 B=two"\nrequest_cpus = 2\nrequest_memory = 512M\n'
        "request_disk = 1GB\nrequirements = Cpus >= 2\nnotify_user = me@example.org\n"
        "notification = Error\npriority = 3\nmax_retries = 2\nqueue 2\n",
    )
    out = cluster.run("dsub", "--dry-run", "--json", "job.sub", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    jobs = json.loads(out.stdout)
    assert [list(j) for j in jobs] == [DRY_KEYS, DRY_KEYS]
    one = jobs[1]
    assert one["proc"] == 1 and one["executable"] == str(tmp_path / "span.sh")
    assert one["arguments"] == ["-n", "1", "two words"]
    assert one["input"] == str(tmp_path / "in.txt")
    assert (one["output"], one["error"], one["log"]) == tuple(
        str(tmp_path / n) for n in ("out.1", "err.1", "job.log")
    )
    assert one["initialdir"] == str(tmp_path) and one["environment"] == {"A": "1", "B": "two"}
    assert one["transfer_input_files"] == [str(tmp_path / "a.txt")]
    assert one["transfer_output_files"] == ["r.txt"]
    assert (one["request_cpus"], one["request_memory"], one["request_disk"]) == (2, 512, 1048576)
    assert (one["request_gpus"], one["requirements"]) == (0, "Cpus >= 2")
    assert (one["notify_user"], one["notification"]) == ("me@example.org", "Error")
    assert (one["priority"], one["max_retries"]) == (3, 2)
    text = cluster.run("dsub", "--dry-run", "job.sub", cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert "job 1: " in text.stdout and "matching workers: w1\n" in text.stdout
    assert "2 job(s) would be submitted; nothing was queued." in text.stdout
    assert json.loads(cluster.run("dq", "--json").stdout) == []
    write(
        tmp_path / "huge.sub", "executable = span.sh\nrequest_gpus = 1\nrequest_cpus = 2\nqueue\n"
    )
    text = cluster.run("dsub", "--dry-run", "huge.sub", cwd=tmp_path)
    assert "matching workers: none: no single worker has everything" in text.stdout


def test_custom_job_attributes_in_requirements(make_cluster, tmp_path: Path) -> None:
    """``+Flavour`` is in the job's ad: ``MY.Flavour == "long"`` matches, and
    ``MY.Flavour == "short"`` is false on every worker, so the job stays idle and never
    matches (condor_submit accepts it; HTCondor's negotiator leaves it idle likewise)."""
    cluster = two_workers(make_cluster)
    write(tmp_path / "span.sh", SPAN, True)
    head = 'executable = span.sh\n+Flavour = "long"\nMY.Length = 2 * 3\n'
    long_rule = 'requirements = MY.Flavour == "long" && Cpus >= 1 && MY.Length == 6\n'
    write(tmp_path / "long.sub", f"{head}{long_rule}queue\n")
    dry = cluster.run("dsub", "--dry-run", "long.sub", cwd=tmp_path)
    assert dry.returncode == 0 and "matching workers: w1, w2\n" in dry.stdout, dry.stdout
    long_job = submit(cluster, tmp_path, f"{head}{long_rule}queue\n")
    short_rule = 'requirements = MY.Flavour == "short" && Cpus >= 1\n'
    write(tmp_path / "short.sub", f"{head}{short_rule}queue\n")
    dry = cluster.run("dsub", "--dry-run", "short.sub", cwd=tmp_path)
    assert "no worker satisfies the requirements" in dry.stdout + dry.stderr
    short_job = submit(cluster, tmp_path, f"{head}{short_rule}queue\n")
    with client(cluster) as me:
        [done] = me.wait([long_job], timeout=60)
        assert done.state == "completed" and done.worker in ("w1", "w2")
        [analysis] = me.analyze([short_job])
        assert analysis.state == "idle"
        assert analysis.reasons == [
            'no worker satisfies the requirements (MY.Flavour == "short" && Cpus >= 1)'
        ]
    # A bare job attribute is the job's own, as in HTCondor.
    bare_job = submit(cluster, tmp_path, f'{head}requirements = Flavour == "long"\nqueue\n')
    with client(cluster) as me:
        [done] = me.wait([bare_job], timeout=60)
        assert done.state == "completed", done


def test_rank_sends_jobs_to_the_preferred_worker(make_cluster, tmp_path: Path) -> None:
    """``rank`` orders the workers that could run a job now: the highest wins while
    it has room, whichever worker the scheduler would have filled first."""
    cluster = make_cluster(workers=0)
    cluster.add_worker("w1", "--attributes", "Speed=1", slots=2)
    cluster.add_worker("w2", "--attributes", "Speed=10", slots=2)
    wait_until(lambda: cluster.log("scheduler").count("registered from") >= 2, what="2 workers")
    with client(cluster) as me:
        for rank, first, other in (("TARGET.Speed", "w2", "w1"), ("-TARGET.Speed", "w1", "w2")):
            gate = tmp_path / f"go{first}"
            write(
                tmp_path / "wait.sh",
                f"#!/bin/sh\nwhile [ ! -e {gate} ]; do sleep 0.05; done\n",
                True,
            )
            text = f"executable = wait.sh\nrank = {rank}\nqueue 3\n"
            write(tmp_path / "ranked.sub", text)
            dry = cluster.run("dsub", "--dry-run", "ranked.sub", cwd=tmp_path)
            assert f"matching workers: {first}, {other}\n" in dry.stdout, dry.stdout
            jobs = submit(cluster, tmp_path, text)
            wait_until(
                lambda ids=jobs: all(j.state == "running" for j in me.jobs([ids])), what="run"
            )
            assert [j.worker for j in me.jobs([jobs])] == [first, first, other], rank
            gate.touch()
            assert all(j.state == "completed" for j in me.wait([jobs], timeout=60))
