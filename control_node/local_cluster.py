"""``dfarm up``: a scheduler and N workers on 127.0.0.1, as separate processes.

Everything lives under one home directory (default ``~/.dfarm``): the state
database, the spool, each worker's credential under ``credentials/`` (issued as
``dfarm worker add`` does), each process's log under ``logs/``, and
``access.json`` with a token for the local user, so that ``dsub``, ``dq`` and
``dstat`` on this machine need no flags.
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from scheduler import protocol as p
from scheduler.node_setup.private_dir import make_private_dir
from worker_node.job_python import reachable_by_others

STARTUP_TIMEOUT = 30.0


class ClusterError(Exception):
    """The local cluster could not start."""


def local_accounts(
    home: Path, workers: Iterable[str] = (), user: bool = True
) -> tuple[str, dict[str, Path]]:
    """The token of the user running ``dfarm up`` (if ``user``) and the files holding
    the credentials of ``workers`` (mode 0600, in the home's ``credentials/``), each
    issued on first use (as ``dfarm user add`` and ``dfarm worker add`` would) by one
    run of the scheduler's own command (see :mod:`scheduler.local_accounts`)."""
    args = []
    token_file = home / p.LOCAL_TOKEN_FILE
    if user:
        name = re.sub(r"[^a-z0-9_.-]", "_", getpass.getuser().lower())
        args += ["--user", name if re.match(r"^[a-z_]", name) else "_" + name, str(token_file)]
    credentials = {}
    for worker in workers:
        credentials[worker] = home / "credentials" / f"{worker}.credential"
        args += ["--worker", worker, str(credentials[worker])]
    if credentials:
        (home / "credentials").mkdir(mode=0o700, exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-m", "scheduler.local_accounts", "--home", str(home), *args],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=STARTUP_TIMEOUT,
    )  # fmt: skip
    if done.returncode != 0:
        raise ClusterError(f"could not set up the local accounts: {done.stderr.strip()}")
    return (token_file.read_text().strip() if user else ""), credentials


def local_user_token(home: Path) -> str:
    """The token of the user running ``dfarm up``, created on first use."""
    return local_accounts(home)[0]


def worker_credential(home: Path, name: str) -> Path:
    """The file holding worker ``name``'s credential, issued on first use."""
    return local_accounts(home, [name], user=False)[1][name]


class LocalCluster:
    """Starts, watches and stops the processes of a local cluster."""

    def __init__(self, home: Path, workers: int, slots: int, port: int = 0):
        self.home, self.port = home.resolve(), port
        self.access_path = self.home / p.ACCESS_FILE
        self.n_workers, self.slots = workers, slots
        self.logs = self.home / "logs"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.access: p.AccessRecord | None = None
        self.token: str | None = None
        #: Extra options of the scheduler (``dfarm up --web-port``).
        self.scheduler_args: tuple[str, ...] = ()
        self._workers_dir: Path | None = None
        #: Where the scheduler's log stood at :meth:`start` (the log is appended to).
        self._log_start = 0

    @property
    def workers_dir(self) -> Path:
        """The workers' work folders: in the home, unless workers run as root with a
        home other accounts cannot traverse (``/root/.dfarm``): jobs then run as other
        accounts, so the folders go to a fresh folder under the system's temp dir."""
        if self._workers_dir is None:
            self._workers_dir = self.home / "workers"
            if os.geteuid() == 0 and not reachable_by_others(self.home, read=False):
                self._workers_dir = Path(tempfile.mkdtemp(prefix="dfarm-workers-"))
                self._workers_dir.chmod(0o711)
        return self._workers_dir

    def _spawn(self, name: str, args: list[str]) -> None:
        # Owner-only, as the scheduler's own files (see scheduler/private.py).
        fd = os.open(self.logs / f"{name}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        log_file = os.fdopen(fd, "ab")
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", *args], stdout=log_file, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        log_file.close()

    def start(self) -> p.AccessRecord:
        """Start the scheduler, then the workers; returns the access record (with token)."""
        make_private_dir(self.logs)
        host = socket.gethostname().split(".")[0]
        names = [f"{host}-{i}" for i in range(1, self.n_workers + 1)]
        self.token, credentials = local_accounts(self.home, names)
        log = self.logs / "scheduler.log"
        self._log_start = log.stat().st_size if log.exists() else 0
        access = self.start_scheduler(*self.scheduler_args)
        for name in names:
            self.add_worker(name, slots=self.slots, credential_file=credentials[name])
        return access

    def start_scheduler(self, *extra: str) -> p.AccessRecord:
        """Start (or restart) the scheduler process and wait until it listens."""
        self.access_path.unlink(missing_ok=True)
        port = str(self.access.port if self.access else self.port)
        args = ["--home", str(self.home), "--host", "127.0.0.1", "--port", port]
        self._spawn("scheduler", ["scheduler", *args, "--log-file", "-", *extra])
        record = self._wait_for_access()
        self.access = p.AccessRecord(
            host=record.host,
            port=record.port,
            token=self.token,
            tls_fingerprint=record.tls_fingerprint,
        )
        self.access.save(self.access_path)
        return self.access

    def add_worker(
        self,
        name: str,
        *extra: str,
        slots: int = 1,
        secret_file: Path | None = None,
        credential_file: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a worker process named ``name`` (its log: ``logs/<name>.log``) with
        its own credential (issued here unless ``credential_file`` is given), or with
        ``secret_file`` as the pool secret."""
        assert self.access is not None, "start the scheduler first"
        secret = (
            ("--secret-file", str(secret_file))
            if secret_file is not None
            else ("--credential-file", str(credential_file or worker_credential(self.home, name)))
        )
        self._spawn(name, [
            "worker_node", "--scheduler", f"127.0.0.1:{self.access.port}", *secret, "--name", name,
            "--slots", str(slots), "--work-dir", str(self.workers_dir / name),
            *(("--tls-fingerprint", self.access.tls_fingerprint)
              if self.access.tls_fingerprint else ()),
            *extra,
        ])  # fmt: skip
        return self.processes[name]

    def _wait_for_access(self) -> p.AccessRecord:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        scheduler = self.processes["scheduler"]
        while time.monotonic() < deadline:
            if self.access_path.exists():
                return p.AccessRecord.load(self.access_path)
            if scheduler.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        out = (self.logs / "scheduler.log").read_text(errors="replace")[-2000:]
        raise ClusterError(f"the scheduler did not start:\n{out}")

    def wait_for_workers(self, count: int | None = None, timeout: float = STARTUP_TIMEOUT) -> None:
        """Block until ``count`` workers (default: those :meth:`start` started) have
        registered with the scheduler (as its log, written since :meth:`start`, says)."""
        count = self.n_workers if count is None else count
        deadline = time.monotonic() + timeout
        log = self.logs / "scheduler.log"
        while True:
            with open(log, "rb") as f:
                f.seek(self._log_start)
                if f.read().count(b" registered from ") >= count:
                    return
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise ClusterError(
                        f"{name} exited with {process.returncode}; see {self.logs / name}.log"
                    )
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"the workers did not connect in {timeout:.0f} s: see {self.logs}"
                )
            time.sleep(0.05)

    def web_url(self) -> str | None:
        """The web dashboard's address, as the scheduler logged it when it started."""
        log = (self.logs / "scheduler.log").read_text(errors="replace")
        found = re.findall(r"web dashboard on (https?://\S+/)", log)
        return found[-1] if found else None

    def wait(self) -> int:
        """Block until a signal arrives or a process dies; returns an exit code."""
        stop = []
        handler = lambda signum, frame: stop.append(signum)  # noqa: E731
        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)
        while not stop:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    print(f"dfarm up: {name} exited with {process.returncode}; see "
                          f"{self.logs}", file=sys.stderr)  # fmt: skip
                    return 1
            time.sleep(0.2)
        return 0

    def stop(self, grace: float = 10.0) -> None:
        """Stop every process (workers first, with SIGINT: at once, not draining; the
        scheduler with SIGTERM), then SIGKILL what is left."""
        order = sorted(self.processes, key=lambda n: n == "scheduler")
        for name in order:
            if self.processes[name].poll() is None:
                sig = signal.SIGTERM if name == "scheduler" else signal.SIGINT
                os.killpg(self.processes[name].pid, sig)
        deadline = time.monotonic() + grace
        for name in order:
            process = self.processes[name]
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self._workers_dir is not None and not self._workers_dir.is_relative_to(self.home):
            shutil.rmtree(self._workers_dir, ignore_errors=True)
            self._workers_dir = None


def build_parser(prog: str = "dfarm up") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Run a scheduler and local workers on 127.0.0.1 until Ctrl-C."
    )
    parser.add_argument("--workers", type=int, default=2, help="local workers (default 2)")
    parser.add_argument(
        "--slots", type=int, default=None, help="slots per worker (default: CPUs / workers)"
    )
    parser.add_argument(
        "--home", type=Path, default=None, help="state directory (default ~/.dfarm)"
    )
    parser.add_argument(
        "--port", type=int, default=0, help="scheduler port (default: any free one)"
    )
    parser.add_argument(
        "--web-port", type=int, default=None, help="serve the web dashboard on"
        " 127.0.0.1:PORT (0 = any free port; its address is in DIR/logs/scheduler.log)"
    )  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.workers < 0 or (args.slots is not None and args.slots < 1):
        print("dfarm up: error: --workers must be >= 0 and --slots >= 1", file=sys.stderr)
        return 2
    slots = args.slots or max(1, (os.cpu_count() or 1) // max(1, args.workers))
    home = (args.home or p.default_home()).expanduser()
    cluster = LocalCluster(home, args.workers, slots, args.port)
    if args.web_port is not None:
        cluster.scheduler_args = ("--web-port", str(args.web_port))
    try:
        record = cluster.start()
        cluster.wait_for_workers()  # "up" means ready to run jobs
    except (ClusterError, OSError) as exc:
        cluster.stop()
        print(f"dfarm up: error: {exc}", file=sys.stderr)
        return 1
    print(f"dfarm is up: scheduler on {record.host}:{record.port}, {args.workers} worker(s) "
          f"with {slots} slot(s) each; state and logs in {home.resolve()}. Ctrl-C stops it.",
          flush=True)  # fmt: skip
    if args.web_port is not None:
        print(f"web dashboard: {cluster.web_url()} (log in with the token in"
              f" {home.resolve() / p.LOCAL_TOKEN_FILE})", flush=True)  # fmt: skip
    try:
        return cluster.wait()
    finally:
        cluster.stop()
        print("dfarm stopped.", flush=True)
