"""A job's page with its output, events and downloads; a cluster's sweep results and
their plot. Only a job's owner reaches these (the owner check of ``dtail`` and
``dfetch``); anyone else is told that no job of theirs has that id."""

from __future__ import annotations

import asyncio
import io
import os
import threading
from pathlib import Path
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from control_node.sweep import Sweep
from scheduler import protocol as p
from scheduler.connection import RequestError
from scheduler.job_files import result_file
from scheduler.result_hashes import ResultDamaged, check
from scheduler.run_time import run_time_so_far
from scheduler.selection import owned_job
from scheduler.web import queue_pages, views
from scheduler.web.disposition import attachment
from scheduler.web.keys import index_of, scheduler_of
from scheduler.web.queue_index import QueueIndex
from scheduler.web.session import WebUser, require_user

routes = web.RouteTableDef()
#: Bytes of stdout and stderr shown on a job's page (the whole file is a link away).
TAIL = 16 * 1024
#: matplotlib draws one figure at a time.
_plot_lock = threading.Lock()


def job_details(s: Any, index: QueueIndex, user: WebUser, job_id: str) -> dict[str, Any]:
    """A job of the caller's with its events, output tails and downloadable files."""
    job, info = views.own_job(s, user, job_id)
    expired = (job.cluster, job.proc) in s.store.results.expired_jobs([job.cluster])
    # The job's small result files, read once for the page (result_file needs none
    # for a job that has not completed).
    small = (
        s.store.results.files(job.cluster, job.proc) if job.state is p.JobState.COMPLETED else {}
    )
    streams = {}
    for stream in ("stdout", "stderr"):
        found = None if expired else result_file(s.store, s.spool, job, stream, small)
        size, data = _tail(found)
        streams[stream] = {
            "size": size,
            "tail": data.decode("utf-8", "replace"),
            "truncated": size > len(data),
        }
    files = [] if expired else [n for n in info.output_files if _file(s, job, n, small) is not None]
    events = s.store.events(job.cluster, job.proc)
    # A finished run's wall time, else the time run so far (a running job, or one
    # held, evicted or retried after it ran).
    run_time = info.wall_time if info.wall_time is not None else run_time_so_far(events, s.clock())
    waiting = info.state in (p.JobState.IDLE.value, p.JobState.HELD.value)
    # dq -analyze's words, its place in line counted from the index, not the queue.
    analysis = queue_pages.analyses(s, index, [job])[0] if waiting else None
    return {
        "job": p.to_wire(info),
        "run_time": run_time,
        "why": analysis.summary if analysis else "",
        "events": [p.to_wire(e) for e in events],
        "output": streams,
        "files": files,
        "expired": expired,
    }


def _tail(found: bytes | Path | None) -> tuple[int, bytes]:
    """The size of a result file and its last :data:`TAIL` bytes (a large one is not
    read whole)."""
    if found is None:
        return 0, b""
    if isinstance(found, bytes):
        return len(found), found[-TAIL:]
    try:
        with open(found, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - TAIL))
            return size, f.read(TAIL)
    except OSError:
        return 0, b""


def _file(
    s: Any, job: Any, name: str, small: dict[str, bytes] | None = None
) -> bytes | Path | None:
    return result_file(s.store, s.spool, job, f"outputs/{name}", small)


@routes.get("/jobs/{id}")
@aiohttp_jinja2.template("job.html")
async def job_page(request: web.Request) -> dict[str, object]:
    user = require_user(request)
    if request.match_info["id"].isdigit():  # a cluster (the link in a cluster's mail)
        raise web.HTTPFound(f"/clusters/{request.match_info['id']}")
    found = job_details(scheduler_of(request), index_of(request), user, request.match_info["id"])
    return {"page": "jobs", **found}


