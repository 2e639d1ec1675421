"""The HTML pages: overview, login, workers, queue, submit, finished jobs, sweeps.

Each page is rendered once on the server; its live parts are then refreshed by
``static/app.js`` from the JSON API (``data-poll`` names the endpoint), the queue's
from the event stream ``/api/events`` (``data-stream``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from scheduler import protocol as p
from scheduler.connection import RequestError
from scheduler.handshake_guard import identity
from scheduler.web import passwords, queue_pages, views
from scheduler.web import submit as web_submit
from scheduler.web.keys import index_of, metrics_of, scheduler_of, sessions_of
from scheduler.web.session import (
    COOKIE,
    WebUser,
    check_token,
    login,
    login_failed,
    require_user,
    set_cookie,
)

routes = web.RouteTableDef()


@routes.get("/")
@aiohttp_jinja2.template("overview.html")
async def overview(request: web.Request) -> dict[str, object]:
    user = require_user(request)
    return {"page": "overview", "data": views.overview(scheduler_of(request), user)}


@routes.get("/login")
@aiohttp_jinja2.template("login.html")
async def login_form(request: web.Request) -> dict[str, object]:
    return {"page": "login", "error": None}


@routes.post("/login")
async def login_submit(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    user, key, who = await _credentials(request, form)
    if user is None or key is None:
        await login_failed(request, scheduler_of(request).guard, who)
        return aiohttp_jinja2.render_template(
            "login.html",
            request,
            {"page": "login", "error": "unknown user, wrong token or wrong password"},
            status=403,
        )
    sid = login(request, sessions_of(request), user, key)
    response = web.HTTPSeeOther("/")
    set_cookie(response, request, sid)
    raise response


async def _credentials(request: web.Request, form: Any) -> tuple[str | None, bytes | None, str]:
    """Who logs in, their token's StoredKey, and the identity the guard counts: from
    a token (a right one is let in even where others failed from this address), or
    a name and password (not tried while that name's wrong guesses are blocked)."""
    scheduler = scheduler_of(request)
    token, name, password = (form.get(k) for k in ("token", "name", "password"))
    if isinstance(token, str) and token.strip():
        found = check_token(scheduler.store, token)
        who = identity(p.Role.CONTROL.value, token.strip().rpartition(":")[0])
        return (*found, who) if found else (None, None, who)
    if isinstance(name, str) and isinstance(password, str) and name and password:
        who = identity("web password", name.strip())
        if scheduler.guard.blocked_for("", who):
            return None, None, who
        record = passwords.lookup(scheduler.store, name.strip())
        loop = asyncio.get_running_loop()
        key = await loop.run_in_executor(None, passwords.verify, record, password)
        return name.strip(), key, who
    return None, None, ""


@routes.post("/logout")
async def logout(request: web.Request) -> web.StreamResponse:
    sessions_of(request).drop(request.get("sid"))
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    request["sid"] = None
    raise response


@routes.get("/workers")
@aiohttp_jinja2.template("workers.html")
async def workers(request: web.Request) -> dict[str, object]:
    user = require_user(request)
    return {"page": "workers", "pool": views.pool(scheduler_of(request), user)}


@routes.get("/workers/{name}")
@aiohttp_jinja2.template("worker.html")
async def worker(request: web.Request) -> dict[str, object]:
    require_user(request)
    name = request.match_info["name"]
    found = views.worker(scheduler_of(request), name)
    return {"page": "workers", "worker": found, "charts": metrics_of(request).charts(name)}


@routes.get("/queue")
@aiohttp_jinja2.template("queue.html")
async def queue(request: web.Request) -> dict[str, object]:
    """A page of the queue, sorted and filtered on the server; the browser then
    follows the changes of its jobs from the event stream."""
    user = require_user(request)
    query = queue_pages.parse_query(user, request.query)
    s = scheduler_of(request)
    data = await queue_pages.queue_page(s, index_of(request), user, query)
    links = {
        "prev": query.params(offset=max(0, query.offset - query.limit)) if query.offset else None,
        "next": query.params(offset=query.offset + query.limit)
        if query.offset + query.limit < data["total"]
        else None,
    }
    sorts = {
        name: query.params(
            sort=name, descending=query.sort == name and not query.descending, offset=0
        )
        for name in queue_pages.SORTS
    }
    return {
        "page": "queue",
        "data": data,
        "query": query,
        "params": query.params(),
        "links": links,
        "sorts": sorts,
        "states": queue_pages.STATES,
    }


@routes.post("/jobs/{id}/{action}")
async def job_action(request: web.Request) -> web.StreamResponse:
    """The hold, release and remove buttons; back to the page they were on."""
    user = require_user(request)
    action = request.match_info["action"]
    if action not in p.ACTIONS:
        raise web.HTTPNotFound()
    reply = views.change(scheduler_of(request), user, action, [request.match_info["id"]])
    form = await request.post()
    back = form.get("next")
    back = back if isinstance(back, str) and back.startswith("/") and "//" not in back else "/queue"
    if reply.skipped:
        job_id, why = next(iter(reply.skipped.items()))
        raise RequestError(f"{job_id} was not changed: it {why}", "conflict")
    raise web.HTTPSeeOther(back)


@routes.get("/submit")
@aiohttp_jinja2.template("submit.html")
async def submit_form(request: web.Request) -> dict[str, object]:
    user = require_user(request)
    workers = _worker_names(request, user)
    return {"page": "submit", "error": None, "submitted": None, "workers": workers}


def _worker_names(request: web.Request, user: WebUser) -> list[str]:
    """The connected workers, for the form's choice of a worker (``client``)."""
    return sorted(w.name for w in views.pool(scheduler_of(request), user).workers)


@routes.post("/submit")
async def submit(request: web.Request) -> web.StreamResponse:
    user = require_user(request)
    context: dict[str, object] = {"page": "submit", "error": None, "submitted": None}
    status = 200
    context["workers"] = _worker_names(request, user)
    try:
        context["submitted"], context["submit_text"] = await web_submit.handle(
            scheduler_of(request), request, user
        )
    except web_submit.FormError as exc:
        context["error"], status = str(exc), 400
    return aiohttp_jinja2.render_template("submit.html", request, context, status=status)


@routes.get("/jobs")
@aiohttp_jinja2.template("jobs.html")
async def finished(request: web.Request) -> dict[str, object]:
    """Finished jobs, newest first, filtered by cluster, days, outcome and user."""
    user = require_user(request)
    q = request.query
    cluster = q.get("cluster", "").strip()
    if cluster and not cluster.isdigit():
        raise RequestError(f"not a cluster id: {cluster!r}", "invalid")
    try:
        days = float(q.get("days") or 1)
    except ValueError:
        raise RequestError(f"days: not a number: {q.get('days')!r}", "invalid") from None
    outcome = q.get("outcome", "")
    found = await views.history(
        scheduler_of(request),
        user,
        ids=[cluster] if cluster else None,
        since=scheduler_of(request).clock() - days * views.DAY if days > 0 else None,
        all_users=q.get("all") == "1",
    )
    if outcome:
        found = [j for j in found if _outcome(j) == outcome]
    filters = {"cluster": cluster, "days": q.get("days") or "1", "outcome": outcome}
    return {"page": "jobs", "jobs": found[::-1], "filters": filters, "all": q.get("all") == "1"}


def _outcome(job: p.JobInfo) -> str:
    if job.state == p.JobState.REMOVED.value:
        return "removed"
    return "ok" if job.exit_code == 0 and job.exit_signal is None else "failed"


@routes.get("/sweeps")
async def sweeps(request: web.Request) -> web.StreamResponse:
    """The sweep form: a cluster id, or a list of the user's recent clusters."""
    user = require_user(request)
    cluster = request.query.get("cluster", "").strip()
    if cluster.isdigit():
        raise web.HTTPSeeOther(f"/clusters/{cluster}")
    rows = views.recent_clusters(scheduler_of(request), user)
    return aiohttp_jinja2.render_template(
        "sweeps.html", request, {"page": "sweeps", "clusters": rows, "asked": cluster}
    )


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_routes(routes)
