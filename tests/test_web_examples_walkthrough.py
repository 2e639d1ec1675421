"""Following the README in ``submit_examples/`` leaves nothing that ``git status``
sees: the examples' results go to git-ignored places."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from conftest import TestCluster

ROOT = Path(__file__).resolve().parent.parent


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_readme_walkthrough_leaves_no_untracked_files(
    cluster: TestCluster, tmp_path: Path
) -> None:
    # A repository of the tracked examples (their .gitignore included), as a clone has.
    repo = tmp_path / "repo"
    for name in git("ls-files", "submit_examples", cwd=ROOT).split():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, repo / name)
    git("init", "-q", cwd=repo)
    git("add", "-A", cwd=repo)
    git("-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "x", cwd=repo)
    here = repo / "submit_examples"
    for step in (["dsub", "--wait", "hello.sub"], ["dsub", "--wait", "pi.sub"],
                 ["dsub", "--quiet", "grid.sub"], ["dwait", "3"],
                 ["dresults", "3", "--summary", "--plot", "grid.png"]):  # fmt: skip
        done = cluster.run(*step, cwd=here)
        assert done.returncode == 0, (step, done.stderr)
    # Quiet, successful jobs leave a line in their cluster's results file, no folder.
    folders = sorted(p.name for p in here.iterdir() if p.is_dir())
    assert folders == [], folders
    files = sorted(p.name for p in here.glob("*.results.jsonl"))
    assert files == ["1.results.jsonl", "2.results.jsonl", "3.results.jsonl"], files
    assert len((here / "3.results.jsonl").read_text().splitlines()) == 12
    assert (here / "pi-digits.txt").exists() and (here / "grid.png").exists()
    assert git("status", "--porcelain", "--untracked-files=all", cwd=repo) == ""
