"""A DAG's id where a cluster's is expected: ``dfetch 7`` and ``dresults 7``.

A number names a cluster of the caller's first; one that names none but names a DAG
of theirs stands for the DAG's node clusters (those submitted so far, in the DAG's
order of nodes).
"""

from __future__ import annotations

from control_node.client import Client
from control_node.connection import DfarmError
from control_node.job_queries import query_jobs


def dag_clusters(client: Client, number: int) -> list[int] | None:
    """The node clusters of DAG ``number`` when no job of the caller's is in a cluster
    of that number and the DAG is theirs (or they are an administrator); else None."""
    if query_jobs(client.conn, [str(number)], states=[], limit=1):
        return None
    try:
        found = client.dags(ids=[number], nodes=True)
    except DfarmError:
        return None
    if not found:
        return None
    return [node.cluster for node in found[0].nodes if node.cluster is not None]


def expand_dags(client: Client, ids: list[str]) -> list[str]:
    """``ids`` with each DAG's number replaced by its node clusters (see the module);
    a DAG none of whose nodes has been submitted yet is an error."""
    expanded: list[str] = []
    for name in ids:
        clusters = dag_clusters(client, int(name)) if name.isdigit() else None
        if clusters is None:
            expanded.append(name)
        elif not clusters:
            raise DfarmError(f"DAG {name} has submitted no node yet: no results to fetch")
        else:
            expanded.extend(str(c) for c in clusters)
    return expanded
