"""``dfarm``: start the nodes of a cluster and manage it.

    dfarm up [--workers N] [--slots N] [--home DIR]    a local cluster on 127.0.0.1
    dfarm scheduler [--home DIR] [--host H] [--port P] the scheduler node
    dfarm worker --scheduler HOST:PORT --credential-file F  a worker node
    dfarm worker add|revoke|list ... [--home DIR]     worker credentials (scheduler node)
    dfarm workers [--home DIR]                         list worker credentials
    dfarm worker --drain NAME [--home DIR]            drain a worker (scheduler node)
    dfarm user add|list|remove|token|password ...      users (on the scheduler node)
    dfarm users [--json]                               fair-share usage of each user
    dfarm config show [scheduler|worker] [OPTIONS]    the effective configuration
    dfarm doctor [--worker] [--scheduler HOST:PORT]    check this host step by step
    dfarm backup FILE [--home DIR]                     copy the scheduler's database
    dfarm install-service scheduler|worker [--dry-run] systemd unit files

This launcher is the one place that starts every role, so it imports each. Of the
scheduler node it imports only the entry points of its commands, each where the
command is chosen: ``scheduler.__main__.main`` (``dfarm scheduler``),
``scheduler.admin.main`` (``dfarm user``), ``scheduler.worker_admin.main`` (``dfarm
worker add|revoke|list``, ``dfarm workers``) and ``scheduler.backup.main`` (``dfarm
backup``); ``tests/test_module_boundaries.py`` allows these and no other.
"""

from __future__ import annotations

import sys

USAGE = __doc__.split("\n\n")[1]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print("usage: dfarm COMMAND [options]\n\n" + USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "up":
        from control_node.local_cluster import main as run
    elif command == "scheduler":
        from scheduler.__main__ import main as run
    elif command == "worker" and rest[:1] and rest[0] in ("add", "revoke", "list"):
        from scheduler.worker_admin import main as run
    elif command == "workers":
        from scheduler.worker_admin import main as admin

        return admin(["list", *rest])
    elif command == "worker":
        from worker_node.__main__ import main as run
    elif command == "user":
        from scheduler.admin import main as run
    elif command == "users":
        from control_node.cli.users import main as run
    elif command == "config":
        from control_node.cli.dfarm_config import main as run
    elif command == "doctor":
        from control_node.doctor import main as run
    elif command == "backup":
        from scheduler.backup import main as run
    elif command == "install-service":
        from control_node.services import main as run
    else:
        print(f"dfarm: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    return run(rest)


if __name__ == "__main__":
    sys.exit(main())
