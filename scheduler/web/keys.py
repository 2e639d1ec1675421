"""What the dashboard's application holds: the scheduler, the worker metrics and the
sessions, under typed keys."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from aiohttp import web

from scheduler.web.metrics import MetricsHistory
from scheduler.web.session import Sessions

if TYPE_CHECKING:
    from scheduler.state import SchedulerState

SCHEDULER: web.AppKey[Any] = web.AppKey("scheduler", object)
METRICS = web.AppKey("metrics", MetricsHistory)
SESSIONS = web.AppKey("sessions", Sessions)


def scheduler_of(request: web.Request) -> SchedulerState:
    """The scheduler this dashboard belongs to."""
    return cast("SchedulerState", request.app[SCHEDULER])


def metrics_of(request: web.Request) -> MetricsHistory:
    return request.app[METRICS]


def sessions_of(request: web.Request) -> Sessions:
    return request.app[SESSIONS]
