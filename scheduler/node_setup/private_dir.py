"""Folders only their owner may enter (the scheduler's home, ``dfarm up``'s logs)."""

from __future__ import annotations

import os
from pathlib import Path

DIR_MODE = 0o700


def make_private_dir(path: Path) -> Path:
    """Create ``path`` (and its missing parents) as 0700 folders; returns it."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(folder, DIR_MODE)  # whatever the umask
    return path
