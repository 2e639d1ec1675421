"""The JSON API: ``/api/...``, with the records and field names of the commands'
``--json`` (``dq``, ``dstat``, ``dhistory``, ``dresults``). The pages refresh
themselves from it; scripts may use it with ``Authorization: Bearer TOKEN``.

Actions are POSTs that carry the session's CSRF token in ``X-CSRF-Token`` (not
needed with a bearer token).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from scheduler import protocol as p
from scheduler.connection import RequestError
from scheduler.web import jobpages, views
from scheduler.web.keys import metrics_of, scheduler_of
from scheduler.web.session import require_user

routes = web.RouteTableDef()


def _json(data: Any) -> web.Response:
    return web.json_response(p.to_wire(data) if not isinstance(data, dict) else data)


@routes.get("/api/overview")
async def overview(request: web.Request) -> web.Response:
    return _json(views.overview(scheduler_of(request), require_user(request)))


@routes.get("/api/workers")
async def workers(request: web.Request) -> web.Response:
    """``dstat --json``: one record per worker."""
    return _json(views.pool(scheduler_of(request), require_user(request)).workers)


@routes.get("/api/workers/{name}")
async def worker(request: web.Request) -> web.Response:
    """One worker and its charts of the last hour."""
    require_user(request)
    name = request.match_info["name"]
    found = views.worker(scheduler_of(request), name)
    charts = metrics_of(request).charts(name)
    return _json({"worker": p.to_wire(found), "charts": charts})


@routes.get("/api/queue")
async def queue(request: web.Request) -> web.Response:
    """The queue page's data: ``dq --json`` records plus position, reason, running_for."""
    user = require_user(request)
    return _json(views.queue(scheduler_of(request), user, request.query.get("all") == "1"))


@routes.get("/api/jobs")
async def jobs(request: web.Request) -> web.Response:
    """``dq --json``: ``?ids=12,13.0`` and ``?states=idle,held`` (``all`` = every
    state), ``?allusers=1``."""
    user = require_user(request)
    q = request.query
    ids = [i for i in q.get("ids", "").split(",") if i]
    states = q.get("states")
    chosen = None if states is None else [] if states == "all" else states.split(",")
    found = views.jobs(scheduler_of(request), user, ids, chosen, q.get("allusers") == "1")
    return _json(found)


@routes.get("/api/jobs/{id}")
async def job(request: web.Request) -> web.Response:
    """One job of the caller's: its record, events, output tails and output files."""
    user = require_user(request)
    return _json(jobpages.job_details(scheduler_of(request), user, request.match_info["id"]))


@routes.get("/api/jobs/{id}/output/{stream:stdout|stderr}")
async def output(request: web.Request) -> web.Response:
    """``dtail``: a job's output from ``?offset=`` (default: its last ``?last=`` bytes,
    64 KiB), read from the worker while the job runs. The reply is ``dtail --json``'s
    record with ``text``, the bytes decoded as UTF-8."""
    user = require_user(request)
    s, q = scheduler_of(request), request.query
    job_id, stream = request.match_info["id"], request.match_info["stream"]
    try:
        last = int(q.get("last", 65536))
        offset = int(q["offset"]) if "offset" in q else None
    except ValueError:
        raise RequestError("offset and last must be whole numbers", "invalid") from None
    if offset is None:  # ask for the size first, then for the end
        size = (await views.tail(s, user, job_id, stream, 0, 1)).size
        offset = max(0, size - max(1, last))
    chunk = await views.tail(s, user, job_id, stream, offset, max(1, last))
    text = p.unpack_bytes(chunk.data).decode("utf-8", "replace")
    return _json({**p.to_wire(chunk), "text": text})


@routes.post("/api/jobs/{id}/{action}")
async def change(request: web.Request) -> web.Response:
    """Hold, release or remove one job (or cluster): ``drm --json`` and friends."""
    user = require_user(request)
    action = request.match_info["action"]  # an unknown one: on_change_jobs says so
    return _json(views.change(scheduler_of(request), user, action, [request.match_info["id"]]))


@routes.get("/api/history")
async def history(request: web.Request) -> web.Response:
    """``dhistory --json``: ``?since=SECONDS_AGO``, ``?ids=``, ``?allusers=1``."""
    user = require_user(request)
    q = request.query
    try:
        now = scheduler_of(request).clock()
        since = now - float(q["since"]) if "since" in q else None
    except ValueError:
        raise RequestError(f"since: not a number of seconds: {q['since']!r}", "invalid") from None
    ids = [i for i in q.get("ids", "").split(",") if i]
    return _json(views.history(scheduler_of(request), user, ids, since, q.get("allusers") == "1"))


@routes.get("/api/clusters/{cluster}/results")
async def results(request: web.Request) -> web.Response:
    """``dresults --json``: the sweep's table, summary and contributions."""
    user = require_user(request)
    cluster = request.match_info["cluster"]
    sweep = jobpages.sweep_of(scheduler_of(request), user, cluster)
    return _json({"cluster": int(cluster), **sweep.report()})


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_routes(routes)
