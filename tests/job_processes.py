"""Checks on the processes a test's jobs left, for the tests that attack a worker."""

from __future__ import annotations

from pathlib import Path


def alive_as(pid: int, uid: int, work: Path) -> bool:
    """Whether ``pid`` is a live process of ``uid`` of a job of the worker in ``work``
    (not another that took its pid since)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    ours = any(v.startswith(b"DFARM_SCRATCH_DIR=" + bytes(work)) for v in environ)
    alive = not fields["State"].strip().startswith("Z")
    return ours and alive and str(uid) in fields["Uid"].split()