@routes.get("/jobs/{id}/{stream:stdout|stderr}")
async def job_stream(request: web.Request) -> web.StreamResponse:
    """A finished job's whole stdout or stderr, as text."""
    user = require_user(request)
    s = scheduler_of(request)
    job = owned_job(s, user, request.match_info["id"])
    stream = request.match_info["stream"]
    found = await _checked(s, job, stream, result_file(s.store, s.spool, job, stream))
    return _send(found, None, "text/plain; charset=utf-8")


@routes.get("/jobs/{id}/files/{name}")
async def job_file(request: web.Request) -> web.StreamResponse:
    """Download one output file of a finished job."""
    user = require_user(request)
    s = scheduler_of(request)
    job = owned_job(s, user, request.match_info["id"])
    name = request.match_info["name"]
    if name not in job.output_files:
        raise RequestError(f"job {job.id} has no output file {name!r}", "not_found")
    found = await _checked(s, job, f"outputs/{name}", _file(s, job, name))
    return _send(found, name, "application/octet-stream")


async def _checked(s: Any, job: Any, name: str, found: bytes | Path | None) -> bytes | Path | None:
    """``found``, a result file of ``job``, once it matches the hash recorded when it
    arrived (checked in a thread); a RequestError naming it when it does not."""
    expected = s.store.results.hashes(job.cluster, job.proc).get(name)
    if expected is None or isinstance(found, bytes):
        return found
    path = s.spool.job_dir(job.cluster, job.proc) / name if found is None else found
    try:
        await asyncio.to_thread(check, path, expected, f"{name} of job {job.id}")
    except ResultDamaged as exc:
        raise RequestError(str(exc), "damaged") from None
    return found


def _send(found: bytes | Path | None, name: str | None, kind: str) -> web.StreamResponse:
    if found is None:
        raise RequestError("that file is not there (job not finished, or cleaned)", "not_found")
    headers = {"Content-Disposition": attachment(name)} if name else {}
    if isinstance(found, Path):
        return web.FileResponse(found, headers={**headers, "Content-Type": kind})
    return web.Response(body=found, headers={**headers, "Content-Type": kind})


def sweep_of(s: Any, user: WebUser, cluster: str) -> Sweep:
    """The caller's jobs of ``cluster`` as a sweep (``dresults``)."""
    if not cluster.isdigit():
        raise RequestError(f"not a cluster id: {cluster!r}", "invalid")
    found = views.jobs(s, user, [cluster], states=[])
    if not found:
        raise RequestError(f"no job of yours in cluster {cluster}", "not_found")
    return Sweep(found)


@routes.get("/clusters/{cluster}")
@aiohttp_jinja2.template("sweep.html")
async def sweep_page(request: web.Request) -> dict[str, object]:
    user = require_user(request)
    cluster = request.match_info["cluster"]
    sweep = sweep_of(scheduler_of(request), user, cluster)
    return {"page": "sweeps", "cluster": cluster, "report": sweep.report(), "sweep": sweep}


@routes.get("/clusters/{cluster}/plot.png")
async def sweep_plot(request: web.Request) -> web.StreamResponse:
    """The density plot of ``dresults --plot``, drawn on demand (``?key=`` picks the
    result key; default the first)."""
    user = require_user(request)
    cluster = request.match_info["cluster"]
    sweep = sweep_of(scheduler_of(request), user, cluster)
    key = request.query.get("key") or (sweep.keys[0] if sweep.keys else None)
    if key is None or key not in sweep.keys:
        raise RequestError(f"cluster {cluster} has no results to plot (yet)", "not_found")
    png = await asyncio.get_running_loop().run_in_executor(None, _draw, sweep, key, cluster)
    return web.Response(body=png, content_type="image/png")


def _draw(sweep: Sweep, key: str, cluster: str) -> bytes:
    from control_node.sweep_plot import plot_sweep  # matplotlib only when plotting

    out = io.BytesIO()
    with _plot_lock:
        plot_sweep(sweep, key, out, f"cluster {cluster}: {key}")
    return out.getvalue()


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_routes(routes)
