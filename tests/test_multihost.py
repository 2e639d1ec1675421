"""A cluster on several hosts: a scheduler, two workers and a client, each in its own
network namespace on a private test network (10.213.N.0/24), set up from config
files as an administrator would. Skipped where namespaces cannot be created."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_until, write
from netns_lab import NetnsLab

PORT, FTP_PORT, PASSIVE = 7070, 2121, (40960, 40967)


class Farm:
    """The lab with dfarm running on it: ``sched`` and the workers ``w1`` and ``w2``."""

    def __init__(self, lab: NetnsLab, root: Path):
        self.lab, self.root = lab, root
        self.home = root / "sched"
        self.address = f"{lab.address['sched']}:{PORT}"
        self.scheduler_toml = write(root / "etc" / "scheduler.toml", "\n".join([
            f'home = "{self.home}"',
            'host = "::"',  # IPv4 and IPv6
            f"port = {PORT}",
            f"ftp_port = {FTP_PORT}",
            f'ftp_passive_ports = "{PASSIVE[0]}-{PASSIVE[1]}"',
            f'advertise_host = "{lab.address["sched"]}"',
            'log_file = "-"',
        ]) + "\n")  # fmt: skip
        lab.start("scheduler", "sched", "scheduler", "--config", self.scheduler_toml)
        wait_until(lambda: (self.home / "access.json").exists(), 30, "the scheduler to start")
        added = lab.run("sched", "control_node.cli.dfarm", "user", "add", "alice", "--home",
                        self.home)  # fmt: skip
        assert added.returncode == 0, added.stderr
        self.token = added.stdout.split()[-1]
        self.worker_toml: dict[str, Path] = {}
        self.address6 = f"[{lab.address6['sched']}]:{PORT}"
        for name in ("w1", "w2"):
            # w1 speaks IPv4, w2 IPv6
            address = self.address if name == "w1" else self.address6
            credential = root / name / "worker.credential"
            (root / name).mkdir(parents=True, exist_ok=True)
            added = lab.run("sched", "control_node.cli.dfarm", "worker", "add", name, "--output",
                            credential, "--home", self.home)  # fmt: skip
            assert added.returncode == 0, added.stderr
            self.worker_toml[name] = write(root / name / "worker.toml", "\n".join([
                f'scheduler = "{address}"',
                f'credential_file = "{credential}"',
                f'name = "{name}"',
                "slots = 1",
                f'work_dir = "{root / name / "work"}"',
                # The lab's hosts share this machine's disk, real ones would not.
                "always_ftp = true",
            ]) + "\n")  # fmt: skip
            lab.start(name, name, "worker_node", "--config", self.worker_toml[name])
        wait_until(lambda: lab.log("scheduler").count("registered from") >= 2, 30,
                   "both workers to register")  # fmt: skip

    def client(self, module: str, *args: str | Path, cwd: Path | None = None):  # noqa: ANN201
        return self.lab.run(
            "client", module, *args, cwd=cwd, DFARM_SCHEDULER=self.address, DFARM_TOKEN=self.token
        )


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Farm]:
    lab = NetnsLab(tmp_path, ["sched", "w1", "w2", "client"])
    try:
        yield Farm(lab, tmp_path)
    finally:
        lab.close()
        for name in lab.processes:
            assert "Traceback" not in lab.log(name), f"{name}:\n{lab.log(name)[-3000:]}"


def test_a_job_runs_across_hosts_with_input_and_output_files(farm: Farm, tmp_path: Path) -> None:
    lab = farm.lab
    # Each worker came from its own host's address, w1 over IPv4 and w2 over IPv6.
    log = lab.log("scheduler")
    assert re.search(rf"w1.*registered from {lab.address['w1']}:", log)
    assert re.search(rf"w2.*registered from {lab.address6['w2']}:", log)
    work = tmp_path / "client"
    # Beyond the 64 KiB that travel inside messages: both ways over FTP's data channel.
    write(work / "input.dat", "".join(f"{i:07d}\n" for i in range(40_000)))
    write(work / "job.sh", "\n".join([
        "#!/bin/sh",
        "sleep 1",
        "sort -r input.dat > output.dat",
        'echo "ran on $1"',
    ]) + "\n", executable=True)  # fmt: skip
    write(work / "job.sub", "\n".join([
        "executable = job.sh",
        "arguments = $$(Name)",
        "transfer_input_files = input.dat",
        "transfer_output_files = output.dat",
        "queue 2",
    ]) + "\n")  # fmt: skip
    started = time.monotonic()
    done = farm.client("control_node.cli.dsub", "--wait", "--timeout", "90", "job.sub", cwd=work)
    assert done.returncode == 0, done.stdout + done.stderr + lab.log("scheduler")
    expected = "".join(f"{i:07d}\n" for i in reversed(range(40_000)))
    hosts = set()
    for proc in (0, 1):
        result = work / f"1.{proc}"
        assert (result / "output.dat").read_text() == expected
        hosts.add((result / "stdout").read_text().split()[-1])
        assert json.loads((result / "status.json").read_text())["exit_code"] == 0
    assert hosts == {"w1", "w2"}, "each worker host ran one job"
    assert time.monotonic() - started < 90
    # The spool on the scheduler host holds the staged input once, by its hash.
    sizes = [f.stat().st_size for f in (farm.home / "spool" / "1" / "input").iterdir()]
    assert sizes.count(320_000) == 1


def test_doctor_passes_on_client_and_worker_hosts(farm: Farm) -> None:
    out = farm.client("control_node.cli.dfarm", "doctor")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert [line[:6] for line in lines[:7]] == ["[ OK ]"] * 7, out.stdout
    assert f"{farm.address}, user alice" in lines[0]
    assert "KiB received intact" in lines[6] and lines[-1] == "everything works."
    for name, address in (("w1", farm.address), ("w2", farm.address6)):
        out = farm.lab.run(name, "control_node.cli.dfarm", "doctor", "--worker", "--config",
                           farm.worker_toml[name])  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"{address} (file {farm.worker_toml[name]}:1)" in out.stdout
        assert f"worker {name} accepted" in out.stdout and "received intact" in out.stdout
    # The probes left nothing behind in the spool.
    assert list((farm.home / "spool" / "probe").iterdir()) == []


def test_doctor_reports_a_closed_passive_port_range(farm: Farm) -> None:
    farm.lab.drop_tcp_ports("sched", *PASSIVE)
    out = farm.client("control_node.cli.dfarm", "doctor", "--timeout", "2")
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[4].startswith("[ OK ] 5. FTP control connection"), out.stdout
    sched = farm.lab.address["sched"]
    assert re.match(
        rf"\[FAIL\] 6\. FTP upload \(passive data connection\): the passive data connection "
        rf"to {re.escape(sched)}:(\d+) failed \(timed out\): the FTP passive port range is closed",
        lines[5],
    ), out.stdout
    port = int(re.search(rf"{re.escape(sched)}:(\d+)", lines[5]).group(1))
    assert PASSIVE[0] <= port <= PASSIVE[1]
    assert lines[6] == (
        f"       fix: open the scheduler's FTP passive ports {PASSIVE[0]}-{PASSIVE[1]} in the "
        "firewall of the scheduler host and between the hosts"
    )
    assert "not checked: FTP download" in lines[7]
    # The control channel and everything before it still work.
    assert farm.client("control_node.cli.dq").returncode == 0
