"""The dashboard on a deep queue (20,000 jobs that no worker can run): the queue's
API and page come in pages, sorted and filtered on the server, and walking them
gives the whole queue; the open page shows a job's change pushed by the event
stream (nothing polls); a user's stream never carries another user's jobs.

Behaviour only: the speed is measured in the bench, not asserted here.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TestCluster, write
from test_web_browser import CHROMIUM, browser, log_in  # noqa: F401  (the fixture)
from webtools import Browserless, add_user, web_cluster

DEEP = 20_000

pytestmark = pytest.mark.slow


def _walk(client: Browserless, path: str, limit: int) -> tuple[list[dict[str, Any]], set[int]]:
    """Every row of a paged ``/api/queue`` answer, page after page; the totals seen."""
    rows: list[dict[str, Any]] = []
    totals = set()
    while True:
        page = client.get(f"{path}&offset={len(rows)}&limit={limit}").json()
        totals.add(page["total"])
        assert len(page["jobs"]) <= limit
        if not page["jobs"]:
            return rows, totals
        rows += page["jobs"]


def _events(url: str, token: str) -> Iterator[tuple[str, Any]]:
    """The events of ``/api/events`` as ``token``'s user hears them."""
    request = urllib.request.Request(
        url + "api/events", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=60) as stream:
        event = ""
        for raw in stream:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                yield event, json.loads(line[6:])


