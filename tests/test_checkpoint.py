"""Self-checkpointing jobs on a real cluster: a job that checkpoints every step
survives its workers' deaths (kill -9) and a drain, resuming where it stopped."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from conftest import TestCluster, wait_until, write

from control_node import Client
from control_node.local_cluster import worker_credential

#: A job that counts to N, one step per run: each run resumes from ``state.json``
#: (its checkpoint), does one step of work, logs it to the shared work log, saves
#: its state and exits 85 to have it checkpointed; it exits 0 at N. On SIGTERM (a
#: drain) it saves its state and exits 85 at once.
COUNTER = """\
import json, os, signal, sys, time
n, worklog, gate = int(sys.argv[1]), sys.argv[2], sys.argv[3]
state = {"count": 0, "starts": []}
if os.path.exists("state.json"):
    with open("state.json") as f:
        state = json.load(f)
state["starts"].append([state["count"], os.environ["DFARM_ATTEMPT"]])

def save():
    with open("state.tmp", "w") as f:
        json.dump(state, f)
    os.replace("state.tmp", "state.json")

def vacate(signum, frame):
    save()
    os._exit(85)

signal.signal(signal.SIGTERM, vacate)
if state["count"] >= n:
    print(json.dumps(state))
    sys.exit(0)
if os.path.exists(gate):  # a pause the test asks for
    open(gate + ".waiting", "w").close()
while os.path.exists(gate):
    time.sleep(0.05)
state["count"] += 1
with open(worklog, "a") as f:
    f.write(f"{os.environ['DFARM_ATTEMPT']} {state['count']}\\n")
save()
sys.exit(85)
"""


def counter_job(tmp_path: Path, n: int, extra: str = "") -> tuple[Path, Path]:
    """The counting job's files; returns its work log and its pause gate."""
    worklog, gate = tmp_path / "work.log", tmp_path / "pause"
    worklog.touch(mode=0o666)
    worklog.chmod(0o666)
    write(tmp_path / "count.py", COUNTER)
    write(
        tmp_path / "job.sub",
        f"executable = count.py\narguments = {n} {worklog} {gate}\n"
        f"checkpoint_exit_code = 85\nlog = job.log\n{extra}queue\n",
    )
    return worklog, gate


def steps(worklog: Path) -> list[tuple[int, int]]:
    """(attempt, count) of every step the job did, lost ones included."""
    text = worklog.read_text()
    return [tuple(map(int, line.split())) for line in text.splitlines()]  # type: ignore[misc]


def kill_machine(cluster: TestCluster, name: str) -> None:
    """kill -9 a worker and every process it started, as if its machine died."""
    worker = psutil.Process(cluster.processes[name].pid)
    tree = worker.children(recursive=True)
    cluster.expected_exits.add(name)
    worker.send_signal(signal.SIGKILL)
    cluster.processes[name].wait()
    for process in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGKILL)


#: The account a worker that is not root runs as in these tests.
NOBODY = 65534


