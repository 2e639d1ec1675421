"""dfarm from a clone that other accounts cannot reach (under ``/root``, or any 0700
folder): a root worker, whose jobs run as other accounts, still runs ``Client.map``
jobs and starts them from its launchers (the fast path), and says so in ``dstat``;
``make demo`` works there as root, and from an ordinary user's home."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from test_demo import assert_twin_primes_found

from control_node.local_cluster import LocalCluster
from worker_node import job_python as job_python_module

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("control_node", "worker_node", "scheduler", "submit_examples")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root, as CI runs the suite")


def _link_tree(source: Path, target: Path, skipped: tuple[str, ...] = ()) -> None:
    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    ignore = shutil.ignore_patterns("__pycache__", *skipped)
    shutil.copytree(source, target, symlinks=True, ignore=ignore, copy_function=link)


def make_clone(dest: Path, python: str) -> Path:
    """A clone of this repository at ``dest`` with a virtualenv made from ``python``
    and this one's packages (hard-linked, so it costs no download), as ``make venv``
    would leave it; its ``.venv/bin``."""
    dest.mkdir(parents=True)
    for name in PACKAGES:
        _link_tree(ROOT / name, dest / name, ("*.out", "*.err", "*.log"))
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")
    venv = dest / ".venv"
    subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    site.rmdir()
    ours = Path(sysconfig.get_path("purelib"))
    _link_tree(ours, site, ("__editable__*", "dfarm-*.dist-info"))
    (site / "dfarm.pth").write_text(f"{dest}\n")
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for name, target in scripts.items():
        module, function = target.split(":")
        script = venv / "bin" / name
        script.write_text(
            f"#!{venv}/bin/python\nimport sys\nfrom {module} import {function}\n"
            f"sys.exit({function}())\n"
        )
        script.chmod(0o755)
    return venv / "bin"


def _environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DFARM_", "PYTHON", "VIRT"))}
    env.update(extra)
    return env


@pytest.fixture
def private_clone(tmp_path: Path) -> Path:
    """A clone inside a 0700 folder, its venv from this interpreter's base Python."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    base = getattr(sys, "_base_executable", sys.executable)
    return make_clone(private / "dfarm", base)