@pytest.fixture
def deep(make_cluster: Callable[..., TestCluster], tmp_path: Path) -> tuple[TestCluster, str, str]:
    """A cluster with DEEP idle jobs of its user (cluster 1) and three of bob's
    (cluster 2), none of which fits its worker; the dashboard's URL and bob's token."""
    cluster, url = web_cluster(make_cluster, workers=1)
    write(tmp_path / "deep.sub", f"executable = /bin/true\nrequest_memory = 400GB\nqueue {DEEP}\n")
    done = cluster.run("dsub", "deep.sub", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    bob = add_user(cluster, "bob")
    write(tmp_path / "bob.sub", "executable = /bin/true\nrequest_memory = 400GB\nqueue 3\n")
    done = cluster.run("dsub", "bob.sub", cwd=tmp_path, env=cluster.env(DFARM_TOKEN=bob))
    assert done.returncode == 0, done.stderr
    return cluster, url, bob


def test_deep_queue_pages_walk_to_the_whole_queue(deep: tuple[TestCluster, str, str]) -> None:
    cluster, url, bob = deep
    client = Browserless(url)
    client.login(cluster.token)
    mine = {f"1.{i}" for i in range(DEEP)}

    rows, totals = _walk(client, "/api/queue?sort=id", 500)
    assert totals == {DEEP} and [r["id"] for r in rows] == sorted(mine, key=_key)
    assert all(r["mine"] and r["state"] == "idle" for r in rows)
    first = client.get("/api/queue?limit=3").json()
    # Bob's three jobs come first (the same usage, and his name sorts first).
    analysis = json.loads(cluster.run("dq", "-analyze", "--json", "1.0").stdout)[0]
    assert [r["position"] for r in first["jobs"]] == [4, 5, 6] and analysis["position"] == 4
    assert first["jobs"][0]["reason"].startswith("no connected worker can run it")
    assert first["counts"] == {"running": 0, "idle": DEEP, "held": 0}
    last = client.get("/api/queue?sort=-id&limit=1").json()["jobs"][0]
    assert last["id"] == f"1.{DEEP - 1}" and last["position"] == DEEP + 3

    # Every user's, by owner: bob's three before all of ours, without their commands.
    rows, totals = _walk(client, "/api/queue?all=1&sort=owner", 500)
    assert totals == {DEEP + 3} and len({r["id"] for r in rows}) == DEEP + 3
    assert [r["owner"] for r in rows[:4]] == ["bob"] * 3 + [cluster.token.partition(":")[0]]
    assert rows[0]["executable"] == "" and not rows[0]["mine"]

    # Filters: state, cluster, text; a held job is found by each.
    assert cluster.run("dhold", "1.12345").returncode == 0
    held = client.get("/api/queue?state=held").json()
    assert held["total"] == 1 and held["jobs"][0]["id"] == "1.12345"
    idle, _ = _walk(client, "/api/queue?state=idle,running&sort=-id", 500)
    assert len(idle) == DEEP - 1 and "1.12345" not in {r["id"] for r in idle}
    assert client.get("/api/queue?all=1&cluster=2").json()["total"] == 3
    found = client.get("/api/queue?q=1.1234").json()  # 1.1234 and 1.12340 to 1.12349
    assert found["total"] == 11 and {r["id"] for r in found["jobs"]} >= {"1.1234", "1.12345"}
    assert client.get("/api/queue?all=1&q=true").json()["total"] == DEEP  # not bob's
    assert client.get("/api/queue?limit=100000").status == 400

    # /api/jobs and /api/history page too.
    seen: list[str] = []
    while True:
        answer = client.get(f"/api/jobs?offset={len(seen)}&limit=500")
        assert answer.headers["X-Total-Count"] == str(DEEP)
        if not answer.json():
            break
        seen += [j["id"] for j in answer.json()]
    assert seen == sorted(mine, key=_key)
    end = client.get(f"/api/jobs?ids=1&offset={DEEP - 10}")  # one cluster's, from the index
    assert [j["id"] for j in end.json()] == [f"1.{i}" for i in range(DEEP - 10, DEEP)]
    assert end.headers["X-Total-Count"] == str(DEEP)
    assert [j["id"] for j in client.get("/api/jobs?ids=1.6,1.5&states=all").json()] == [
        "1.5",
        "1.6",
    ]
    assert cluster.run("drm", "1.7", "1.8", "1.9").returncode == 0
    newest = client.get("/api/history?limit=2")
    assert [j["id"] for j in newest.json()] == ["1.8", "1.9"] and newest.headers["X-More"] == "1"
    oldest = client.get("/api/history?limit=2&" + newest.headers["X-Next"])
    assert [j["id"] for j in oldest.json()] == ["1.7"] and oldest.headers["X-More"] == "0"
    assert client.get("/api/history?limit=2&offset=2").status == 400  # pages by X-Next
    # With finished states, /api/jobs pages from where the page before ended.
    seen, after = [], ""
    while True:
        answer = client.get(f"/api/jobs?states=all&limit=500&after={after}")
        seen += [j["id"] for j in answer.json()]
        if answer.headers["X-More"] == "0":
            break
        after = answer.headers["X-Next"].removeprefix("after=")
    assert seen == sorted(mine, key=_key)
    removed = client.get("/api/jobs?states=removed,completed&ids=1")
    assert [j["id"] for j in removed.json()] == ["1.7", "1.8", "1.9"]
    assert client.get("/api/jobs?states=removed&offset=1").status == 400
    assert client.get("/api/jobs?ids=1.5&after=1.4").status == 400  # named jobs: no pages

    # The page: the first rows, and links to the next ones.
    page = client.get("/queue?sort=id").text
    assert page.count('<tr data-job="') == 50 and f'<span id="total">{DEEP - 3}</span>' in page
    assert 'id="next"' in page and 'id="prev"' not in page
    assert "1.10" in client.get("/queue?sort=id&offset=7").text


def test_the_open_page_follows_pushed_changes_and_streams_are_private(
    deep: tuple[TestCluster, str, str],
    browser: object,  # noqa: F811
) -> None:
    from playwright.sync_api import expect

    cluster, url, bob = deep
    page = log_in(browser, url, cluster.token)
    page.goto(url + "queue?sort=id")
    expect(page.locator("#queue tbody tr")).to_have_count(50)
    expect(page.locator("#total")).to_have_text(str(DEEP))
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))

    # A change made elsewhere shows in its row: pushed, not polled.
    row = page.locator('#queue tr[data-job="1.3"]')
    assert cluster.run("dhold", "1.3").returncode == 0
    expect(row.locator(".state")).to_have_text("held")
    expect(row).to_contain_text("release")
    assert not [r for r in requests if "/api/queue" in r]  # the row changed before any read
    assert cluster.run("drm", "1.4").returncode == 0
    expect(page.locator('#queue tr[data-job="1.4"] .state')).to_have_text("removed")
    # Then the page is read again (one page): counts and rows follow.
    expect(page.locator('[data-count="held"]')).to_have_text("1")
    expect(page.locator("#total")).to_have_text(str(DEEP - 1))
    expect(page.locator('#queue tr[data-job="1.4"]')).to_have_count(0)
    assert len([r for r in requests if "/api/queue" in r]) <= 3

    # Sorting and paging through the page's links.
    page.click("a.sort[data-sort=id]")  # now descending
    expect(page.locator("#queue tbody tr").first).to_have_attribute("data-job", f"1.{DEEP - 1}")
    page.click("#next")
    expect(page.locator("#first")).to_have_text("51")

    # Bob's stream carries his jobs only, though ours change first.
    events = _events(url, bob)
    assert next(events)[0] == "hello"
    assert cluster.run("dhold", "1.5").returncode == 0
    assert cluster.run("dhold", "2.1", env=cluster.env(DFARM_TOKEN=bob)).returncode == 0
    heard = []
    for kind, data in events:
        if kind == "jobs":
            heard += [j["id"] for j in data["jobs"]]
            if "2.1" in heard:
                break
    assert heard == ["2.1"]


def _key(job_id: str) -> tuple[int, int]:
    cluster, proc = job_id.split(".")
    return int(cluster), int(proc)
