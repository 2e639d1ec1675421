"""The web dashboard over plain HTTP (the browser suite is test_web_browser.py): login,
sessions and CSRF, the JSON API's field names, and that one user never reaches another
user's jobs or files."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import TestCluster, wait_until, write
from webtools import Browserless, Response, add_user, web_cluster


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body (csrf first, as the form sends it) and its type."""
    boundary = secrets.token_hex(8)
    parts = []
    for name, value in fields.items():
        disposition = f'Content-Disposition: form-data; name="{name}"'
        parts.append(f"--{boundary}\r\n{disposition}\r\n\r\n{value}\r\n".encode())
    for name, (filename, data) in files.items():
        disposition = f'Content-Disposition: form-data; name="{name}"; filename="{filename}"'
        head = f"--{boundary}\r\n{disposition}\r\nContent-Type: application/octet-stream\r\n\r\n"
        parts.append(head.encode() + data + b"\r\n")
    return b"".join(
        parts
    ) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def submit(client: Browserless, fields: dict[str, str], files: dict[str, tuple[str, bytes]]):
    body, kind = multipart({"csrf": client.csrf("/submit"), **fields}, files)
    return client.request("/submit", body, {"Content-Type": kind})


def test_dashboard_is_off_by_default(cluster: TestCluster) -> None:
    assert "web dashboard" not in cluster.log("scheduler")


def test_login_session_csrf_and_api_fields(
    make_cluster: Callable[..., TestCluster], tmp_path: Path
) -> None:
    cluster, url = web_cluster(make_cluster)
    client = Browserless(url)
    assert client.get("/api/overview").status == 401
    assert client.get("/queue").url.endswith("/login")  # pages send you to the login form
    bad = client.login(cluster.token.rpartition(":")[0] + ":wrong")
    assert bad.status == 403 and "wrong token" in bad.text and cluster.token not in bad.text
    # A form posted without the session's CSRF token is refused, the login form too.
    assert client.post("/login", {"token": cluster.token}).status == 403
    ok = client.login(cluster.token)
    assert ok.status == 200 and ok.url == url
    (cookie,) = [c for c in client.jar if c.name == "dfarm_session"]
    assert cookie.has_nonstandard_attr("HttpOnly")
    assert cookie.get_nonstandard_attr("SameSite") == "Strict"
    assert cookie.value not in ok.text  # the session id is never in a page

    # The API's records are those of the commands' --json.
    workers = client.get("/api/workers").json()
    dstat = json.loads(cluster.run("dstat", "--json").stdout)
    assert sorted(w["name"] for w in workers) == ["w1", "w2"]
    assert set(workers[0]) == set(dstat[0])
    write(tmp_path / "job.sub", "executable = /bin/sleep\narguments = 30\nqueue\n")
    assert cluster.run("dsub", "job.sub", cwd=tmp_path).returncode == 0
    jobs = client.get("/api/jobs?states=all").json()
    dq = json.loads(cluster.run("dq", "--json").stdout)
    assert [j["id"] for j in jobs] == [j["id"] for j in dq] == ["1.0"]
    assert set(jobs[0]) == set(dq[0])
    overview = client.get("/api/overview").json()
    assert overview["workers"] == 2 and overview["slots_total"] == 2
    # The loop-lag monitor runs in the scheduler: a minute's window, filling.
    lag = overview["loop_lag"]
    assert lag["samples"] > 0 and 0 <= lag["p99_ms"] <= lag["max_ms"]

    # Actions need the CSRF token: without it nothing changes.
    assert client.post("/jobs/1.0/hold", {}).status == 403
    assert client.request("/api/jobs/1.0/hold", b"").status == 403
    assert client.get("/api/jobs/1.0").json()["job"]["state"] in ("idle", "running")
    csrf = client.csrf("/queue")
    held = client.request("/api/jobs/1.0/hold", b"", {"X-CSRF-Token": csrf}).json()
    assert held["changed"] == ["1.0"] and held["skipped"] == {}  # as drm --json prints it
    assert client.post("/jobs/1.0/release", {"csrf": csrf}).url.endswith("/queue")
    assert client.get("/api/jobs/1.0").json()["job"]["state"] in ("idle", "running")
    assert client.post("/jobs/1.0/remove", {"csrf": csrf}).status == 200
    assert json.loads(cluster.run("dq", "--json", "--all").stdout)[0]["state"] == "removed"
    counts = client.get("/api/overview").json()["jobs"]
    assert counts == {"idle": 0, "running": 0, "held": 0, "completed": 0, "removed": 1}

    # A script may use a bearer token instead of a session.
    bearer = Browserless(url).get("/api/workers", {"Authorization": f"Bearer {cluster.token}"})
    assert bearer.status == 200 and len(bearer.json()) == 2
    assert Browserless(url).get("/api/workers", {"Authorization": "Bearer x:y"}).status == 401

    assert client.post("/logout", {"csrf": csrf}).url.endswith("/login")
    assert client.get("/api/overview").status == 401

    # A replaced token ends the sessions opened with the old one.
    client.login(cluster.token)
    assert client.get("/api/overview").status == 200
    home = str(cluster.config.home)
    user = cluster.token.rpartition(":")[0]
    assert cluster.run("dfarm", "user", "token", user, "--home", home).returncode == 0
    assert client.get("/api/overview").status == 401
    assert client.get("/").url.endswith("/login")


