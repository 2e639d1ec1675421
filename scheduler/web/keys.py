"""What the dashboard's application holds: the scheduler, the worker metrics, the
sessions, the index of the queue and the event streams, under typed keys."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from aiohttp import web

from scheduler.web.events import EventStreams
from scheduler.web.metrics import MetricsHistory
from scheduler.web.queue_index import QueueIndex
from scheduler.web.session import Sessions

if TYPE_CHECKING:
    from scheduler.state import SchedulerState

SCHEDULER: web.AppKey[Any] = web.AppKey("scheduler", object)
METRICS = web.AppKey("metrics", MetricsHistory)
SESSIONS = web.AppKey("sessions", Sessions)
INDEX = web.AppKey("index", QueueIndex)
STREAMS = web.AppKey("streams", EventStreams)


def scheduler_of(request: web.Request) -> SchedulerState:
    """The scheduler this dashboard belongs to."""
    return cast("SchedulerState", request.app[SCHEDULER])


def metrics_of(request: web.Request) -> MetricsHistory:
    return request.app[METRICS]


def sessions_of(request: web.Request) -> Sessions:
    return request.app[SESSIONS]


def index_of(request: web.Request) -> QueueIndex:
    return request.app[INDEX]


def streams_of(request: web.Request) -> EventStreams:
    return request.app[STREAMS]
