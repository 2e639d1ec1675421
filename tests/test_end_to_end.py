"""End-to-end: the real commands against a real scheduler and real workers."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import time
from pathlib import Path

import pytest
from conftest import TestCluster, wait_until, write

from control_node import Client
from scheduler import protocol as p

STATS = """#!/usr/bin/env python3
import csv, statistics, sys
values = [float(row["value"]) for row in csv.DictReader(open(sys.argv[1]))]
print(f"n={len(values)} mean={statistics.mean(values):.2f} max={max(values):.0f}")
"""


def test_job_with_dataset_returns_its_stdout(cluster: TestCluster, tmp_path: Path) -> None:
    write(tmp_path / "stats.py", STATS, executable=True)
    write(tmp_path / "data.csv", "name,value\na,1\nb,2\nc,6\n")
    write(tmp_path / "job.sub", "executable = stats.py\ndata = data.csv\n")
    result = cluster.run("dsub", "--wait", "--per-job", "job.sub", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "1 job(s) submitted to cluster 1." in result.stdout
    assert (tmp_path / "1.0" / "stdout").read_text() == "n=3 mean=3.00 max=6\n"
    assert (tmp_path / "1.0" / "stderr").read_text() == ""  # nothing printed, still there
    status = json.loads((tmp_path / "1.0" / "status.json").read_text())
    assert status["exit_code"] == 0 and status["state"] == "completed"


def test_two_jobs_on_two_workers_overlap(cluster: TestCluster, tmp_path: Path) -> None:
    write(tmp_path / "span.sh", "#!/bin/sh\ndate +%s.%N\nsleep 1\ndate +%s.%N\n", True)
    write(tmp_path / "job.sub", "executable = span.sh\nqueue 2\n")
    result = cluster.run("dsub", "--wait", "--per-job", "--json", "job.sub", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    jobs = json.loads(result.stdout)["jobs"]
    assert {j["worker"] for j in jobs} == {"w1", "w2"}
    spans = [[float(x) for x in (tmp_path / j["id"] / "stdout").read_text().split()] for j in jobs]
    (a0, a1), (b0, b1) = spans
    assert a0 < b1 and b0 < a1, f"runs did not overlap: {spans}"


def test_five_jobs_on_two_slots_all_complete(cluster: TestCluster, tmp_path: Path) -> None:
    gate = tmp_path / "go"
    script = f"#!/bin/sh\nwhile [ ! -e {gate} ]; do sleep 0.05; done\necho proc $1\n"
    write(tmp_path / "job.sh", script, True)
    write(tmp_path / "job.sub", "executable = job.sh\narguments = $(Process)\nqueue 5\n")
    submitted = cluster.run("dsub", "--quiet", "job.sub", cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stderr
    cluster_id = submitted.stdout.strip()

    def states() -> list[str]:
        return sorted(j["state"] for j in json.loads(cluster.run("dq", "--json").stdout))

    # Two slots: two jobs run, three wait in the queue until a slot frees.
    wait_until(lambda: states() == ["idle"] * 3 + ["running"] * 2, what="2 running, 3 idle")
    gate.touch()
    with Client(scheduler=f"127.0.0.1:{cluster.access.port}", token=cluster.token) as client:
        jobs = client.wait([f"{cluster_id}.{i}" for i in range(5)], timeout=60)
    assert [j.state for j in jobs] == ["completed"] * 5
    fetched = cluster.run("dfetch", "--per-job", cluster_id, cwd=tmp_path)
    assert fetched.returncode == 0, fetched.stderr
    for i in range(5):
        assert (tmp_path / f"{cluster_id}.{i}" / "stdout").read_text() == f"proc {i}\n"
    assert json.loads(cluster.run("dq", "--json").stdout) == []


def test_failing_job_returns_stderr_and_exit_code(cluster: TestCluster, tmp_path: Path) -> None:
    write(tmp_path / "fail.sh", "#!/bin/sh\necho 'something went wrong' >&2\nexit 3\n", True)
    write(tmp_path / "job.sub", "executable = fail.sh\nqueue\n")
    result = cluster.run("dsub", "--wait", "--per-job", "job.sub", cwd=tmp_path)
    assert result.returncode == 1
    assert "1.0: exit code 3" in result.stdout
    assert "something went wrong" in result.stdout
    assert (tmp_path / "1.0" / "stderr").read_text() == "something went wrong\n"
    assert json.loads((tmp_path / "1.0" / "status.json").read_text())["exit_code"] == 3


def test_job_killed_by_signal_reports_it(cluster: TestCluster, tmp_path: Path) -> None:
    write(tmp_path / "die.sh", "#!/bin/sh\nkill -9 $$\n", True)
    write(tmp_path / "job.sub", "executable = die.sh\nqueue\n")
    result = cluster.run("dsub", "--wait", "--per-job", "job.sub", cwd=tmp_path)
    assert result.returncode == 1
    assert f"killed by signal {int(signal.SIGKILL)}" in result.stdout


def test_submit_file_paths_like_htcondor(cluster: TestCluster, tmp_path: Path) -> None:
    script = '#!/bin/sh\nread line\necho "got $line"\necho 42 > answer.txt\ntouch empty.txt\n'
    write(tmp_path / "bin" / "job.sh", script, True)
    write(tmp_path / "run" / "in.txt", "hello\n")
    write(
        tmp_path / "job.sub",
        "executable = bin/job.sh\ninitialdir = run\ninput = in.txt\n"
        "output = out.$(Process).txt\nerror = err.$(Process).txt\nlog = job.log\n"
        "transfer_output_files = answer.txt, empty.txt\nqueue\n",
    )
    result = cluster.run("dsub", "--wait", "--per-job", "job.sub", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    run = tmp_path / "run"
    assert (run / "out.0.txt").read_text() == "got hello\n"
    assert (run / "err.0.txt").read_text() == ""  # created even when empty, as HTCondor does
    assert (run / "answer.txt").read_text() == "42\n"
    assert (run / "empty.txt").read_bytes() == b""
    log = (run / "job.log").read_text()
    assert "1.0 submitted" in log and "1.0 terminated: exit code 0" in log


def test_missing_declared_output_holds_the_job(cluster: TestCluster, tmp_path: Path) -> None:
    write(tmp_path / "job.sh", "#!/bin/sh\necho hi\n", True)
    write(tmp_path / "job.sub", "executable = job.sh\ntransfer_output_files = nope.txt\nqueue\n")
    result = cluster.run("dsub", "--wait", "--per-job", "job.sub", cwd=tmp_path)
    assert result.returncode == 1
    assert "held: transfer_output_files: 'nope.txt' was not produced" in result.stdout
    held = json.loads(cluster.run("dq", "--json").stdout)
    assert [j["state"] for j in held] == ["held"]


def test_executable_that_cannot_start_is_held(cluster: TestCluster, tmp_path: Path) -> None:
    write(tmp_path / "notexec.txt", "no shebang, not a binary\n", True)
    write(tmp_path / "job.sub", "executable = notexec.txt\nqueue\n")
    result = cluster.run("dsub", "--wait", "--per-job", "job.sub", cwd=tmp_path)
    assert result.returncode == 1
    assert "held: cannot execute 'notexec.txt'" in result.stdout


def test_bad_submit_file_is_rejected_and_nothing_queued(
    cluster: TestCluster, tmp_path: Path
) -> None:
    write(tmp_path / "job.sh", "#!/bin/sh\n", True)
    write(tmp_path / "bad.sub", "executable = job.sh\n# comment\nargumnets = 1 2\nqueue\n")
    # --strict refuses a misspelt key; without it, the key is a macro, as in HTCondor.
    result = cluster.run("dsub", "--strict", "bad.sub", cwd=tmp_path)
    assert result.returncode == 1
    assert "bad.sub:3:" in result.stderr and "argumnets" in result.stderr
    assert json.loads(cluster.run("dq", "--all", "--json").stdout) == []
    write(tmp_path / "bad.sub", "executable = job.sh\nrequest_cpus = many\nqueue\n")
    result = cluster.run("dsub", "bad.sub", cwd=tmp_path)
    assert (
        result.returncode == 1 and "bad.sub:2: request_cpus = many gives undefined" in result.stderr
    )
    assert json.loads(cluster.run("dq", "--all", "--json").stdout) == []
    write(tmp_path / "typo.sub", "executable = job.sh\nargumnets = 1 2\nqueue\n")
    result = cluster.run("dsub", "typo.sub", cwd=tmp_path)
    assert result.returncode == 0 and "did you mean 'arguments'?" in result.stderr


def test_wrong_token_is_refused(cluster: TestCluster) -> None:
    env = cluster.env(DFARM_TOKEN=cluster.token.rsplit(":", 1)[0] + ":wrong")
    result = cluster.run("dq", env=env)
    assert result.returncode == 1
    assert "authentication failed: wrong user token" in result.stderr
    unknown = cluster.run("dq", env=cluster.env(DFARM_TOKEN="mallory:secret"))
    assert unknown.returncode == 1 and "authentication failed" in unknown.stderr
    assert cluster.run("dq").returncode == 0


def test_wrong_worker_secret_is_refused(cluster: TestCluster, tmp_path: Path) -> None:
    secret = write(tmp_path / "wrong.secret", "not-the-pool-secret\n")
    worker = cluster.add_worker("intruder", secret_file=secret)
    cluster.expected_exits.add("intruder")
    assert worker.wait(timeout=30) == 1
    assert "authentication failed: wrong worker credential" in cluster.log("intruder")
    workers = json.loads(cluster.run("dstat", "--json").stdout)
    assert sorted(w["name"] for w in workers) == ["w1", "w2"]


def test_dstat_and_dq_json_fields(cluster: TestCluster, tmp_path: Path) -> None:
    workers = json.loads(cluster.run("dstat", "--json").stdout)
    assert len(workers) == 2
    for w in workers:
        assert w["state"] == "idle" and w["slots_total"] == 1
        assert w["metrics"]["cores"] >= 1 and w["metrics"]["memory_available_mb"] > 0
    table = cluster.run("dstat").stdout
    assert "RAM_AVAIL" in table and "w1" in table
    write(tmp_path / "job.sh", "#!/bin/sh\nsleep 30\n", True)
    write(tmp_path / "job.sub", "executable = job.sh\nqueue\n")
    assert cluster.run("dsub", "job.sub", cwd=tmp_path).returncode == 0
    running = wait_until(
        lambda: [j for j in json.loads(cluster.run("dq", "--json").stdout) if j["worker"]]
    )
    assert running[0]["state"] == "running" and running[0]["id"] == "1.0"
    assert "1.0" in cluster.run("dq", "-nobatch").stdout


def test_scheduler_survives_garbage_and_keeps_answering(cluster: TestCluster) -> None:
    port = cluster.access.port
    for payload in (
        b"\x00\x00\x00\x05{{{{{",
        struct.pack(">I", 1 << 30),
        b"GET / HTTP/1.0\r\n\r\n",
    ):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(payload)
            sock.settimeout(10)
            try:
                reply = sock.recv(4096)
            except (ConnectionResetError, TimeoutError):
                reply = b""
            assert b"hello" not in reply
    assert cluster.run("dq").returncode == 0


def test_jobs_survive_a_scheduler_kill(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    cluster = make_cluster(workers=0)
    write(tmp_path / "job.sh", "#!/bin/sh\necho done $1\n", True)
    write(tmp_path / "job.sub", "executable = job.sh\narguments = $(Process)\nqueue 3\n")
    assert cluster.run("dsub", "job.sub", cwd=tmp_path).returncode == 0
    cluster.processes["scheduler"].send_signal(signal.SIGKILL)
    cluster.processes["scheduler"].wait()
    cluster.start_scheduler()
    queue = json.loads(cluster.run("dq", "--json").stdout)
    assert [(j["id"], j["state"]) for j in queue] == [(f"1.{i}", "idle") for i in range(3)]
    cluster.add_worker("late")
    result = cluster.run("dsub", "--help")
    assert result.returncode == 0
    with Client(scheduler=f"127.0.0.1:{cluster.access.port}", token=cluster.token) as client:
        jobs = client.wait(["1.0", "1.1", "1.2"], timeout=60)
    assert [j.state for j in jobs] == ["completed"] * 3
    time.sleep(0)


def test_wrong_protocol_version_is_refused_in_words(cluster: TestCluster) -> None:
    from scheduler import protocol as p

    with socket.create_connection(("127.0.0.1", cluster.access.port), timeout=10) as sock:
        hello = p.Hello(role="control", version=99, name="someone", nonce=p.new_nonce())
        sock.sendall(p.encode(hello))
        reply = p.recv_message(sock)
    assert isinstance(reply, p.Error) and reply.code == "version"
    assert "protocol version 99 is not supported" in reply.message


def test_a_compiled_binary_runs(cluster: TestCluster, tmp_path: Path) -> None:
    write(tmp_path / "job.sub", "executable = /bin/echo\narguments = compiled binary\nqueue\n")
    result = cluster.run("dsub", "--wait", "--per-job", "job.sub", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "1.0" / "stdout").read_text() == "compiled binary\n"


def test_worker_reports_gpus_and_advertised_resources(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    cluster = make_cluster(workers=0)
    fake_bin = tmp_path / "bin"
    write(
        fake_bin / "nvidia-smi",
        "#!/bin/sh\ncase $1 in *compute_cap*) echo '0, NVIDIA H100 80GB HBM3, 81559, 9.0';;"
        " *) exit 1;; esac\n",
        True,
    )
    env_path = f"{fake_bin}:{os.environ['PATH']}"
    old = os.environ["PATH"]
    os.environ["PATH"] = env_path  # inherited by the worker process
    try:
        cluster.add_worker("gpu1", "--cpus", "1", "--memory", "1GB")
    finally:
        os.environ["PATH"] = old
    workers = wait_until(lambda: json.loads(cluster.run("dstat", "--json").stdout))
    (worker,) = workers
    assert worker["metrics"]["gpus"] == [{"index": 0, "name": "NVIDIA H100 80GB HBM3",
                                          "memory_mb": 81559, "capability": 9.0}]  # fmt: skip
    assert (worker["cpus_total"], worker["memory_total_mb"], worker["gpus_total"]) == (1, 1024, 1)
    assert "NVIDIA H100" in cluster.run("dstat").stdout
    # HTCondor's GPU attributes reach requirements.
    rule = "requirements = CUDACapability >= 9.0 && CUDAGlobalMemoryMb > 80000 && GPUs == 1"
    write(tmp_path / "gpu.sub", f"executable = /bin/true\nrequest_gpus = 1\n{rule}\nqueue\n")
    dry = cluster.run("dsub", "--dry-run", "gpu.sub", cwd=tmp_path)
    assert "matching workers: gpu1\n" in dry.stdout, dry.stdout + dry.stderr


@pytest.mark.parametrize("route", ["link", "ftp"])
def test_large_files_by_link_or_ftp(make_cluster, tmp_path: Path, route: str) -> None:  # noqa: ANN001
    """Small files travel inline. A worker on the spool's file system links large
    ones with it; one told to (``--always-ftp``), like any worker elsewhere, moves
    them over FTP."""
    from scheduler.protocol import INLINE_LIMIT

    cluster = make_cluster(worker_args=("--always-ftp",) if route == "ftp" else ())
    big = os.urandom(3 * INLINE_LIMIT)
    (tmp_path / "big.bin").write_bytes(big)
    write(tmp_path / "small.txt", "tiny\n")
    script = (
        "#!/bin/sh\ncat big.bin > copy.bin\ncat small.txt > small-copy.txt\n"
        f"head -c {2 * INLINE_LIMIT} big.bin\nstat -c %i big.bin copy.bin > inodes.txt\n"
        f"# {'x' * INLINE_LIMIT}\n"  # a large executable: linked or fetched, then run
    )
    write(tmp_path / "job.sh", script, True)
    write(tmp_path / "job.sub", "executable = job.sh\ntransfer_input_files = big.bin, small.txt\n"
          "queue 2\n")  # fmt: skip
    result = cluster.run("dsub", "--wait", "--per-job", "job.sub", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    spool = cluster.config.spool_dir
    (stored,) = (f for f in (spool / "1" / "input").iterdir() if f.stat().st_size == len(big))
    for proc in range(2):
        out = tmp_path / f"1.{proc}"
        assert (out / "copy.bin").read_bytes() == big
        assert (out / "small-copy.txt").read_text() == "tiny\n"
        assert (out / "stdout").read_bytes() == big[: 2 * INLINE_LIMIT]
        # By link, the job read the spool's own copy of the input, and its output is
        # the spool's; over FTP, it read the worker's cached copy, and the output
        # was copied.
        read, wrote = map(int, (out / "inodes.txt").read_text().split())
        result = spool / "1" / str(proc) / "outputs" / "copy.bin"
        assert (read == stored.stat().st_ino) == (route == "link")
        assert (wrote == result.stat().st_ino) == (route == "link")
        # Large results lie in the spool, the spool owner's alone.
        for name in ("outputs/copy.bin", "stdout"):
            st = (spool / "1" / str(proc) / name).stat()
            assert (st.st_uid, st.st_mode & 0o777) == (spool.stat().st_uid, 0o600)
    # The big inputs were uploaded once, the small one went inline; all are in the spool.
    inputs = list((spool / "1" / "input").iterdir())
    assert len(inputs) == 3
    how = "files move by hard link" if route == "link" else "files move over FTP"
    assert all(how in cluster.log(name) for name in ("w1", "w2"))


def test_queries_with_thousands_of_ids(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    cluster = make_cluster(workers=0)
    write(tmp_path / "job.sh", "#!/bin/sh\n", True)
    write(tmp_path / "job.sub", "executable = job.sh\nqueue 3000\n")
    assert cluster.run("dsub", "job.sub", cwd=tmp_path).returncode == 0
    with Client(scheduler=f"127.0.0.1:{cluster.access.port}", token=cluster.token) as client:
        ids = [f"1.{i}" for i in range(3000)]
        assert [j.id for j in client.jobs(ids)] == ids
        assert len(client.jobs(["1"])) == 3000
        assert client.jobs(["1.5", "1", "1.7"])[5].id == "1.5"


def test_wait_reads_records_longer_than_a_frame_in_pages(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    cluster = make_cluster(workers=0)
    write(tmp_path / "job.sh", "#!/bin/sh\n", True)
    write(tmp_path / "job.sub", "executable = job.sh\nqueue 300\n")
    where = {"scheduler": f"127.0.0.1:{cluster.access.port}", "token": cluster.token}
    with Client(**where) as client:
        sub = client.submit(str(tmp_path / "job.sub"), cwd=str(tmp_path))
        client.remove([str(sub.id)])
        everything = p.encode(p.JobList(jobs=client.jobs([str(sub.id)], states=[])))
    limit = 32 * 1024
    assert len(everything) > limit  # the cluster's records take more than one frame
    with Client(**where, max_frame=limit) as small:
        # Told when the cluster is done, then the records a page at a time.
        done = small.wait([str(sub.id)])
        assert [j.id for j in done] == sub.job_ids
        assert {j.state for j in done} == {"removed"}
        # With a progress display: the records first, then the updates.
        shown: list[int] = []
        again = small.wait([str(sub.id)], on_update=lambda jobs: shown.append(len(jobs)))
        assert [j.id for j in again] == sub.job_ids
        assert shown == [300]


def test_processes_a_job_leaves_behind_are_killed(cluster: TestCluster, tmp_path: Path) -> None:
    import psutil

    write(tmp_path / "job.sh", "#!/bin/sh\nsleep 300 &\necho started $!\n", True)
    write(tmp_path / "job.sub", "executable = job.sh\nqueue\n")
    result = cluster.run("dsub", "--wait", "--per-job", "job.sub", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    pid = int((tmp_path / "1.0" / "stdout").read_text().split()[1])

    def stray_alive() -> bool:
        try:
            proc = psutil.Process(pid)
            return proc.status() != psutil.STATUS_ZOMBIE and proc.name() == "sleep"
        except psutil.NoSuchProcess:
            return False

    wait_until(lambda: not stray_alive(), timeout=10, what="the job's background sleep to die")


def test_cluster_macro_is_the_real_cluster_id(cluster: TestCluster, tmp_path: Path) -> None:
    write(tmp_path / "job.sh", '#!/bin/sh\necho "$1"\n', True)
    write(tmp_path / "plain.sub", "executable = job.sh\nqueue\n")
    assert cluster.run("dsub", "--wait", "plain.sub", cwd=tmp_path).returncode == 0  # cluster 1
    write(tmp_path / "job.sub", "executable = job.sh\narguments = c$(ClusterId)p$(Process)\n"
          "output = out.$(Cluster).$(Process).txt\nerror = err.txt\nqueue 2\n")  # fmt: skip
    result = cluster.run("dsub", "--wait", "--per-job", "job.sub", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "out.2.0.txt").read_text() == "c2p0\n"
    assert (tmp_path / "out.2.1.txt").read_text() == "c2p1\n"
