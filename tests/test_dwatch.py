"""``dwatch`` on a real cluster: counts per batch from pushed updates, and when it exits."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from conftest import COMMAND_TIMEOUT, TestCluster, write

from control_node.cli.dwatch import Screen, progress
from control_node.watch import ExitRule, Watch
from scheduler import protocol as p


def gated(tmp_path: Path, name: str, count: int, code: int = 0, extra: str = "") -> Path:
    """A submit file whose jobs wait for a gate file, then exit with ``code``."""
    gate = tmp_path / "go"
    write(tmp_path / f"{name}.sh", f"#!/bin/sh\nwhile [ ! -e {gate} ]; do sleep 0.05; done\n"
          f"exit {code}\n", True)  # fmt: skip
    write(tmp_path / f"{name}.sub", f"executable = {name}.sh\n{extra}queue {count}\n")
    return gate


def submit(cluster: TestCluster, tmp_path: Path, name: str) -> None:
    out = cluster.run("dsub", f"{name}.sub", cwd=tmp_path)
    assert out.returncode == 0, out.stderr


def dwatch(cluster: TestCluster, *args: str) -> subprocess.Popen[str]:
    """``dwatch`` with its output in a pipe: the plain mode, a line per change."""
    return subprocess.Popen(
        [sys.executable, "-m", "control_node.cli.dwatch", *args],
        env=cluster.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_until(proc: subprocess.Popen[str], seen: Callable[[str], bool]) -> list[str]:
    """Lines of ``proc``'s output up to the first one ``seen`` accepts."""
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if seen(line):
            return lines
    raise AssertionError(f"dwatch ended first: {lines}")


def columns(line: str) -> list[str]:
    return line.split()


def cells(line: str, batch: str) -> list[str]:
    """IDLE, RUN, HOLD, DONE, TOTAL, JOB_IDS and the bar of ``batch``'s line."""
    return line[line.index(batch) + len(batch) :].split()


def test_dwatch_counts_batches_and_exits_when_all_are_done(
    make_cluster: Callable[..., TestCluster], tmp_path: Path
) -> None:
    cluster = make_cluster(workers=2)
    gate = gated(tmp_path, "ok", 3)
    write(tmp_path / "named.sub", "executable = ok.sh\nbatch_name = sweep\nqueue 2\n")
    submit(cluster, tmp_path, "ok")
    submit(cluster, tmp_path, "named")
    proc = dwatch(cluster)  # your jobs in the queue: both clusters
    first = read_until(proc, lambda line: line.startswith("sweep"))
    assert columns(first[0])[:7] == ["BATCH", "IDLE", "RUN", "HOLD", "DONE", "TOTAL", "JOB_IDS"]
    assert [line.split("  ")[0] for line in first[1:]] == ["ID: 1", "sweep"]
    one = cells(first[1], "ID: 1")
    assert int(one[0]) + int(one[1]) == 3 and one[3:6] == ["0", "3", "1.0-2"]  # none done
    assert cells(first[2], "sweep")[3:6] == ["0", "2", "2.0-1"]
    assert proc.poll() is None

    gate.touch()
    out, err = proc.communicate(timeout=COMMAND_TIMEOUT)
    assert proc.returncode == 0, err
    changes = out.splitlines()
    assert changes[-1] == "5 job(s): 5 completed"
    # Then each change: a time, then its batch's line; the last of each is all done.
    last = {name: line for line in changes[3:-1] for name in ("ID: 1", "sweep") if name in line}
    assert cells(last["ID: 1"], "ID: 1")[:6] == ["0", "0", "0", "3", "3", "1.0-2"]
    assert cells(last["sweep"], "sweep")[:6] == ["0", "0", "0", "2", "2", "2.0-1"]
    assert last["sweep"].endswith("100%")


def test_dwatch_waits_for_a_held_job_and_reports_failure(
    make_cluster: Callable[..., TestCluster], tmp_path: Path
) -> None:
    cluster = make_cluster(workers=1)
    gate = gated(tmp_path, "ok", 1)
    gate.touch()
    write(tmp_path / "held.sub", "executable = ok.sh\nhold = true\nqueue\n")
    submit(cluster, tmp_path, "ok")
    submit(cluster, tmp_path, "held")

    # -exit any,held stops at once: a job is held (a failure, so exit code 1).
    quick = subprocess.run(
        [sys.executable, "-m", "control_node.cli.dwatch", "1", "2", "-exit", "any,held"],
        env=cluster.env(), capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
    )  # fmt: skip
    assert quick.returncode == 1, quick.stderr
    assert "1 held" in quick.stdout.splitlines()[-1]

    # By default it waits for every job to be done: the held one too.
    proc = dwatch(cluster, "1", "2")

    def one_done(line: str) -> bool:
        return "ID: 1" in line and line.endswith("100%\n")

    first = read_until(proc, lambda line: line.startswith("ID: 2"))
    if not any(one_done(line + "\n") for line in first):
        read_until(proc, one_done)
    assert proc.poll() is None  # job 1.0 is done, 2.0 still held
    assert cluster.run("drm", "2.0").returncode == 0
    out, err = proc.communicate(timeout=COMMAND_TIMEOUT)
    assert proc.returncode == 1, err  # a removed job is a failure
    assert out.splitlines()[-1] == "2 job(s): 1 completed, 1 removed"


def test_exit_rules_and_progress_bar() -> None:
    assert ExitRule.parse("all,done") == ExitRule("all", "done", None)
    assert ExitRule.parse("any,held,3") == ExitRule("any", "held", 3)
    for bad in ("all", "some,done", "all,finished", "all,done,x"):
        try:
            ExitRule.parse(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad} was accepted")
    bar = progress({"completed": 2, "running": 1, "idle": 1}, 4, width=8)
    assert bar == "[####==..]  50%"
    assert progress({}, 0, width=4) == "[    ]"


def test_a_terminal_is_redrawn_in_place() -> None:
    watch = Watch()
    for proc, state in enumerate(["idle", "running", "completed"]):
        job = p.JobInfo(id=f"7.{proc}", cluster=7, proc=proc, owner="ann", state=state,
                        submit_time=0)  # fmt: skip
        watch.update(job)
    out = io.StringIO()
    screen = Screen(out, live=True, as_json=False)
    screen.first(watch)
    first = out.getvalue()
    assert first.count("\x1b[K\n") == 3  # the header, batch "ID: 7", the summary
    assert "ID: 7" in first and "3 job(s): 1 idle, 1 running, 1 completed" in first
    batch = watch.update(p.JobInfo(id="7.0", cluster=7, proc=0, owner="ann", state="completed",
                                   submit_time=0))  # fmt: skip
    screen.changed(watch, batch)
    screen.flush(watch)
    again = out.getvalue()[len(first) :]
    assert again.startswith("\x1b[3F")  # up over the lines drawn, then drawn anew
    assert "2 completed" in again and batch.done == 2 and batch.total == 3
    assert watch.reached(ExitRule("any", "done")) and not watch.reached(ExitRule())
