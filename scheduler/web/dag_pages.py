"""The dashboard's workflows: ``/dags`` (the caller's DAGs), ``/dags/ID`` (a DAG drawn
as a graph with its node states, and its table of nodes) and ``/api/dags[/ID]``, the
records ``dq -dag --json`` prints."""

from __future__ import annotations

import json
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from scheduler import protocol as p
from scheduler.connection import RequestError
from scheduler.dag_handlers import on_query_dags
from scheduler.web.dag_graph import GraphNode, dag_svg
from scheduler.web.keys import scheduler_of
from scheduler.web.session import require_user

routes = web.RouteTableDef()

#: A node's state as the picture colours it: a queued node's jobs run or wait.
_DRAWN = {"queued": "running", "ready": "idle", "futile": "removed"}


def dags_of(request: web.Request, ids: list[int], nodes: bool) -> list[p.DagInfo]:
    user = require_user(request)
    reply = on_query_dags(scheduler_of(request), user, p.QueryDags(dags=ids, nodes=nodes))
    assert isinstance(reply, p.DagList)
    return reply.dags


def _one(request: web.Request) -> p.DagInfo:
    text = request.match_info["id"]
    if not text.isdigit():
        raise RequestError(f"no DAG {text!r}", "not_found")
    return dags_of(request, [int(text)], True)[0]


def _drawn(node: p.DagNodeInfo) -> str:
    """A queued node is drawn as its jobs are: running, else held, else idle."""
    for state in ("running", "held", "idle"):
        if node.jobs.get(state):
            return state
    return _DRAWN.get(node.state, node.state)


def picture(info: p.DagInfo) -> str:
    """The DAG as SVG: each node's box links to its cluster's jobs."""
    nodes = [GraphNode(n.name, _drawn(n), tuple(n.parents)) for n in info.nodes]
    links = {n.name: f"/clusters/{n.cluster}" for n in info.nodes if n.cluster is not None}
    return dag_svg(nodes, links)


@routes.get("/api/dags")
async def api_dags(request: web.Request) -> web.Response:
    return _json([p.to_wire(d) for d in dags_of(request, [], False)])


@routes.get("/api/dags/{id}")
async def api_dag(request: web.Request) -> web.Response:
    return _json(p.to_wire(_one(request)))


@routes.get("/dags")
@aiohttp_jinja2.template("dags.html")
async def dags_page(request: web.Request) -> dict[str, Any]:
    return {"page": "dags", "dags": [p.to_wire(d) for d in dags_of(request, [], False)]}


@routes.get("/dags/{id}")
@aiohttp_jinja2.template("dag.html")
async def dag_page(request: web.Request) -> dict[str, Any]:
    info = _one(request)
    return {"page": "dags", "dag": p.to_wire(info), "svg": picture(info)}


def _json(data: Any) -> web.Response:
    return web.Response(text=json.dumps(data), content_type="application/json")


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_routes(routes)
