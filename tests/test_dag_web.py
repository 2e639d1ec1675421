"""A DAG on the dashboard: its graph (SVG, no scripts) with node states, its table, and
``/api/dags`` giving the records ``dq -dag --json`` prints."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from conftest import TestCluster, write
from test_dag_run import counting_job
from webtools import Browserless, add_user, web_cluster


def test_the_dashboard_draws_a_dag_and_serves_its_records(
    make_cluster: Callable[..., TestCluster], tmp_path: Path
) -> None:
    cluster, url = web_cluster(make_cluster, workers=1)
    counting_job(tmp_path)
    write(
        tmp_path / "web.dag",
        'JOB A count.sub\nVARS A code="3" good_at="9"\n'
        'JOB B count.sub\nVARS B code="0" good_at="1"\nPARENT A CHILD B\n',
    )
    assert cluster.run("dsub_dag", "--wait", "web.dag", cwd=tmp_path).returncode == 1
    client = Browserless(url)
    client.login(cluster.token)
    page = client.get("/dags/1")
    assert page.status == 200
    assert "<svg" in page.text and "<script" not in page.text.split("<svg", 1)[1].split("</svg>")[0]
    assert 'id="dag-nodes"' in page.text and "exited with 3" in page.text
    record = client.get("/api/dags/1").json()
    shown = json.loads(cluster.run("dq", "-dag", "1", "--json").stdout)[0]
    assert record == shown
    assert [n["state"] for n in record["nodes"]] == ["failed", "futile"]
    assert [d["id"] for d in client.get("/api/dags").json()] == [1]
    assert "/dags/1" in client.get("/dags").text
    other = Browserless(url)
    other.login(add_user(cluster, "mallory"))
    assert other.get("/api/dags/1").status == 404
    assert other.get("/api/dags").json() == []