def python_for(uid: int) -> str | None:
    """An interpreter of this one's version that ``uid`` can run (this one's may lie
    in a private folder), or None."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (sys.executable, f"/usr/bin/python{version}"):
        try:
            probe = subprocess.run(
                [candidate, "-c", "import sys; print(sys.version_info[:2])"],
                user=uid, capture_output=True, text=True, check=False, timeout=60,
            )  # fmt: skip
        except OSError:
            continue
        if probe.returncode == 0:
            return candidate
    return None


def start_worker_as(
    cluster: TestCluster, work: Path, name: str, uid: int, python: str, *extra: str
) -> subprocess.Popen[bytes]:
    """A 1-slot worker ``name`` run as ``uid`` (not root) in the work directory
    ``work``, its log ``work/worker.log``; returns once the scheduler knows it."""
    work.mkdir()
    credential = work / f"{name}.credential"  # the scheduler's folder of them is root's own
    shutil.copy(worker_credential(cluster.home, name), credential)
    for path in (work, credential):
        os.chown(path, uid, uid)
    root = Path(__file__).resolve().parents[1]
    site = next(Path(sys.prefix).glob("lib/python*/site-packages"))
    env = {"PATH": os.environ["PATH"], "HOME": str(work), "PYTHONPATH": f"{root}:{site}"}
    with (work / "worker.log").open("wb") as log:
        worker = subprocess.Popen(
            [python, "-m", "worker_node", "--scheduler", f"127.0.0.1:{cluster.access.port}",
             "--credential-file", str(credential), "--name", name, "--slots", "1",
             "--work-dir", str(work), *extra],
            user=uid, group=uid, extra_groups=[], env=env, cwd=work, stdout=log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    with Client(scheduler=f"127.0.0.1:{cluster.access.port}", token=cluster.token) as me:
        wait_until(
            lambda: any(w.name == name for w in me.workers()) or worker.poll() is not None,
            what=f"the worker {name}",
        )
    assert worker.poll() is None, (work / "worker.log").read_text()[-3000:]
    return worker


def kill_tree(process: subprocess.Popen[bytes]) -> None:
    """kill -9 ``process`` and every process it started."""
    tree = psutil.Process(process.pid).children(recursive=True)
    process.kill()
    process.wait()
    for child in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.send_signal(signal.SIGKILL)


def job_info(cluster: TestCluster) -> dict[str, object]:
    jobs = json.loads(cluster.run("dq", "--json").stdout)
    return jobs[0] if jobs else {}


@pytest.mark.parametrize("route", ["link", "ftp"])
def test_a_job_killed_with_its_worker_twice_resumes_from_its_checkpoint(
    make_cluster,  # noqa: ANN001
    tmp_path: Path,
    route: str,
) -> None:
    """Checkpoints linked into the spool its workers share, or moved over FTP."""
    n = 20
    args = ("--always-ftp",) if route == "ftp" else ()
    cluster = make_cluster(workers=1, worker_args=args, scheduler_args=("--worker-timeout", "1"))
    worklog, _ = counter_job(tmp_path, n)
    assert cluster.run("dsub", "job.sub", cwd=tmp_path).returncode == 0
    for worker, later, count in (("w1", "w2", 5), ("w2", "w3", 10)):
        wait_until(lambda count=count: len(steps(worklog)) >= count, what=f"{count} steps")
        kill_machine(cluster, worker)
        cluster.add_worker(later, *args)
    with Client(scheduler=f"127.0.0.1:{cluster.access.port}", token=cluster.token) as client:
        (job,) = client.wait(["1"], timeout=120)
    assert (job.state, job.exit_code, job.worker) == ("completed", 0, "w3")
    assert job.num_starts == 3 and job.checkpoints == n
    assert job.checkpoint_size and job.checkpoint_time and job.wall_lost >= 0
    assert job.resumes == 2
    history = cluster.run("dhistory", "1")
    assert "3 (2 resumed)" in history.stdout, history.stdout
    long = cluster.run("dhistory", "-l", "1").stdout
    assert f"NumCkpts = {n}\n" in long and "checkpoint_size = " in long, long
    assert cluster.run("dfetch", "1", cwd=tmp_path).returncode == 0
    final = json.loads((tmp_path / "1.0" / "stdout").read_text().splitlines()[-1])
    # The count each run started from never went backwards, and it ended at N.
    counts = [count for count, _ in final["starts"]]
    assert counts == sorted(counts) and final["count"] == n
    # Each run of attempts 2 and 3 began where the last stored checkpoint was.
    attempts = [attempt for _, attempt in final["starts"]]
    assert attempts[0] == "1" and attempts[-1] == "3" and "2" in attempts
    # At most one step was lost to each kill (done, not checkpointed: done again).
    done = steps(worklog)
    assert n <= len(done) <= n + 2, done
    log = (tmp_path / "job.log").read_text()
    assert log.count("evicted:") == 2 and log.count("resumed:") == 2, log
    assert "checkpointed:" in log


def test_a_drained_worker_has_its_job_checkpoint_and_resume_elsewhere(
    make_cluster,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    n = 6
    cluster = make_cluster(workers=1, worker_args=("--grace", "600"))
    worklog, gate = counter_job(tmp_path, n, "job_max_vacate_time = 300\n")
    assert cluster.run("dsub", "job.sub", cwd=tmp_path).returncode == 0
    wait_until(lambda: len(steps(worklog)) >= 3, what="3 steps")
    gate.touch()
    waiting = Path(f"{gate}.waiting")
    wait_until(waiting.exists, what="the job to pause")
    cluster.add_worker("w2")
    cluster.wait_for_workers(2)
    home = str(cluster.config.home)
    out = cluster.run("dfarm", "worker", "--drain", "w1", "--home", home)
    assert out.returncode == 0, out.stderr
    # The job, sent SIGTERM, checkpoints at once: w1 needs none of its 600 s of grace.
    assert cluster.processes["w1"].wait(timeout=60) == 0
    at_drain = len(steps(worklog))
    gate.unlink()
    with Client(scheduler=f"127.0.0.1:{cluster.access.port}", token=cluster.token) as client:
        (job,) = client.wait(["1"], timeout=120)
    assert (job.state, job.exit_code, job.worker, job.num_starts) == ("completed", 0, "w2", 2)
    assert cluster.run("dfetch", "1", cwd=tmp_path).returncode == 0
    final = json.loads((tmp_path / "1.0" / "stdout").read_text().splitlines()[-1])
    first_on_w2 = next(count for count, attempt in final["starts"] if attempt == "2")
    assert first_on_w2 == at_drain and final["count"] == n
    assert len(steps(worklog)) == n  # no step done twice
    log = (tmp_path / "job.log").read_text()
    assert "asked for by its worker's drain" in log
    assert "evicted: worker w1 drained: vacated after its checkpoint" in log, log


def test_a_job_whose_checkpoint_is_gone_says_so_and_starts_from_the_beginning(
    make_cluster,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    n = 5
    cluster = make_cluster(workers=1, scheduler_args=("--worker-timeout", "1"))
    worklog, gate = counter_job(tmp_path, n)
    assert cluster.run("dsub", "job.sub", cwd=tmp_path).returncode == 0
    wait_until(lambda: len(steps(worklog)) >= 2, what="2 steps")
    gate.touch()
    wait_until(Path(f"{gate}.waiting").exists, what="the job to pause")
    folder = cluster.config.spool_dir / "1" / "checkpoints" / "0"
    (kept,) = folder.iterdir()  # the latest alone: older ones were removed
    kept.unlink()
    kill_machine(cluster, "w1")
    gate.unlink()
    cluster.add_worker("w2")
    with Client(scheduler=f"127.0.0.1:{cluster.access.port}", token=cluster.token) as client:
        (job,) = client.wait(["1"], timeout=120)
    assert (job.state, job.exit_code, job.worker, job.resumes) == ("completed", 0, "w2", 0)
    assert [count for attempt, count in steps(worklog) if attempt == 2][0] == 1
    assert cluster.run("dfetch", "1", cwd=tmp_path).returncode == 0
    log = (tmp_path / "job.log").read_text()
    assert "checkpoint lost: checkpoint " in log and "it starts from the beginning" in log, log
    assert "resumed:" not in log


@pytest.mark.parametrize(
    ("keys", "why"),
    [
        # The job dies of its kill_sig without a checkpoint: given back at once.
        ("kill_sig = SIGUSR2\n", "evicted: worker w1 shut down"),
        # The job ignores it: killed after job_max_vacate_time, then given back.
        ("kill_sig = SIGWINCH\njob_max_vacate_time = 1\n", "evicted: worker w1 shut down"),
    ],
)
def test_a_job_that_does_not_checkpoint_when_drained_resumes_from_its_last_checkpoint(
    make_cluster,  # noqa: ANN001
    tmp_path: Path,
    keys: str,
    why: str,
) -> None:
    n = 5
    cluster = make_cluster(workers=1, worker_args=("--grace", "600"))
    worklog, gate = counter_job(tmp_path, n, keys)
    assert cluster.run("dsub", "job.sub", cwd=tmp_path).returncode == 0
    wait_until(lambda: len(steps(worklog)) >= 2, what="2 steps")
    gate.touch()
    wait_until(Path(f"{gate}.waiting").exists, what="the job to pause")
    at_drain = len(steps(worklog))
    cluster.add_worker("w2")
    cluster.wait_for_workers(2)
    out = cluster.run("dfarm", "worker", "--drain", "w1", "--home", str(cluster.config.home))
    assert out.returncode == 0, out.stderr
    assert cluster.processes["w1"].wait(timeout=60) == 0
    gate.unlink()
    with Client(scheduler=f"127.0.0.1:{cluster.access.port}", token=cluster.token) as client:
        (job,) = client.wait(["1"], timeout=120)
    assert (job.state, job.exit_code, job.worker, job.resumes) == ("completed", 0, "w2", 1)
    assert [count for attempt, count in steps(worklog) if attempt == 2][0] == at_drain + 1
    assert cluster.run("dfetch", "1", cwd=tmp_path).returncode == 0
    log = (tmp_path / "job.log").read_text()
    assert why in log and "asked for by its worker's drain" not in log, log


@pytest.mark.skipif(os.geteuid() != 0, reason="starts workers as nobody: needs root")
def test_a_worker_that_is_not_root_checkpoints_the_job_and_another_resumes_it(
    make_cluster,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    python = python_for(NOBODY)
    if python is None:
        pytest.skip("no Python of this version that nobody can run")
    n = 6
    cluster = make_cluster(workers=0, scheduler_args=("--worker-timeout", "1"))
    worklog, _ = counter_job(tmp_path, n)
    workers = [start_worker_as(cluster, tmp_path / "w8", "w8", NOBODY, python)]
    try:
        assert cluster.run("dsub", "job.sub", cwd=tmp_path).returncode == 0
        wait_until(lambda: len(steps(worklog)) >= 3, what="3 steps")
        kill_tree(workers[0])
        workers.append(start_worker_as(cluster, tmp_path / "w9", "w9", NOBODY, python))
        with Client(scheduler=f"127.0.0.1:{cluster.access.port}", token=cluster.token) as me:
            (job,) = me.wait(["1"], timeout=120)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.terminate()
                worker.wait(timeout=60)
    logs = "".join((tmp_path / w / "worker.log").read_text()[-2000:] for w in ("w8", "w9"))
    assert (job.state, job.exit_code, job.worker) == ("completed", 0, "w9"), logs
    assert job.checkpoints == n and job.resumes == 1 and job.num_starts == 2
    assert cluster.run("dfetch", "1", cwd=tmp_path).returncode == 0
    final = json.loads((tmp_path / "1.0" / "stdout").read_text().splitlines()[-1])
    counts = [count for count, _ in final["starts"]]
    assert counts == sorted(counts) and final["count"] == n
    assert n <= len(steps(worklog)) <= n + 1  # at most the step the kill cut short again
    assert "resumed:" in (tmp_path / "job.log").read_text()
    assert "Traceback" not in logs
