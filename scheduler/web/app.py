"""The aiohttp application of the dashboard, run inside the scheduler's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp_jinja2
import jinja2
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from control_node import render
from scheduler.connection import RequestError
from scheduler.control_handlers import worker_infos
from scheduler.web import api, dag_pages, jobpages, pages
from scheduler.web.events import EventStreams
from scheduler.web.keys import INDEX, METRICS, SCHEDULER, SESSIONS, STREAMS
from scheduler.web.metrics import MetricsHistory
from scheduler.web.queue_index import QueueIndex
from scheduler.web.session import Handler, Sessions, session_middleware

if TYPE_CHECKING:
    from scheduler.job_records import Job
    from scheduler.state import SchedulerState

log = logging.getLogger("scheduler.web")
HERE = Path(__file__).parent
#: Largest request body: the submit form's files together.
MAX_UPLOAD = 256 * 1024 * 1024
#: Seconds a stopping scheduler waits for the requests in progress.
SHUTDOWN = 3.0


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A refused request (no such job of yours, bad id) is a 404 or 400 with its
    reason, as JSON under /api/ and as a page elsewhere."""
    try:
        return await handler(request)
    except web.HTTPNotFound as exc:
        if request.path.startswith(("/api/", "/static/")):
            raise
        # An unknown address: the site's page, with its navigation, not a bare line.
        message = (
            f"there is no page at {request.path}" if exc.text == "404: Not Found" else exc.text
        )
        return aiohttp_jinja2.render_template(
            "error.html", request, {"message": message}, status=404
        )
    except RequestError as exc:
        status = 404 if exc.code == "not_found" else 400
        if request.path.startswith("/api/"):
            return web.json_response({"error": str(exc), "code": exc.code}, status=status)
        response = aiohttp_jinja2.render_template(
            "error.html", request, {"message": str(exc)}, status=status
        )
        return response


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'",
    )
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if request.path.startswith(("/api/", "/jobs/", "/clusters/")):
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def make_app(s: SchedulerState, metrics: MetricsHistory) -> web.Application:
    sessions = Sessions()
    app = web.Application(
        middlewares=[security_headers, session_middleware(sessions, s.store, s.guard), errors],
        client_max_size=MAX_UPLOAD,
    )
    app[SCHEDULER], app[METRICS], app[SESSIONS] = s, metrics, sessions
    _follow_jobs(app, s)
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        context_processors=[_context],
    )
    env.filters.update(when=render.when, duration=render.duration, size=render.size)
    app.router.add_static("/static/", HERE / "static")
    pages.add_routes(app.router)
    jobpages.add_routes(app.router)
    api.add_routes(app.router)
    dag_pages.add_routes(app.router)
    return app


def _follow_jobs(app: web.Application, s: SchedulerState) -> None:
    """Keep the index of the queue and feed the event streams from the job table's
    changes, while the dashboard runs."""
    index = app[INDEX] = QueueIndex(s.jobs.active.values(), s.store.remember)
    streams = app[STREAMS] = EventStreams()
    before = s.jobs.on_change

    def changed(job: Job) -> None:
        before(job)
        index.changed(job)
        streams.changed(job)

    s.jobs.on_change = changed

    async def stop(app: web.Application) -> None:
        streams.close_all()
        s.jobs.on_change = before

    app.on_shutdown.append(stop)


async def _context(request: web.Request) -> dict[str, object]:
    session = request.get("session")
    return {"user": request.get("user"), "csrf": session.csrf if session else ""}


class _BadRequests(logging.Filter):
    """aiohttp logs a request that is not HTTP (a request line over its limit, bytes
    that do not parse) with a traceback. That is the client's fault, not a bug: one
    warning line, with the reason and no traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            reason = " ".join(str(exc.message).split())[:200]
            record.msg, record.args = "%s: %s", (record.getMessage(), reason)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_bad_requests = _BadRequests()


class WebServer:
    """The running dashboard: its site and the sampler of worker metrics."""

    def __init__(self, runner: web.AppRunner, sampler: asyncio.Task[None], url: str):
        self.runner, self.sampler, self.url = runner, sampler, url

    async def stop(self) -> None:
        self.sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.sampler
        await self.runner.cleanup()


async def start_web(s: SchedulerState) -> WebServer:
    """Serve the dashboard on the configured address; raises OSError if it cannot."""
    config = s.config
    logging.getLogger("aiohttp.server").addFilter(_bad_requests)
    metrics = MetricsHistory(config.heartbeat_interval, s.clock)
    runner = web.AppRunner(
        make_app(s, metrics), access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN
    )
    await runner.setup()
    # With --tls, the dashboard is served over HTTPS with the scheduler's certificate.
    tls = s.tls.server_context() if s.tls else None
    site = web.TCPSite(runner, config.web_host, config.web_port, ssl_context=tls)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    port = runner.addresses[0][1]
    host = config.web_host
    if ipaddress.ip_address(runner.addresses[0][0]).is_unspecified:
        host = socket.getfqdn()  # listening everywhere: name this host in links
    host = f"[{host}]" if ":" in host else host
    url = f"{'https' if tls else 'http'}://{host}:{port}/"
    sampler = asyncio.create_task(metrics.run(partial(worker_infos, s)))
    log.info("web dashboard on %s", url)
    if tls is None and not ipaddress.ip_address(runner.addresses[0][0]).is_loopback:
        log.warning(
            "the web dashboard speaks plain HTTP on a network address: serve it through"
            " a TLS proxy or an SSH tunnel (see docs/web.md)"
        )
    return WebServer(runner, sampler, url)
