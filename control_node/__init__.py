"""The control node of dfarm: the submit-file parser, the client library and the commands."""

from control_node.client import Client, Cluster
from control_node.connection import (
    AuthError,
    DfarmError,
    NotFound,
    RequestFailed,
    SchedulerUnavailable,
)
from control_node.submit import SubmitError

__all__ = [
    "AuthError",
    "Client",
    "Cluster",
    "DfarmError",
    "NotFound",
    "RequestFailed",
    "SchedulerUnavailable",
    "SubmitError",
]
