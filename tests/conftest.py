"""A real local cluster per test: scheduler and workers as separate processes.

Each process logs to ``<tmp>/home/logs/<name>.log``; every process is stopped
at teardown, and a process that died on its own fails the test with its log.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from core_fakes import FakeClock, close_state, open_state

from control_node.local_cluster import LocalCluster
from scheduler.config import SchedulerConfig
from scheduler.state import SchedulerState

if TYPE_CHECKING:
    from scheduler.staging import Spool

COMMAND_TIMEOUT = 60
#: Seconds a test waits for an event by default: only a bound for what never comes,
#: long enough for what comes late on a busy machine (``make test-loaded``).
EVENT_TIMEOUT = 60.0


def wait_until(
    predicate: Callable[[], object], timeout: float = EVENT_TIMEOUT, what: str = ""
) -> object:
    """Poll ``predicate`` until it returns something true; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    """The spool and its FTP server, started in this process."""
    with warnings.catch_warnings():  # pyftpdlib imports asyncore, deprecated in 3.11
        warnings.simplefilter("ignore", DeprecationWarning)
        from scheduler.staging import Spool
    s = Spool(tmp_path / "spool")
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def tmp_path(tmp_path: Path) -> Iterator[Path]:
    """As root, workers run jobs as ``nobody``, which must reach the test's files (the
    gates and data jobs look for, the files they append to): then the folder is one
    of its own under /tmp, open to all like /tmp, not in pytest's, which is private
    to root and reset by every session."""
    if os.geteuid() != 0:
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="dfarm-test-"))
    path.chmod(0o1777)  # like /tmp: jobs leave their marks here too
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class TestCluster(LocalCluster):
    """A :class:`LocalCluster` with helpers to run the real commands against it."""

    __test__ = False

    def __init__(self, home: Path):
        super().__init__(home, workers=0, slots=1)
        self.expected_exits: set[str] = set()

    @property
    def config(self) -> SchedulerConfig:
        """Where the scheduler keeps its files in this cluster's home."""
        return SchedulerConfig(home=self.home)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DFARM_")}
        env["DFARM_HOME"] = str(self.config.home)
        env.update(extra)
        return env

    def run(
        self,
        command: str,
        *args: str | Path,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``dsub``/``dq``/``dstat``/``dfetch``/``dfarm`` as a user would."""
        module = "control_node.cli." + command
        return subprocess.run(
            [sys.executable, "-m", module, *map(str, args)],
            cwd=cwd,
            env=env or self.env(),
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def crashed(self) -> list[str]:
        return [
            name
            for name, proc in self.processes.items()
            if proc.poll() is not None and proc.returncode != 0 and name not in self.expected_exits
        ]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # noqa: ANN201
    """Keep each phase's report on the test, so that fixtures know whether it failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def make_cluster(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., TestCluster]]:
    """Factory: ``make_cluster(workers=2)`` starts a scheduler and that many 1-slot workers."""
    made: list[TestCluster] = []

    def create(
        workers: int = 2,
        slots: int = 1,
        worker_args: tuple[str, ...] = (),
        scheduler_args: tuple[str, ...] = (),
    ) -> TestCluster:
        cluster = TestCluster(tmp_path / f"home{len(made)}")
        made.append(cluster)
        cluster.config.home.mkdir(parents=True)
        cluster.logs.mkdir()
        from control_node.local_cluster import local_accounts

        names = [f"w{i}" for i in range(1, workers + 1)]
        cluster.token, credentials = local_accounts(cluster.home, names)
        cluster.start_scheduler(*scheduler_args)
        for name in names:
            cluster.add_worker(name, *worker_args, slots=slots, credential_file=credentials[name])
        if workers:
            cluster.wait_for_workers(workers)
        return cluster

    yield create
    report = getattr(request.node, "report_call", None)
    for cluster in made:
        if report is not None and report.failed:
            # Shown with the failure: the logs go with the test's folder.
            for name in cluster.processes:
                print(
                    f"--- {cluster.config.home.name}/{name}.log (end)\n{cluster.log(name)[-4000:]}"
                )
        crashed = cluster.crashed()
        cluster.stop(grace=5)
        assert not crashed, "crashed: " + "; ".join(
            f"{name}:\n{cluster.log(name)[-3000:]}" for name in crashed
        )
        # An error a process survived is still a bug: no traceback in any log.
        for name in cluster.processes:
            log = cluster.log(name)
            at = log.find("Traceback")
            assert at < 0, f"{name}:\n{log[max(0, at - 500) : at + 3000]}"


@pytest.fixture
def cluster(make_cluster: Callable[..., TestCluster]) -> TestCluster:
    """A scheduler with two 1-slot workers."""
    return make_cluster(workers=2)


def write(path: Path, text: str, executable: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if executable:
        path.chmod(0o755)
    return path


#: The core's tests (tests/test_core_*.py): a fake clock, and a scheduler's state on
#: a database in the test's folder, with no socket and no process.
@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def state(tmp_path: Path, clock: FakeClock) -> Iterator[SchedulerState]:
    state = open_state(tmp_path / "home", clock)
    yield state
    close_state(state)
