"""Hosts for tests: network namespaces joined by a bridge, each with its own address.

``NetnsLab(tmp_path, ["sched", "w1", "w2", "client"])`` makes one namespace per
host. The first host holds the bridge (so it is the router of the test network);
the others are joined to it by veth pairs. Addresses are ``10.213.N.1``,
``10.213.N.2``, ... in a private range, N random per run, and IPv6 addresses
``fd00:213:N::1``, ``fd00:213:N::2``, ... (unique local) beside them. Names carry the pid and
a random suffix, so parallel runs do not meet; :meth:`close` kills every process
started in the lab and deletes its namespaces (which removes their interfaces).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


def skip_reason() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if sys.platform != "linux":
        return "network namespaces exist on Linux only"
    if os.geteuid() != 0:
        return "creating network namespaces needs root (run the tests as root or in CI)"
    if shutil.which("ip") is None:
        return "the 'ip' command (iproute2) is not installed"
    return None


class NetnsLab:
    def __init__(self, root: Path, hosts: list[str]):
        reason = skip_reason()
        if reason:
            pytest.skip(reason)
        self.root = root
        tag = f"{os.getpid() % 100000}{random.randrange(1 << 16):04x}"
        self.subnet = f"10.213.{random.randrange(256)}"
        self.ns = {host: f"dfarm-{tag}-{host}" for host in hosts}
        self.address = {host: f"{self.subnet}.{i}" for i, host in enumerate(hosts, 1)}
        n = self.subnet.rsplit(".", 1)[1]
        self.address6 = {host: f"fd00:213:{n}::{i}" for i, host in enumerate(hosts, 1)}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self._made: list[str] = []
        try:
            self._build(hosts)
        except BaseException:
            self.close()
            raise

    def _run(self, *args: str) -> None:
        out = _ip(*args)
        if out.returncode != 0:
            raise RuntimeError(f"ip {' '.join(args)}: {out.stderr.strip()}")

    def _build(self, hosts: list[str]) -> None:
        for host in hosts:
            out = _ip("netns", "add", self.ns[host])
            if out.returncode != 0:
                pytest.skip(f"cannot create a network namespace: {out.stderr.strip()}")
            self._made.append(self.ns[host])
            self._run("-n", self.ns[host], "link", "set", "lo", "up")
        hub = self.ns[hosts[0]]
        self._run("-n", hub, "link", "add", "br0", "type", "bridge")
        self._run("-n", hub, "link", "set", "br0", "up")
        self._add_addresses(hosts[0], "br0")
        for i, host in enumerate(hosts[1:], 1):
            port = f"port{i}"
            self._run("-n", hub, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                      "netns", self.ns[host])  # fmt: skip
            self._run("-n", hub, "link", "set", port, "master", "br0")
            self._run("-n", hub, "link", "set", port, "up")
            self._add_addresses(host, "eth0")
            self._run("-n", self.ns[host], "link", "set", "eth0", "up")

    def _add_addresses(self, host: str, device: str) -> None:
        ns = self.ns[host]
        self._run("-n", ns, "addr", "add", f"{self.address[host]}/24", "dev", device)
        # nodad: usable at once, without duplicate address detection's delay
        self._run("-n", ns, "-6", "addr", "add", f"{self.address6[host]}/64", "dev", device,
                  "nodad")  # fmt: skip

    def drop_tcp_ports(self, host: str, first: int, last: int) -> None:
        """A firewall on ``host`` that drops incoming TCP to ports ``first``-``last``
        (a policy-routing blackhole ahead of local delivery: no iptables needed)."""
        ns = self.ns[host]
        self._run("-n", ns, "rule", "add", "pref", "10", "iif", "br0", "ipproto", "tcp",
                  "dport", f"{first}-{last}", "blackhole")  # fmt: skip
        self._run("-n", ns, "rule", "add", "pref", "100", "lookup", "local")
        self._run("-n", ns, "rule", "del", "pref", "0")

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DFARM_")}
        env.update(extra)
        return env

    def command(self, host: str, *args: str | Path) -> list[str]:
        return ["ip", "netns", "exec", self.ns[host], *map(str, args)]

    def start(self, name: str, host: str, module: str, *args: str | Path) -> None:
        """Run ``python -m module args`` on ``host``; its output goes to ``logs/<name>.log``."""
        with open(self.logs / f"{name}.log", "ab") as log:
            self.processes[name] = subprocess.Popen(
                self.command(host, sys.executable, "-m", module, *args),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env=self.env(),
            )  # fmt: skip

    def run(
        self, host: str, module: str, *args: str | Path, cwd: Path | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        """Run a command on ``host`` to its end."""
        return subprocess.run(
            self.command(host, sys.executable, "-m", module, *args),
            capture_output=True, text=True, timeout=120, cwd=cwd, env=self.env(**env),
        )  # fmt: skip

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGINT)
        for process in self.processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for ns in self._made:
            _ip("netns", "delete", ns)
        self._made.clear()
