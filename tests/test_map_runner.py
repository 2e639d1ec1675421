"""The map runner's chunk argument (a file, or the pickle inline in the job's
arguments), its one result file, and the launcher's look for what a warm
interpreter's job left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cloudpickle
import pytest

from control_node.map_runner import CHUNK_ARG, Outcome, inline_chunk, run_files
from control_node.map_submit import INLINE_CHUNK


def _outcomes(folder: Path) -> list[Outcome]:
    outcomes: list[Outcome] = cloudpickle.loads((folder / "result.pkl").read_bytes())
    return outcomes


def test_a_chunk_runs_alike_inline_and_from_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunk = [(0, 3), (1, -4)]
    pickled = cloudpickle.dumps(chunk)
    assert len(pickled) <= INLINE_CHUNK
    arg = inline_chunk(pickled)
    assert arg.startswith(CHUNK_ARG) and not set(arg) & set(" ,\"'$")  # one plain argument
    inline, filed = tmp_path / "inline", tmp_path / "filed"
    inline.mkdir()
    filed.mkdir()
    (filed / "chunk.pkl").write_bytes(pickled)
    monkeypatch.chdir(inline)
    assert run_files(abs, ["function.pkl", arg, "result.pkl"]) == 0
    monkeypatch.chdir(filed)
    assert run_files(abs, ["function.pkl", "chunk.pkl", "result.pkl"]) == 0
    for folder in (inline, filed):
        found = [(o.index, cloudpickle.loads(o.value)) for o in _outcomes(folder)]
        assert found == [(0, 3), (1, 4)]
    assert sorted(os.listdir(inline)) == ["result.pkl"]  # no second file left behind


def test_the_result_file_is_empty_while_the_items_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bytes] = []

    def look(x: int) -> int:
        seen.append((tmp_path / "result.pkl").read_bytes())
        return x

    monkeypatch.chdir(tmp_path)
    run_files(look, ["function.pkl", inline_chunk(cloudpickle.dumps([(0, 1)])), "result.pkl"])
    assert seen == [b""]
    assert [o.index for o in _outcomes(tmp_path)] == [0]


#: Run in a process of its own, whose only children are the ones it starts.
CHILDREN = """
import subprocess, sys
from worker_node.launcher import has_children
seen = [has_children(but=0)]
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
seen += [has_children(but=0), has_children(but=child.pid)]
child.kill()
seen.append(has_children(but=0))  # a zombie not yet reaped is a child still
child.wait()
seen.append(has_children(but=0))
print(seen)
"""


def test_a_launcher_sees_a_child_left_behind_but_not_the_one_it_spares() -> None:
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", CHILDREN], cwd=root, capture_output=True, text=True, check=True
    )
    assert done.stdout.split("\n")[0] == "[False, True, False, True, False]"
