"""``dfarm install-service scheduler|worker``: systemd units for the nodes.

The unit runs the node as a dedicated system user (``dfarm``, created if missing),
reads ``/etc/dfarm/<node>.toml``, restarts it when it fails, logs to journald, and
stops it with SIGTERM: the scheduler commits and closes, the worker drains (its
running jobs may finish for up to ``grace`` seconds, 300 by default, before they
are given back), so systemd waits that long before it kills.

    dfarm install-service worker --dry-run     print the unit
    dfarm install-service worker               write it, create the user, reload systemd
"""

from __future__ import annotations

import argparse
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

UNIT_DIR = Path("/etc/systemd/system")
CONFIG_DIR = Path("/etc/dfarm")
STATE_DIR = Path("/var/lib/dfarm")

DESCRIPTION = {"scheduler": "dfarm scheduler node", "worker": "dfarm worker node"}
#: Seconds systemd waits after SIGTERM: the worker's default grace and a margin.
STOP_TIMEOUT = {"scheduler": 60, "worker": 330}


def unit(node: str, user: str, config: Path, executable: str) -> str:
    """The text of the unit file of ``node``."""
    state = _state_dir(node)
    return f"""\
# Written by 'dfarm install-service {node}'. Settings go in {config}.
[Unit]
Description={DESCRIPTION[node]}
Documentation=file://{config}
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User={user}
Group={user}
ExecStart={executable} {node} --config {config}
# SIGTERM: the scheduler stops cleanly; the worker drains (jobs finish, then it exits).
KillSignal=SIGTERM
KillMode=mixed
TimeoutStopSec={STOP_TIMEOUT[node]}
Restart=on-failure
RestartSec=5
# Logs go to journald ('journalctl -u dfarm-{node}') unless log_file is set.
StateDirectory={state.relative_to("/var/lib")}
StateDirectoryMode=0700
NoNewPrivileges=yes
ProtectSystem=full
PrivateTmp=yes
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
"""


def _state_dir(node: str) -> Path:
    return STATE_DIR if node == "scheduler" else STATE_DIR / "worker"


def starter_config(node: str) -> str:
    """A first configuration file: the state directory the unit creates."""
    if node == "scheduler":
        return (
            "# dfarm scheduler: every key is in docs/configuration-reference.md\n"
            f'home = "{_state_dir(node)}"\n'
            '# port = 7070\n# ftp_port = 2121\n# ftp_passive_ports = "40000-40100"\n'
        )
    return (
        "# dfarm worker: every key is in docs/configuration-reference.md\n"
        'scheduler = "SCHEDULER-HOST:7070"\n'
        "# from 'dfarm worker add NAME --output FILE' on the scheduler node (mode 0600)\n"
        f'credential_file = "{CONFIG_DIR}/worker.credential"\n'
        f'work_dir = "{_state_dir(node)}"\n'
    )


def executable() -> str:
    found = shutil.which("dfarm")
    return found or str(Path(sys.executable).with_name("dfarm"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dfarm install-service",
        description="Install a systemd unit for the scheduler or a worker.",
    )
    parser.add_argument("node", choices=("scheduler", "worker"))
    parser.add_argument("--dry-run", action="store_true", help="print the unit, change nothing")
    parser.add_argument("--user", default="dfarm", help="system user to run as (default dfarm)")
    parser.add_argument(
        "--config", type=Path, default=None, help="config file (default /etc/dfarm/NODE.toml)"
    )
    parser.add_argument(
        "--unit-dir", type=Path, default=UNIT_DIR, help=f"where units go (default {UNIT_DIR})"
    )
    parser.add_argument(
        "--no-create-user", action="store_true", help="do not create the system user"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = args.config or CONFIG_DIR / f"{args.node}.toml"
    text = unit(args.node, args.user, config.absolute(), executable())
    if args.dry_run:
        print(text, end="")
        if not config.exists():
            print(f"\n# {config} does not exist; it would be created with:")
            print(starter_config(args.node), end="")
        return 0
    path = args.unit_dir / f"dfarm-{args.node}.service"
    try:
        if not args.no_create_user:
            _create_user(args.user)
        args.unit_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if not config.exists():
            config.parent.mkdir(parents=True, exist_ok=True)
            config.write_text(starter_config(args.node))
            print(f"wrote {config}: check it")
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"dfarm install-service: error: {exc} (run it as root, or use --dry-run "
              "and copy the unit yourself)", file=sys.stderr)  # fmt: skip
        return 1
    print(f"wrote {path}")
    if args.unit_dir == UNIT_DIR and shutil.which("systemctl"):
        subprocess.run(["systemctl", "daemon-reload"], check=False)
    print(f"then: systemctl enable --now dfarm-{args.node}")
    return 0


def _create_user(user: str) -> None:
    try:
        pwd.getpwnam(user)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--home-dir", str(STATE_DIR), "--no-create-home",
             "--shell", "/usr/sbin/nologin", user],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
