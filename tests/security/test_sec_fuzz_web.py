"""Hostile input on the dashboard's port: requests that are not HTTP, forms that are
not what they claim, tokens and CSRF values beyond ASCII. Each is refused with a 4xx
status and at most one line of log (no traceback); the dashboard keeps answering."""

from __future__ import annotations

import re
import socket
import urllib.parse
from collections.abc import Callable

from conftest import TestCluster
from webtools import Browserless, web_cluster

#: How each line of the scheduler's log starts.
LOG_LINE = re.compile(r"20\d\d-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ +[a-z_.]+: ")
NOT_HTTP = [
    b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"b" * 10_000 + b"\r\n\r\n",
    b"\x00\xff\xfe garbage \x1b[31m\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
]


def raw_status(url: str, request: bytes) -> int:
    """The status of the answer to ``request`` sent as it is."""
    parts = urllib.parse.urlsplit(url)
    assert parts.hostname and parts.port
    with socket.create_connection((parts.hostname, parts.port), timeout=20) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n" not in answer and (chunk := sock.recv(4096)):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def test_hostile_http_is_refused_in_one_line(make_cluster: Callable[..., TestCluster]) -> None:
    cluster, url = web_cluster(make_cluster, workers=0)
    alice = Browserless(url)
    alice.login(cluster.token)
    log = cluster.logs / "scheduler.log"
    for request in NOT_HTTP:
        start = log.stat().st_size
        assert raw_status(url, request) == 400, request[:40]
        with open(log, "rb") as f:
            f.seek(start)
            assert len(f.read().splitlines()) <= 1, request[:40]
        assert alice.get("/api/overview").status == 200

    csrf = alice.csrf("/submit")
    forms = [  # (path, body, headers, status)
        ("/submit", urllib.parse.urlencode({"csrf": csrf, "text": "queue"}).encode(),
         {"Content-Type": "application/x-www-form-urlencoded"}, 400),
        ("/submit", b"--xyz\r\ngarbage\r\n", {"Content-Type": "multipart/form-data; boundary=xyz"},
         400),
        ("/logout", urllib.parse.urlencode({"csrf": "\u00e9" * 40}).encode(),
         {"Content-Type": "application/x-www-form-urlencoded"}, 403),
        ("/logout", b"", {"X-CSRF-Token": "\u00e9" * 40}, 403),
    ]  # fmt: skip
    for path, body, headers, status in forms:
        got = alice.request(path, body, headers)
        assert got.status == status, (path, headers, got.status, got.text[:300])
    assert "multipart/form-data" in alice.request(*forms[0][:3]).text

    stranger = Browserless(url)
    for token in ["\u00e9:\u00e9", "a" * 5000, ":"]:
        got = stranger.get("/api/workers", {"Authorization": f"Bearer {token}"})
        assert got.status == 401, (token[:20], got.status)
    got = stranger.post("/login", {"csrf": stranger.csrf(), "token": "\u00e9:\u00e9"})
    assert got.status == 403 and "wrong token" in got.text

    assert alice.get("/api/overview").status == 200
    text = cluster.log("scheduler")
    assert "Traceback" not in text
    assert all(LOG_LINE.match(line) for line in text.splitlines()), text
