"""A dozen files of the HTCondor corpus, unchanged, run on a real cluster: each is
submitted with ``dsub`` from (a copy of) its folder, beside its stand-in executables,
and each job ends as the file means, with its stdout where the file names ``output``."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from conftest import TestCluster

from control_node import Client

CORPUS = Path(__file__).parent / "htcondor_corpus"
STAND_IN = "stand-in\n"


@dataclass(frozen=True)
class Run:
    """A corpus file, how many jobs it queues, the state they end in and the output
    files they write (``{c}`` is the cluster id)."""

    file: str
    jobs: int
    state: str = "completed"
    outputs: tuple[str, ...] = ()


RUNS = [
    # queue from an inline list, output named from two queue variables
    Run("pools/chtc_queue_from.sub", 3, outputs=("wi_2020.out", "mn_2021.out", "il_2022.out")),
    # +JobFlavour, output in a sub-folder named from $(ClusterId) and $(ProcId)
    Run("pools/cern_flavour.sub", 1, outputs=("output/hello.{c}.0.out",)),
    # +JobDurationCategory, requests in GB, queue 2
    Run("pools/osg_quickstart.sub", 2, outputs=("job.{c}.0.out", "job.{c}.1.out")),
    # max_retries, periodic_release and on_exit_hold that do not fire on exit 0
    Run("pools/osg_retry.sub", 1),
    # queue from a file of items
    Run("queue/from_file.sub", 3),
    # macro functions
    Run("functions/Fn.sub", 3),
    Run("functions/SUBSTR.sub", 3),
    Run("functions/INT.sub", 3),
    # include : FILE, twice
    Run("syntax/include_two.sub", 2),
    # getenv with a list of names
    Run("keys/getenv_2.sub", 1),
    # hold = true: held at submit
    Run("keys/hold.sub", 1, state="held"),
    # on_exit_hold, with a stand-in that exits 3 so that the policy fires
    Run("manual/man_on_exit_hold.sub", 1, state="held"),
]


def submit(cluster: TestCluster, folder: Path, name: str) -> str:
    out = cluster.run("dsub", "--quiet", name, cwd=folder)
    assert out.returncode == 0, f"{name}: {out.stderr}"
    return out.stdout.strip()


def test_corpus_files_run_as_they_mean(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    cluster = make_cluster(workers=2)
    submitted: list[tuple[Run, Path, str]] = []
    for n, run in enumerate(RUNS):
        folder = tmp_path / f"{n}-{Path(run.file).parent.name}"
        shutil.copytree(CORPUS / Path(run.file).parent, folder)
        if run.file == "manual/man_on_exit_hold.sub":
            (folder / "job.sh").write_text("#!/bin/sh\necho stand-in\nexit 3\n")
        submitted.append((run, folder, submit(cluster, folder, Path(run.file).name)))
    with Client(scheduler=f"127.0.0.1:{cluster.access.port}", token=cluster.token) as me:
        for run, folder, cid in submitted:
            jobs = me.wait([cid], timeout=120)
            assert [j.state for j in jobs] == [run.state] * run.jobs, run.file
            if run.state == "completed":
                assert all(j.exit_code == 0 for j in jobs), run.file
            me.fetch([cid], dest=tmp_path / "fetched")
            for output in run.outputs:
                path = folder / output.format(c=cid)
                assert path.read_text() == STAND_IN, f"{run.file}: {path}"
        [held] = me.jobs([submitted[-1][2]], states=[])
        assert held.hold_reason == "the job exited with a non-zero code"
        assert (held.hold_subcode, held.exit_code) == (42, 3)
