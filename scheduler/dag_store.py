"""The tables of workflows (``dags``, ``dag_nodes``, ``dag_edges``): every change of a
DAG or node is written here, in the unit that decides it, before anything acts on it."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from scheduler.database import Database
from scheduler.protocol import JobSpec, from_wire, json_text

#: A node's fields written back on each change.
NODE_FIELDS = ("state", "attempt", "first_proc", "return_code", "reason", "started", "ended")
_SAVE_NODE = (
    f"UPDATE dag_nodes SET {', '.join(f'{n}=?' for n in NODE_FIELDS)} WHERE dag=? AND seq=?"
)
#: Distinct node job lists kept decoded (nodes of one submit file often share one).
SPECS_KEPT = 256
#: A node's stored jobs that are those of an earlier node: this, then its seq (never
#: the start of a JSON list).
SAME_AS = "@"
#: Nodes whose stored jobs one read brings (the node asked for and those after it,
#: most often queued soon after), and the most kept waiting to be asked for.
READ_AHEAD = 256
AHEAD_KEPT = 4 * READ_AHEAD


@dataclass(slots=True)
class NodeRow:
    """A node as the engine keeps it in memory (its jobs' specs stay in SQLite)."""

    seq: int
    name: str
    cluster: int | None
    state: str
    rules: dict[str, Any]
    submit_file: str = ""
    attempt: int = 0
    first_proc: int = 0
    return_code: int | None = None
    reason: str = ""
    started: float | None = None
    ended: float | None = None
    parents: list[int] = field(default_factory=list)
    children: list[int] = field(default_factory=list)
    #: Whether every job of this attempt that ended was seen ending by this process
    #: (then :attr:`failed_job` says which failed first), or its result must be read
    #: from SQLite (the attempt began before a restart).
    watched: bool = False
    #: The first job of this attempt that did not succeed: its id, $RETURN and why.
    failed_job: tuple[str, int, str] | None = None
    #: The number of jobs of this attempt, where it was queued by this process (0:
    #: not known).
    jobs: int = 0


@dataclass(slots=True)
class DagRow:
    id: int
    owner: str
    name: str
    state: str
    created: float
    ended: float | None = None
    reason: str = ""
    settings: dict[str, Any] = field(default_factory=dict)


class DagTables:
    """Reads and writes of the workflow tables, inside the caller's unit."""

    def __init__(self, database: Database):
        self.db = database
        self._specs: dict[str, list[JobSpec]] = {}
        #: (DAG, seq) -> the node's stored jobs, read ahead of their use.
        self._ahead: dict[tuple[int, int], str] = {}

    def insert_dag(self, dag: DagRow, nodes: list[NodeRow], specs: dict[int, str]) -> None:
        with self.db.transaction() as db:
            db.execute(
                "INSERT INTO dags (id, owner, name, state, created, settings) VALUES (?,?,?,?,?,?)",
                (dag.id, dag.owner, dag.name, dag.state, dag.created, json.dumps(dag.settings)),
            )
            db.executemany(
                "INSERT INTO dag_nodes (dag, seq, name, cluster, state, rules, submit_file,"
                " specs) VALUES (?,?,?,?,?,?,?,?)",
                [
                    (
                        dag.id,
                        n.seq,
                        n.name,
                        n.cluster,
                        n.state,
                        json.dumps(n.rules),
                        n.submit_file,
                        specs.get(n.seq, "[]"),
                    )
                    for n in nodes
                ],
            )
            db.executemany(
                "INSERT INTO dag_edges (dag, parent, child) VALUES (?,?,?)",
                [(dag.id, parent, n.seq) for n in nodes for parent in n.parents],
            )

    def reserve_clusters(self, owner: str, now: float, submit_files: list[str]) -> list[int]:
        """A cluster id for each node of ``submit_files``, its row naming that file and
        marked submitted (a restart keeps them; the node's jobs are queued in it
        without writing the row again)."""
        if not submit_files:
            return []
        with self.db.transaction() as db:
            # One statement for all (the ids are those above the largest before it:
            # nothing else is written meanwhile).
            before = db.execute("SELECT COALESCE(MAX(id), 0) FROM clusters").fetchone()[0]
            db.executemany(
                "INSERT INTO clusters (owner, created, submit_file, submitted) VALUES (?,?,?,?)",
                [(owner, now, name, now) for name in submit_files],
            )
            rows = db.execute(
                "SELECT id FROM clusters WHERE id > ? AND owner = ? ORDER BY id", (before, owner)
            ).fetchall()
            ids = [int(row[0]) for row in rows]
            assert len(ids) == len(submit_files), (len(ids), len(submit_files))
            return ids

    # One statement each, inside the caller's unit (no savepoint of their own).

    def close_cluster(self, cluster: int, now: float, submit_file: str | None = None) -> None:
        """Mark a reserved cluster submitted (a node's: naming its submit file)."""
        if submit_file is None:
            self.db.statement("UPDATE clusters SET submitted=? WHERE id=?", (now, cluster))
        else:
            self.db.statement(
                "UPDATE clusters SET submitted=?, submit_file=? WHERE id=?",
                (now, submit_file, cluster),
            )

    def save_node(self, dag: int, node: NodeRow) -> None:
        """Write the node's row in the open unit: queued, as job rows are, and written
        once (however often it changed) before the next read or the commit."""
        values = [getattr(node, name) for name in NODE_FIELDS]
        self.db.replace_later(_SAVE_NODE, (dag, node.seq), (*values, dag, node.seq))

    def save_dag(self, dag: DagRow) -> None:
        self.db.statement(
            "UPDATE dags SET state=?, ended=?, reason=? WHERE id=?",
            (dag.state, dag.ended, dag.reason, dag.id),
        )

    def expire_files(self, before: float) -> list[int]:
        """Mark the DAGs ended before ``before`` whose files are still kept as having
        none (``settings.files_expired``); returns their ids."""
        ids = [
            r["id"]
            for r in self.db.query(
                "SELECT id FROM dags WHERE state IN ('done', 'failed', 'removed')"
                " AND ended <= ? AND json_extract(settings, '$.files_expired') IS NULL",
                (before,),
            )
        ]
        for dag in ids:
            self.db.statement(
                "UPDATE dags SET settings = json_set(settings, '$.files_expired', 1) WHERE id=?",
                (dag,),
            )
        return ids

    def specs(self, dag: int, seq: int) -> list[JobSpec]:
        """A node's jobs; nodes whose jobs are written alike share their (frozen)
        specs, read once."""
        text = self._ahead.pop((dag, seq), None)
        if text is None:
            text = self._read_ahead(dag, seq)
            if text is None:
                return []
        key = f"{dag}{text}" if text.startswith(SAME_AS) else text
        found = self._specs.get(key)
        if found is None:
            if key is not text:
                text = self._stored_specs(dag, int(text[len(SAME_AS) :]))
            found = [from_wire(JobSpec, item, "spec") for item in json.loads(text)]
            if len(self._specs) >= SPECS_KEPT:
                self._specs.pop(next(iter(self._specs)))
            self._specs[key] = found
        return list(found)

    def _stored_specs(self, dag: int, seq: int) -> str:
        """The jobs stored in full in node ``seq``'s row (one that others refer to)."""
        rows = self.db.query("SELECT specs FROM dag_nodes WHERE dag=? AND seq=?", (dag, seq))
        return str(rows[0]["specs"])

    def _read_ahead(self, dag: int, seq: int) -> str | None:
        """The stored jobs of node ``seq``, those of the nodes after it kept for later."""
        rows = self.db.query(
            "SELECT seq, specs FROM dag_nodes WHERE dag=? AND seq>=? ORDER BY seq LIMIT ?",
            (dag, seq, READ_AHEAD),
        )
        if not rows or rows[0]["seq"] != seq:
            return None
        ahead = self._ahead
        for row in rows[1:]:
            ahead[(dag, row["seq"])] = row["specs"]
        while len(ahead) > AHEAD_KEPT:  # those never asked for (nodes that ended else)
            ahead.pop(next(iter(ahead)))
        # What a unit that fails wrote may be read again otherwise.
        self.db.remember(ahead.clear)
        return str(rows[0]["specs"])

    def dags(self, ids: Iterable[int] = (), states: Iterable[str] = ()) -> list[DagRow]:
        where: list[str] = []
        args: list[object] = []
        ids, states = list(ids), list(states)
        if ids:
            where.append(f"id IN ({','.join('?' * len(ids))})")
            args += ids
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            args += states
        sql = "SELECT * FROM dags" + (" WHERE " + " AND ".join(where) if where else "")
        return [
            DagRow(
                id=r["id"],
                owner=r["owner"],
                name=r["name"],
                state=r["state"],
                created=r["created"],
                ended=r["ended"],
                reason=r["reason"],
                settings=json.loads(r["settings"]),
            )
            for r in self.db.query(sql + " ORDER BY id", args)
        ]

    def owned(self, owner: str | None) -> list[int]:
        sql, args = "SELECT id FROM dags", tuple[str, ...]()
        if owner is not None:
            sql, args = sql + " WHERE owner=?", (owner,)
        return [r["id"] for r in self.db.query(sql + " ORDER BY id", args)]

    def nodes(self, dag: int) -> list[NodeRow]:
        rows = self.db.query(
            f"SELECT seq, name, cluster, rules, submit_file, {', '.join(NODE_FIELDS)}"
            " FROM dag_nodes WHERE dag=? ORDER BY seq",
            (dag,),
        )
        nodes = [
            NodeRow(
                seq=r["seq"],
                name=r["name"],
                cluster=r["cluster"],
                rules=json.loads(r["rules"]),
                submit_file=r["submit_file"],
                **{name: r[name] for name in NODE_FIELDS},
            )
            for r in rows
        ]
        for r in self.db.query("SELECT parent, child FROM dag_edges WHERE dag=?", (dag,)):
            nodes[r["child"]].parents.append(r["parent"])
            nodes[r["parent"]].children.append(r["child"])
        return nodes

    def dag_of_cluster(self, cluster: int) -> tuple[int, int] | None:
        """The DAG and node whose jobs are ``cluster``, if any."""
        rows = self.db.query("SELECT dag, seq FROM dag_nodes WHERE cluster=?", (cluster,))
        return (rows[0]["dag"], rows[0]["seq"]) if rows else None


def same_as(seq: int) -> str:
    """The stored jobs of a node whose jobs are those of the earlier node ``seq``."""
    return f"{SAME_AS}{seq}"


def specs_text(specs: list[JobSpec]) -> str:
    """A node's jobs as stored: a JSON list of specs."""
    return "[" + ",".join(json_text(spec) for spec in specs) + "]"
