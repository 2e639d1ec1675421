"""The JSON API: ``/api/...``, with the records and field names of the commands'
``--json`` (``dq``, ``dstat``, ``dhistory``, ``dresults``). The pages refresh
themselves from it and from the event stream ``/api/events``; scripts may use it
with ``Authorization: Bearer TOKEN``. Lists of jobs come in pages (at most
:data:`~scheduler.web.queue_pages.MAX_PAGE` jobs; the queue's by ``offset``, finished
jobs from where the page before ended, as its ``X-Next`` header says), each answer
costing its page, not the queue or the history.

Actions are POSTs that carry the session's CSRF token in ``X-CSRF-Token`` (not
needed with a bearer token).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from scheduler import protocol as p
from scheduler.connection import RequestError
from scheduler.job_control import HISTORY_PAGE
from scheduler.selection import visible
from scheduler.web import events, jobpages, queue_pages, views
from scheduler.web.keys import index_of, metrics_of, scheduler_of, sessions_of, streams_of
from scheduler.web.session import require_user, still_logged_in

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
    """A page of the queue: ``dq --json`` records plus position, reason, running_for,
    mine; ``total`` matching, ``counts`` per state. ``?all=1`` or ``?owner=NAME``,
    ``?state=idle,held``, ``?cluster=N``, ``?q=TEXT``, ``?sort=[-]id|state|owner``,
    ``?offset=``, ``?limit=``."""
    user = require_user(request)
    query = queue_pages.parse_query(user, request.query)
    s = scheduler_of(request)
    return _json(await queue_pages.queue_page(s, index_of(request), user, query))


@routes.get("/api/events")
async def event_stream(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: ``jobs`` (the caller's changed jobs, an admin's: every
    job's), ``resync`` (changes were lost: read the page again), ``logout``."""
    user = require_user(request)
    s = scheduler_of(request)
    sessions = sessions_of(request)
    return await events.serve(
        request, s, streams_of(request), user, lambda: still_logged_in(request, sessions, s.store)
    )


@routes.get("/api/jobs")
async def jobs(request: web.Request) -> web.Response:
    """``dq --json``: ``?ids=12,13.0`` and ``?states=idle,held`` (``all`` = every
    state), ``?allusers=1``; a page of them in id order (``?limit=``). Jobs in the
    queue page by ``?offset=``, and the header ``X-Total-Count`` says how many match;
    with finished states, a page starts after the job ``?after=ID``: ``X-More: 1``
    says more match and ``X-Next`` is the query's next ``after``."""
    user = require_user(request)
    q = request.query
    offset, limit = _page(q)
    ids = [i for i in q.get("ids", "").split(",") if i]
    states = q.get("states")
    chosen = None if states is None else [] if states == "all" else states.split(",")
    s = scheduler_of(request)
    all_users = q.get("allusers") == "1"
    one_cluster = len(ids) == 1 and ids[0].isdigit()
    in_queue = chosen is None or (chosen and set(chosen) <= set(queue_pages.STATES))
    if (not ids or one_cluster) and in_queue and "after" not in q:
        # The queue's jobs (of one cluster), from the index: the cost of the page.
        owner = None if all_users else user.name
        chosen_states = queue_pages.STATES if chosen is None else tuple(chosen)
        cluster = int(ids[0]) if ids else None
        page = index_of(request).page(owner, chosen_states, cluster, "id", False, offset, limit)
        infos = [visible(user, job) for job in map(s.jobs.active.get, page.keys) if job]
        found = s.mailer.annotate(infos, user.name)
        response = _json(found)
        response.headers["X-Total-Count"] = str(page.total)
        return response
    if all(i.isdigit() for i in ids):
        # Whole clusters or none, finished jobs among them: read from ``after`` on.
        if offset:
            raise RequestError(
                "offset: with finished states /api/jobs pages with after=ID"
                " (the X-Next header of the page before)",
                "invalid",
            )
        found, more = views.job_page(s, user, ids, chosen, all_users, q.get("after", ""), limit)
        response = _json(found)
        response.headers["X-More"] = "1" if more else "0"
        if more and found:
            response.headers["X-Next"] = urlencode({"after": found[-1].id})
        return response
    # Jobs named one by one: as many as named.
    if "after" in q:
        raise RequestError("after: only with whole clusters (ids=12,13) or none", "invalid")
    found = views.jobs(s, user, ids, chosen, all_users)
    response = _json(found[offset : offset + limit])
    response.headers["X-Total-Count"] = str(len(found))
    return response


def _page(q: Any) -> tuple[int, int]:
    """``?offset=`` and ``?limit=`` (default and most: a page of ``MAX_PAGE``)."""
    try:
        offset = int(q.get("offset") or 0)
        limit = int(q.get("limit") or queue_pages.MAX_PAGE)
    except ValueError:
        raise RequestError("offset and limit must be whole numbers", "invalid") from None
    if offset < 0 or not 1 <= limit <= queue_pages.MAX_PAGE:
        raise RequestError(
            f"offset must be >= 0 and limit from 1 to {queue_pages.MAX_PAGE}", "invalid"
        )
    return offset, limit


@routes.get("/api/jobs/{id}")
async def job(request: web.Request) -> web.Response:
    """One job of the caller's: its record, events, output tails and output files."""
    user = require_user(request)
    found = jobpages.job_details(
        scheduler_of(request), index_of(request), user, request.match_info["id"]
    )
    return _json(found)


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
    """``dhistory --json``: ``?since=SECONDS_AGO``, ``?ids=``, ``?allusers=1``; the
    most recently ended first, a page at a time (``?limit=``, at most
    :data:`~scheduler.job_control.HISTORY_PAGE`), each page the most recent last.
    ``X-More: 1`` says there are older ones, and ``X-Next`` is the query of the next
    page back: ``before_time=T&before_job=ID``, the oldest job of this page."""
    user = require_user(request)
    q = request.query
    if q.get("offset", "0") != "0":
        raise RequestError(
            "offset: /api/history pages back with before_time and before_job"
            " (the X-Next header of the page before)",
            "invalid",
        )
    try:
        limit = int(q.get("limit") or HISTORY_PAGE)
        now = scheduler_of(request).clock()
        since = now - float(q["since"]) if "since" in q else None
        before_time = float(q["before_time"]) if "before_time" in q else None
    except ValueError:
        raise RequestError(
            "limit must be a whole number, since and before_time numbers", "invalid"
        ) from None
    if not 1 <= limit <= HISTORY_PAGE:
        raise RequestError(f"limit must be from 1 to {HISTORY_PAGE}", "invalid")
    before = None if before_time is None else (before_time, q.get("before_job", ""))
    ids = [i for i in q.get("ids", "").split(",") if i]
    found, more = views.history_page(
        scheduler_of(request), user, ids, since, q.get("allusers") == "1", before, limit
    )
    response = _json(found)
    response.headers["X-More"] = "1" if more else "0"
    if more and found and found[0].end_time is not None:
        response.headers["X-Next"] = urlencode(
            {"before_time": repr(found[0].end_time), "before_job": found[0].id}
        )
    return response


@routes.get("/api/clusters/{cluster}/results")
async def results(request: web.Request) -> web.Response:
    """``dresults --json``: the sweep's table, summary and contributions."""
    user = require_user(request)
    cluster = request.match_info["cluster"]
    sweep = jobpages.sweep_of(scheduler_of(request), user, cluster)
    return _json({"cluster": int(cluster), **sweep.report()})


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_routes(routes)
