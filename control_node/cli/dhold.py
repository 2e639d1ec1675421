"""``dhold``: see :mod:`control_node.cli.jobctl`."""

from __future__ import annotations

import sys

from control_node.cli.jobctl import dhold as main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