def _up(bin_dir: Path, home: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [bin_dir / "dfarm", "up", "--workers", "1", "--slots", "1", "--home", home, *extra],
        env=_environment(DFARM_HOME=str(home)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@pytest.fixture
def cluster_of(tmp_path: Path) -> Iterator:
    started: list[subprocess.Popen[bytes]] = []

    def start(bin_dir: Path, *extra: str) -> tuple[Path, list[dict]]:
        home = tmp_path / "home"
        up = _up(bin_dir, home, *extra)
        started.append(up)
        assert up.stdout is not None
        line = up.stdout.readline().decode()  # "dfarm is up" once the worker registered
        assert "dfarm is up" in line, line + up.stdout.read().decode()
        dstat = subprocess.run(
            [bin_dir / "dstat", "--json"],
            env=_environment(DFARM_HOME=str(home)),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return home, json.loads(dstat.stdout)

    yield start
    for up in started:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGTERM)
        up.wait(timeout=60)
        if up.stdout is not None:
            up.stdout.close()


MAP_SCRIPT = """
import os
from control_node import Client
with Client() as client:
    print(client.map(lambda _: (os.getuid(), __import__("cloudpickle").__name__), [0], timeout=120))
"""


def test_a_root_worker_with_its_python_in_a_private_folder_uses_its_launchers(
    private_clone: Path, cluster_of
) -> None:
    home, workers = cluster_of(private_clone)
    assert workers[0]["metrics"]["job_start"] == "launchers"
    assert "slow way" not in (home / "logs" / f"{workers[0]['name']}.log").read_text()
    # A map job runs with the private clone's packages, as an account other than root.
    result = subprocess.run(
        [private_clone / "python", "-c", MAP_SCRIPT],
        env=_environment(DFARM_HOME=str(home)),
        capture_output=True,
        text=True,
        timeout=180,
        cwd=private_clone.parent.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{{0: ({pwd.getpwnam('nobody').pw_uid}, 'cloudpickle')}}" in result.stdout


def test_a_root_worker_that_cannot_start_launchers_says_so(tmp_path: Path) -> None:
    hidden = tmp_path / "hidden"
    hidden.mkdir(mode=0o700)
    (hidden / "python").symlink_to(sys.executable)
    cluster = LocalCluster(tmp_path / "home", workers=0, slots=1)
    try:
        cluster.start()
        cluster.add_worker("w1", "--job-python", str(hidden / "python"))
        cluster.wait_for_workers(1)
        dstat = subprocess.run(
            [Path(sys.executable).parent / "dstat", "--json"],
            env=_environment(DFARM_HOME=str(cluster.home)),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        state = json.loads(dstat.stdout)[0]["metrics"]["job_start"]
        assert state.startswith("slow: ") and "python" in state, state
        table = subprocess.run(
            [Path(sys.executable).parent / "dstat"],
            env=_environment(DFARM_HOME=str(cluster.home)),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.splitlines()
        assert table[0].split()[-1] == "JOB_START" and table[1].split()[-1] == "slow", table
        log = (cluster.logs / "w1.log").read_text()
        assert "jobs start the slow way" in log and str(hidden / "python") in log
    finally:
        cluster.stop()


@pytest.mark.slow
def test_demo_runs_from_a_clone_in_a_private_folder_as_root(
    private_clone: Path, tmp_path: Path
) -> None:
    _run_demo(private_clone.parent.parent, None, tmp_path / "out")


@pytest.mark.slow
def test_demo_runs_from_an_ordinary_users_home(tmp_path: Path) -> None:
    name = f"dfarm{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True)
    user = pwd.getpwnam(name)
    try:
        home = Path(user.pw_dir)
        home.chmod(0o700)
        python = shutil.which(f"python3.{sys.version_info.minor}", path="/usr/bin:/usr/local/bin")
        if python is None:
            pytest.skip("no system Python of this version for the user's virtualenv")
        bin_dir = make_clone(home / "dfarm", python)
        subprocess.run(["chown", "-R", f"{name}:{name}", str(home / "dfarm")], check=True)
        _run_demo(bin_dir.parent.parent, user, home / "dfarm" / "demo-results")
    finally:
        for process in psutil.process_iter(["uids"]):  # what a failed demo left
            if process.info["uids"] and process.info["uids"].real == user.pw_uid:
                with contextlib.suppress(psutil.Error):
                    process.kill()
        subprocess.run(["userdel", "--remove", name], check=False, capture_output=True)


def _run_demo(clone: Path, user: pwd.struct_passwd | None, results: Path) -> None:
    env = _environment(PATH="/usr/local/bin:/usr/bin:/bin")
    if user is None:
        env.update(DFARM_DEMO_RESULTS=str(results))
    else:
        env.update(HOME=user.pw_dir, USER=user.pw_name, LOGNAME=user.pw_name)
    result = subprocess.run(
        ["bash", str(clone / "submit_examples" / "demo.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=clone,
        user=user.pw_uid if user else None,
        group=user.pw_gid if user else None,
        extra_groups=[] if user else None,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert_twin_primes_found((results / "map_primes.txt").read_text())
    assert "Cluster 6: 100 jobs, 100 results, 0 failures, 0 pending" in result.stdout


def test_without_a_system_python_the_runtime_mirrors_the_workers_own(tmp_path: Path) -> None:
    base = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
    if job_python_module.reachable_by_others(base):
        pytest.skip("this Python is not in a private folder")
    work = Path(tempfile.mkdtemp(prefix="dfarm-runtime-"))
    try:
        work.chmod(0o755)
        nowhere = tmp_path / "no-python-here"
        nowhere.mkdir()
        script = job_python_module.job_python(work, True, system_path=str(nowhere))
        assert script == str(work / "job-python")
        assert (work / "runtime" / "python" / "bin").is_dir()
        probe = "import sys, cloudpickle, worker_node.launcher; print(sys.prefix)"
        result = subprocess.run(
            [script, "-c", probe],
            capture_output=True,
            text=True,
            timeout=60,
            user="nobody",
            env={"PATH": "/usr/bin:/bin"},
            cwd="/",
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == str(work / "runtime" / "python")
    finally:
        shutil.rmtree(work)