def test_other_users_jobs_and_files_are_out_of_reach(
    make_cluster: Callable[..., TestCluster], tmp_path: Path
) -> None:
    cluster, url = web_cluster(make_cluster)
    write(tmp_path / "job.sh", "#!/bin/sh\necho secret-output\necho data > out.txt\n", True)
    write(tmp_path / "job.sub", "executable = job.sh\narguments = --secret-arg\nqueue\n")
    done = cluster.run("dsub", "--wait", "--dest", str(tmp_path / "r"), "job.sub", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    alice = Browserless(url)
    alice.login(cluster.token)
    mine = alice.get("/api/jobs/1.0").json()
    assert mine["files"] == ["out.txt"] and "secret-output" in mine["output"]["stdout"]["tail"]
    assert alice.get("/jobs/1.0/files/out.txt").body == b"data\n"
    assert alice.get("/jobs/1.0/stdout").text == "secret-output\n"
    assert alice.get("/jobs/1.0/files/..%2Fstdout").status == 404

    bob = Browserless(url)
    bob.login(add_user(cluster, "bob"))
    for path in [
        "/jobs/1.0", "/jobs/1.0/stdout", "/jobs/1.0/stderr", "/jobs/1.0/files/out.txt",
        "/api/jobs/1.0", "/api/clusters/1/results", "/clusters/1", "/clusters/1/plot.png",
    ]:  # fmt: skip
        got = bob.get(path)
        assert got.status == 404 and "no job of yours" in got.text, path
        assert "secret" not in got.text
    assert bob.get("/api/jobs?ids=1.0&states=all").json() == []
    others = bob.get("/api/history?allusers=1").json()
    assert [j["id"] for j in others] == ["1.0"] and others[0]["arguments"] == []
    assert "--secret-arg" not in bob.get("/jobs?all=1").text
    csrf = bob.csrf("/queue")
    assert bob.request("/api/jobs/1.0/remove", b"", {"X-CSRF-Token": csrf}).status == 404


def test_submit_form_runs_a_job_and_refuses_what_leaves_the_upload(
    make_cluster: Callable[..., TestCluster], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DFARM_WEB_PROBE", "the scheduler's environment")
    cluster, url = web_cluster(make_cluster, workers=1)
    client = Browserless(url)
    client.login(cluster.token)
    script = b'#!/bin/sh\ncat in.txt\necho "args: $*"\necho "home: ${DFARM_WEB_PROBE:-unset}"\n'
    page = submit(
        client,
        {
            "arguments": "a b",
            "request_cpus": "1",
            "request_memory": "10MB",
            "requirements": "Memory >= 1",
        },  # fmt: skip
        {"executable": ("run.sh", script), "data": ("in.txt", b"from the form\n")},
    )
    assert page.status == 200 and "1 job(s) submitted to cluster 1" in page.text, page.text
    assert "requirements = Memory &gt;= 1\n" in page.text  # the submit file it made
    wait_until(lambda: client.get("/api/jobs/1.0").json()["job"]["state"] == "completed",
               timeout=60, what="the job to complete")  # fmt: skip
    out = client.get("/jobs/1.0/stdout").text
    assert out == "from the form\nargs: a b\nhome: unset\n"
    # getenv in a submit file sent through the web sees nothing of the scheduler's.
    getenv = b"executable = run.sh\ntransfer_input_files = in.txt\ngetenv = true\nqueue\n"
    page = submit(client, {}, {"executable": ("run.sh", script), "data": ("in.txt", b"x\n"),
                               "submit_file": ("env.sub", getenv)})  # fmt: skip
    assert "submitted to cluster 2" in page.text, page.text
    wait_until(lambda: client.get("/api/jobs/2.0").json()["job"]["state"] == "completed",
               timeout=60, what="the job to complete")  # fmt: skip
    assert client.get("/jobs/2.0/stdout").text.endswith("home: unset\n")
    # A whole submit file; what it names must be among the uploaded files.
    escape = b"executable = run.sh\ntransfer_input_files = /etc/hostname\nqueue\n"
    refused = submit(
        client, {}, {"executable": ("run.sh", script), "submit_file": ("x.sub", escape)}
    )
    assert refused.status == 400 and "is not one of the uploaded files" in refused.text
    reads = b"executable = run.sh\narguments = $(x)\nqueue x from /etc/passwd\n"
    refused = submit(
        client, {}, {"executable": ("run.sh", script), "submit_file": ("y.sub", reads)}
    )
    assert refused.status == 400 and "submit it with dsub" in refused.text
    typo = submit(client, {"requirements": "Memry >= 1"}, {"executable": ("run.sh", script)})
    (error,) = re.findall(r'id="error">([^<]*)', typo.text)
    assert typo.status == 400 and error.startswith("web.sub:2:") and "Memry" in error
    zero = b"executable = run.sh\nqueue 0\n"
    refused = submit(client, {}, {"executable": ("run.sh", script), "submit_file": ("z.sub", zero)})
    assert refused.status == 400 and "z.sub: the file queues no jobs (queue 0)" in refused.text
    no_exe = submit(client, {"arguments": "x"}, {})
    assert no_exe.status == 400 and "choose an executable" in no_exe.text
    injected = submit(client, {"arguments": "a\nqueue 5"}, {"executable": ("run.sh", script)})
    assert injected.status == 400 and "one line only" in injected.text
    assert [j["id"] for j in client.get("/api/jobs?states=all").json()] == ["1.0", "2.0"]
    assert not list((cluster.config.home / "web-uploads").iterdir())  # nothing left behind
    # A URL input is fetched by the worker, not uploaded (here from a closed port).
    url = b"executable = run.sh\ntransfer_input_files = http://127.0.0.1:1/in.txt\nqueue\n"
    page = submit(client, {}, {"executable": ("run.sh", script), "submit_file": ("u.sub", url)})
    assert "submitted to cluster 3" in page.text, page.text


def test_sweep_page_plot_and_results_api(
    make_cluster: Callable[..., TestCluster], tmp_path: Path
) -> None:
    cluster, url = web_cluster(make_cluster)
    write(tmp_path / "sq.sh", "#!/bin/sh\necho $(($1 * $1))\n", True)
    write(tmp_path / "sweep.sub", "executable = sq.sh\narguments = $(x)\nqueue x in (1 2 3 4)\n")
    done = cluster.run("dsub", "--wait", "--dest", str(tmp_path / "r"), "sweep.sub", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    client = Browserless(url)
    client.login(cluster.token)
    report = client.get("/api/clusters/1/results").json()
    assert report == json.loads(cluster.run("dresults", "--json", "1").stdout)
    assert report["summary"]["value"]["mean"] == 7.5
    page = client.get("/clusters/1")
    assert (
        page.status == 200 and "7.5" in page.text and "/clusters/1/plot.png?key=value" in page.text
    )
    plot = client.get("/clusters/1/plot.png?key=value")
    assert plot.headers["Content-Type"] == "image/png" and plot.body.startswith(b"\x89PNG")
    assert client.get("/clusters/1/plot.png?key=nope").status == 404
    assert client.get("/sweeps?cluster=1").url.endswith("/clusters/1")
    assert client.get("/jobs/1").url.endswith("/clusters/1")  # a cluster's mail links there
    assert 'href="/clusters/1">cluster 1</a> (4 job(s))' in client.get("/sweeps").text
    assert client.get("/clusters/x").status == 400
    chart = client.get("/api/workers/w1").json()["charts"]
    assert [c["key"] for c in chart] == ["load", "slots_used", "cpus_used", "memory_available_mb"]
    w1 = client.get("/workers/w1")
    assert w1.status == 200 and "authenticated by credential" in w1.text
    assert client.get("/workers/nope").status == 404
    finished = client.get("/jobs?outcome=ok&days=0").text
    assert all(f'data-job="1.{i}"' in finished for i in range(4))


def test_dfarm_up_serves_the_dashboard_on_loopback(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DFARM_")}
    up = subprocess.Popen(
        [sys.executable, "-m", "control_node.cli.dfarm", "up", "--workers", "1", "--home",
         str(home), "--web-port", "0"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        line = up.stdout.readline() + up.stdout.readline()
        url = re.search(r"web dashboard: (http://127\.0\.0\.1:\d+/)", line)
        assert url, line
        client = Browserless(url[1])
        token = (home / "local-user.token").read_text().strip()
        assert client.login(token).url == url[1]
        wait_until(lambda: client.get("/api/overview").json()["workers"] == 1)
    finally:
        up.send_signal(signal.SIGTERM)
        out, _ = up.communicate(timeout=30)
    assert up.returncode == 0 and "Traceback" not in out, out
    assert "Traceback" not in (home / "logs" / "scheduler.log").read_text()


def test_a_running_jobs_output_is_read_from_its_worker(
    make_cluster: Callable[..., TestCluster], tmp_path: Path
) -> None:
    cluster, url = web_cluster(make_cluster, workers=1)
    flag = tmp_path / "go"
    write(tmp_path / "talk.sh", f"#!/bin/sh\necho first\necho second\n"
          f"while [ ! -e {flag} ]; do sleep 0.1; done\n", True)  # fmt: skip
    write(tmp_path / "talk.sub", "executable = talk.sh\nqueue\n")
    assert cluster.run("dsub", "talk.sub", cwd=tmp_path).returncode == 0
    client = Browserless(url)
    client.login(cluster.token)

    def said() -> dict:
        chunk = client.get("/api/jobs/1.0/output/stdout").json()
        return chunk if chunk["text"] == "first\nsecond\n" else {}

    chunk = wait_until(said, timeout=30, what="the running job's output")
    assert chunk["running"] and chunk["size"] == 13 and chunk["offset"] == 0
    end = client.get("/api/jobs/1.0/output/stdout?last=7").json()
    assert end["text"] == "second\n" and end["offset"] == 6
    assert 'data-render="output"' in client.get("/jobs/1.0").text
    # A second job waits: the queue says why in dq -analyze's words, the overview
    # shows the fair share of dfarm users.
    assert cluster.run("dsub", "talk.sub", cwd=tmp_path).returncode == 0
    rows = {r["id"]: r for r in client.get("/api/queue").json()["jobs"]}
    assert rows["1.0"]["reason"] == "" and rows["1.0"]["running_for"] >= 0
    analysis = json.loads(cluster.run("dq", "-analyze", "--json", "2.0").stdout)[0]
    assert rows["2.0"]["position"] == analysis["position"] == 1
    assert rows["2.0"]["reason"] == "0 of 1 matching worker(s) free"
    assert analysis["summary"].startswith("Job 2.0 is idle. 1 of 1 connected worker(s)")
    (share,) = client.get("/api/overview").json()["users"]
    users = json.loads(cluster.run("dfarm", "users", "--json").stdout)
    assert set(share) == set(users[0]) and share["idle"] == 1 and share["running"] == 1
    bob = Browserless(url)
    bob.login(add_user(cluster, "bob"))
    assert bob.get("/api/jobs/1.0/output/stdout").status == 404
    assert client.get("/api/jobs/1.0/output/stdout?offset=x").status == 400
    flag.touch()
    wait_until(lambda: client.get("/api/jobs/1.0").json()["job"]["state"] == "completed",
               what="the job to end")  # fmt: skip
    done = client.get("/api/jobs/1.0/output/stdout").json()
    assert done["text"] == "first\nsecond\n" and not done["running"]
    client.request("/api/jobs/2.0/remove", b"", {"X-CSRF-Token": client.csrf("/queue")})


def test_web_password_set_with_dfarm_user(
    make_cluster: Callable[..., TestCluster],
) -> None:
    cluster, url = web_cluster(make_cluster, workers=0)
    home, name = str(cluster.config.home), cluster.token.rpartition(":")[0]

    def set_password(password: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "control_node.cli.dfarm", "user", "password", name,
             "--home", home],
            input=password + "\n", capture_output=True, text=True, timeout=60,
            env=cluster.env(),
        )  # fmt: skip

    short = set_password("short")
    assert short.returncode == 1 and "at least 8 characters" in short.stderr
    assert set_password("correct horse").returncode == 0
    client = Browserless(url)

    def log_in(user: str, password: str) -> Response:
        return client.post("/login", {"csrf": client.csrf(), "name": user, "password": password})

    assert log_in(name, "wrong horse").status == 403
    assert log_in("nobody", "correct horse").status == 403
    assert log_in(name, "correct horse").url == url
    assert client.get("/api/overview").json()["user"] == name
    # A new token voids the password, and the sessions opened with it.
    assert cluster.run("dfarm", "user", "token", name, "--home", home).returncode == 0
    assert client.get("/api/overview").status == 401
    assert log_in(name, "correct horse").status == 403


def test_a_large_output_shows_its_end(
    make_cluster: Callable[..., TestCluster], tmp_path: Path
) -> None:
    cluster, url = web_cluster(make_cluster, workers=1)
    write(tmp_path / "big.sh", "#!/bin/sh\nhead -c 100000 /dev/zero | tr '\\0' x\necho\necho end\n",
          True)  # fmt: skip
    write(tmp_path / "big.sub", "executable = big.sh\nqueue\n")
    done = cluster.run("dsub", "--wait", "--dest", str(tmp_path / "r"), "big.sub", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    client = Browserless(url)
    client.login(cluster.token)
    stdout = client.get("/api/jobs/1.0").json()["output"]["stdout"]
    assert stdout["size"] == 100005 and stdout["truncated"]
    assert len(stdout["tail"]) == 16384 and stdout["tail"].endswith("x\nend\n")
    assert len(client.get("/jobs/1.0/stdout").body) == 100005  # all of it, from the spool


def test_failed_logins_are_counted_with_failed_handshakes(
    make_cluster: Callable[..., TestCluster],
) -> None:
    cluster = make_cluster(
        workers=0, scheduler_args=("--web-port", "0", "--auth-failure-limit", "3")
    )
    url = str(wait_until(cluster.web_url, what="the dashboard's address"))
    client = Browserless(url)
    wrong = cluster.token.rpartition(":")[0] + ":wrong"
    assert client.login(wrong).status == 403
    assert client.login(wrong).status == 403
    assert Browserless(url).get("/api/workers", {"Authorization": "Bearer x:y"}).status == 401
    # The third failure blocks the address's wrong guesses, on the web and the socket ...
    blocked = client.login(wrong)
    assert blocked.status == 429 and "try again in" in blocked.text
    assert int(blocked.headers["Retry-After"]) > 0
    bearer = Browserless(url).get("/api/workers", {"Authorization": f"Bearer {wrong}"})
    assert bearer.status == 429
    dq = cluster.run("dq", env=cluster.env(DFARM_TOKEN=wrong))
    assert dq.returncode != 0 and "too many failed handshakes" in dq.stderr
    # ... while the right token gets in everywhere: others' failures lock no one out.
    assert client.login(cluster.token).url == url
    bearer = Browserless(url).get("/api/workers", {"Authorization": f"Bearer {cluster.token}"})
    assert bearer.status == 200
    assert cluster.run("dq").returncode == 0


def test_submit_form_reads_the_seed_fields_as_dsub_does(
    make_cluster: Callable[..., TestCluster], tmp_path: Path
) -> None:
    cluster, url = web_cluster(make_cluster, workers=2)
    client = Browserless(url)
    client.login(cluster.token)
    # The worker is chosen from the connected ones.
    form = client.get("/submit").text
    assert re.findall(r'<option value="([^"]*)"', form) == ["", "w1", "w2"]
    assert (
        "<code>web 'from browser'</code> gives two arguments" in form
        and 'id="arguments-help"' in form
    )
    script = b'#!/bin/sh\nfor a in "$@"; do echo "[$a]"; done\nhead -n 1 "$1" 2>/dev/null\n'
    # The seed format: the data file is the first argument, as dsub passes it.
    page = submit(client, {"worker": "w2"}, {"executable": ("stats.sh", script),
                                             "data": ("data.csv", b"a,b\n")})  # fmt: skip
    assert "submitted to cluster 1" in page.text, page.text
    write(tmp_path / "stats.sh", script.decode(), True)
    write(tmp_path / "data.csv", "a,b\n")
    write(tmp_path / "seed.sub", "executable = stats.sh\ndata = data.csv\nclient = w2\n")
    assert cluster.run("dsub", "seed.sub", cwd=tmp_path).returncode == 0
    # Arguments in HTCondor's new syntax: single quotes group.
    page = submit(client, {"arguments": "web 'from browser' 'it''s' \"q\""},
                  {"executable": ("stats.sh", script)})  # fmt: skip
    assert "submitted to cluster 3" in page.text, page.text

    def done() -> bool:
        jobs = client.get("/api/jobs?states=all").json()
        return len(jobs) == 3 and all(j["state"] == "completed" for j in jobs)

    wait_until(done, timeout=60, what="the three jobs to complete")
    web, dsub = client.get("/jobs/1.0/stdout").text, client.get("/jobs/2.0/stdout").text
    assert web == dsub == "[data.csv]\na,b\n"
    assert {client.get(f"/api/jobs/{j}").json()["job"]["worker"] for j in ("1.0", "2.0")} == {"w2"}
    assert client.get("/jobs/3.0/stdout").text == '[web]\n[from browser]\n[it\'s]\n["q"]\n'
