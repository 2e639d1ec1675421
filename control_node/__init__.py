"""The control node of dfarm: the submit-file parser, the client library and the commands.

The names below are imported when first used, so that a command imports only the
modules it needs (see tests/test_startup.py).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from control_node.client import Client
    from control_node.connection import (
        AuthError,
        DfarmError,
        NotFound,
        RequestFailed,
        SchedulerUnavailable,
    )
    from control_node.handles import Cluster, DagRun
    from control_node.submit import SubmitError

_HOMES = {
    "AuthError": "control_node.connection",
    "Client": "control_node.client",
    "Cluster": "control_node.handles",
    "DagRun": "control_node.handles",
    "DfarmError": "control_node.connection",
    "NotFound": "control_node.connection",
    "RequestFailed": "control_node.connection",
    "SchedulerUnavailable": "control_node.connection",
    "SubmitError": "control_node.submit",
}

__all__ = [
    "AuthError",
    "Client",
    "Cluster",
    "DagRun",
    "DfarmError",
    "NotFound",
    "RequestFailed",
    "SchedulerUnavailable",
    "SubmitError",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'control_node' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
