"""The handles :class:`~control_node.client.Client` gives back for what it submitted:
a :class:`Cluster` of jobs and a :class:`DagRun` (a workflow)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from control_node import results
from control_node.results_file import results_path
from scheduler import protocol as p

if TYPE_CHECKING:
    from control_node.client import Client
    from control_node.sweep import Sweep

__all__ = ["Cluster", "DagRun", "cluster_id"]


def cluster_id(item: Cluster | DagRun | int) -> int:
    return item if isinstance(item, int) else item.id


class DagRun:
    """A submitted workflow."""

    def __init__(self, client: Client, dag: int, clusters: dict[str, int], warnings: list[str]):
        self.client = client
        self.id = dag
        #: The cluster of each node that runs jobs.
        self.clusters = clusters
        self.warnings = warnings

    def __repr__(self) -> str:
        return f"DagRun({self.id}, {len(self.clusters)} nodes with jobs)"

    def status(self) -> p.DagInfo:
        return self.client.dags([self.id])[0]

    def wait(self, timeout: float | None = None) -> p.DagInfo:
        """Block until the DAG has ended (done, failed or removed); its record."""
        self.client.wait([str(self.id)], timeout=timeout)
        return self.status()

    def remove(self, reason: str = "") -> p.JobsChanged:
        return self.client.remove([str(self.id)], reason=reason)

    def hold(self, reason: str = "") -> p.JobsChanged:
        return self.client.hold([str(self.id)], reason=reason)

    def release(self) -> p.JobsChanged:
        return self.client.release([str(self.id)])

    def rerun_failed(self) -> p.DagSubmitted:
        """Run again the nodes that did not succeed (``dsub-dag --rerun-failed``)."""
        reply = self.client.conn.request(p.RerunDag(dag=self.id))
        assert isinstance(reply, p.DagSubmitted)
        return reply


class Cluster:
    """The jobs of one submission."""

    def __init__(self, client: Client, cluster: int, job_ids: list[str], warnings: list[str]):
        self.client = client
        self.id = cluster
        self.job_ids = job_ids
        self.warnings = warnings

    def __repr__(self) -> str:
        return f"Cluster({self.id}, {len(self.job_ids)} jobs)"

    def status(self) -> list[p.JobInfo]:
        return self.client.jobs([str(self.id)], states=[])

    def wait(self, timeout: float | None = None, progress: bool = False) -> list[p.JobInfo]:
        """Block until every job is completed, removed or held; ``progress`` draws
        counts and a bar on stderr (a terminal or a notebook) while waiting."""
        from control_node import render

        show = render.progress_bar(sys.stderr, always=True) if progress else None
        jobs = self.client.wait([str(self.id)], timeout=timeout, on_update=show)
        if show is not None:
            sys.stderr.write("\n")
        return jobs

    def results(
        self, dest: str | os.PathLike[str] | None = None, per_job: bool = False
    ) -> list[results.FetchedJob]:
        """Download every finished job's results (see :meth:`Client.fetch`)."""
        return self.client.fetch([str(self.id)], dest=dest, per_job=per_job)

    def results_file(self, dest: str | os.PathLike[str] | None = None) -> Path:
        """Where :meth:`results` (or ``dsub --wait``) put this cluster's results file."""
        return results_path(Path.cwd() if dest is None else Path(dest), self.id)

    def remove(self, reason: str = "") -> p.JobsChanged:
        """Remove the cluster's jobs; running ones are killed."""
        return self.client.remove([str(self.id)], reason=reason)

    def hold(self, reason: str = "") -> p.JobsChanged:
        """Hold the cluster's idle and running jobs."""
        return self.client.hold([str(self.id)], reason=reason)

    def release(self) -> p.JobsChanged:
        """Release the cluster's held jobs."""
        return self.client.release([str(self.id)])

    def sweep(self) -> Sweep:
        """Each job's parameters and result so far, with summary statistics."""
        from control_node.sweep import Sweep

        return Sweep(self.client.cluster_jobs(self.id))
