"""A slot's sandbox is reused within a cluster, or for the next cluster of the same
owner and account, only when a job left it as staged."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import TestCluster, write

from scheduler.protocol import InputFile, pack_bytes
from worker_node.sandbox import Sandbox
from worker_node.transfer import InputCache


def cached(cache: InputCache, name: str, data: bytes) -> InputFile:
    sha = hashlib.sha256(data).hexdigest()
    cache.add_inline({sha: pack_bytes(data)})
    return InputFile(name=name, sha256=sha, size=len(data))


def sources(cache: InputCache, *items: InputFile) -> dict[str, tuple[Path, int]]:
    """What the runner stages for these cached inputs."""
    return {item.name: cache.entry(item.sha256) for item in items}


@pytest.fixture
def cache(tmp_path: Path) -> InputCache:
    return InputCache(tmp_path / "cache")


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    (tmp_path / "jobs").mkdir()
    sandbox = Sandbox(tmp_path / "jobs")
    yield sandbox
    sandbox.discard()


def test_clean_sandbox_is_reused_with_empty_output_files(
    sandbox: Sandbox, cache: InputCache
) -> None:
    exe = cached(cache, "job.sh", b"#!/bin/sh\n")
    sandbox.prepare(1, "1.0-0")
    sandbox.stage(sources(cache, exe))
    first = sandbox.directory
    sandbox.stdout.write(b"proc 0\n")
    sandbox.finish(reusable=True)
    sandbox.prepare(1, "1.1-0")
    assert sandbox.directory == first
    assert os.listdir(first) == ["job.sh"]
    assert sandbox.stdout.read() == b"" and os.fstat(sandbox.stdout.fileno()).st_size == 0


def test_inputs_are_exactly_those_of_the_next_job(sandbox: Sandbox, cache: InputCache) -> None:
    exe, a, b = (cached(cache, n, n.encode()) for n in ("job.sh", "a.txt", "b.txt"))
    sandbox.prepare(1, "1.0-0")
    sandbox.stage(sources(cache, exe, a))
    sandbox.finish(reusable=True)
    sandbox.prepare(1, "1.1-0")
    renamed_b = InputFile(name="a.txt", sha256=b.sha256, size=b.size)  # same name, new content
    sandbox.stage(sources(cache, exe, renamed_b))
    assert sorted(os.listdir(sandbox.directory)) == ["a.txt", "job.sh"]
    assert (sandbox.directory / "a.txt").read_bytes() == b"b.txt"
    sandbox.stage(sources(cache, exe))
    assert os.listdir(sandbox.directory) == ["job.sh"]


@pytest.mark.parametrize(
    "mess",
    [
        lambda d: (d / "made.txt").write_text("x"),
        lambda d: (d / ".hidden").mkdir(),
        lambda d: d.chmod(0o777),
        lambda d: (d / "job.sh").unlink(),
        lambda d: ((d / "job.sh").unlink(), (d / "job.sh").write_text("#!/bin/sh\n")),
    ],
    ids=["new file", "new directory", "mode", "input removed", "input replaced"],
)
def test_sandbox_changed_by_a_job_is_not_reused(
    sandbox: Sandbox, cache: InputCache, mess: Callable[[Path], object]
) -> None:
    exe = cached(cache, "job.sh", b"#!/bin/sh\n")
    sandbox.prepare(1, "1.0-0")
    sandbox.stage(sources(cache, exe))
    first = sandbox.directory
    mess(first)
    sandbox.finish(reusable=True)
    assert not first.exists()
    sandbox.prepare(1, "1.1-0")
    assert sandbox.directory != first and os.listdir(sandbox.directory) == []


def test_other_cluster_or_failed_attempt_gets_a_fresh_sandbox(
    sandbox: Sandbox, cache: InputCache
) -> None:
    exe = cached(cache, "job.sh", b"#!/bin/sh\n")
    sandbox.prepare(1, "1.0-0")
    sandbox.stage(sources(cache, exe))
    first = sandbox.directory
    sandbox.stdout.write(b"secret of cluster 1\n")
    out = sandbox.stdout
    sandbox.finish(reusable=True)
    sandbox.prepare(2, "2.0-0")
    assert sandbox.directory != first and not first.exists()
    assert sandbox.stdout is not out and out.closed
    second = sandbox.directory
    sandbox.finish(reusable=False)
    assert not second.exists()


def test_the_next_cluster_of_the_same_owner_reuses_the_sandbox(
    sandbox: Sandbox, cache: InputCache
) -> None:
    exe, a = (cached(cache, n, n.encode()) for n in ("job.sh", "a.txt"))
    sandbox.prepare(1, "1.0-0", owner="ann")
    sandbox.stage(sources(cache, exe, a))
    first = sandbox.directory
    sandbox.stdout.write(b"of cluster 1\n")
    sandbox.finish(reusable=True)
    sandbox.prepare(2, "2.0-0", owner="ann")
    sandbox.stage(sources(cache, exe))
    assert sandbox.directory == first and sandbox.cluster == 2
    assert os.listdir(first) == ["job.sh"]  # cluster 1's other input is gone
    assert sandbox.stdout.read() == b""


@pytest.mark.parametrize("other", [None, "bob"], ids=["owner unknown", "another owner"])
def test_another_owner_gets_a_fresh_sandbox_and_files(
    sandbox: Sandbox, cache: InputCache, other: str | None
) -> None:
    exe = cached(cache, "job.sh", b"#!/bin/sh\n")
    sandbox.prepare(1, "1.0-0", owner="ann")
    sandbox.stage(sources(cache, exe))
    first, out = sandbox.directory, sandbox.stdout
    out.write(b"secret of ann\n")
    sandbox.finish(reusable=True)
    sandbox.prepare(2, "2.0-0", owner=other)
    assert sandbox.directory != first and not first.exists()
    assert out.closed and os.listdir(sandbox.directory) == []


JOB = """#!/bin/sh
ls -A
echo "proc $1"
if [ $(($1 % 2)) -eq 1 ]; then echo "made by $1" > made.txt; fi
"""


def test_jobs_of_one_cluster_in_one_slot_see_only_their_own_files(
    make_cluster: Callable[..., TestCluster], tmp_path: Path
) -> None:
    cluster = make_cluster(workers=1, slots=1)
    write(tmp_path / "job.sh", JOB, executable=True)
    write(tmp_path / "common.txt", "shared\n")
    for i in range(6):
        write(tmp_path / f"in_{i}.txt", f"{i}\n")
    write(
        tmp_path / "job.sub",
        "executable = job.sh\narguments = $(Process)\n"
        "transfer_input_files = common.txt, in_$(Process).txt\nqueue 6\n",
    )
    result = cluster.run("dsub", "--wait", "--per-job", "job.sub", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    for i in range(6):
        job = tmp_path / f"1.{i}"
        expected = "\n".join(sorted(["common.txt", f"in_{i}.txt", "job.sh"]))
        assert (job / "stdout").read_text() == f"{expected}\nproc {i}\n"
        made = job / "made.txt"
        assert (made.read_text() == f"made by {i}\n") if i % 2 else not made.exists()


def test_the_next_cluster_of_the_owner_runs_in_the_kept_sandbox_with_its_own_inputs(
    make_cluster: Callable[..., TestCluster], tmp_path: Path
) -> None:
    cluster = make_cluster(workers=1, slots=1)
    write(tmp_path / "job.sh", "#!/bin/sh\npwd\nls -A\n", executable=True)
    for name in ("a", "b"):
        write(tmp_path / f"{name}.txt", f"{name}\n")
        write(
            tmp_path / f"{name}.sub",
            f"executable = job.sh\ntransfer_input_files = {name}.txt\nqueue\n",
        )
    for name in ("a", "b"):
        result = cluster.run("dsub", "--wait", "--per-job", f"{name}.sub", cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
    first, second = ((tmp_path / f"{c}.0" / "stdout").read_text().split("\n") for c in (1, 2))
    assert first[1:] == ["a.txt", "job.sh", ""] and second[1:] == ["b.txt", "job.sh", ""]
    assert second[0] == first[0]  # the same folder, kept: no folder made for cluster 2
