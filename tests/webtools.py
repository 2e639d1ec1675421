"""Helpers of the web dashboard's tests: a cluster with the dashboard on, users, and
a cookie-keeping HTTP client that logs in as a browser would."""

from __future__ import annotations

import http.cookiejar
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from conftest import TestCluster, wait_until


def web_cluster(
    make_cluster: Callable[..., TestCluster], workers: int = 2
) -> tuple[TestCluster, str]:
    """A cluster whose scheduler serves the dashboard on a free loopback port; its URL."""
    cluster = make_cluster(workers=workers, scheduler_args=("--web-port", "0"))
    url = wait_until(cluster.web_url, what="the dashboard's address in the scheduler's log")
    return cluster, str(url)


def add_user(cluster: TestCluster, name: str) -> str:
    """Create a user with ``dfarm user add``; returns the token it prints."""
    done = cluster.run("dfarm", "user", "add", name, "--home", str(cluster.config.home))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


class Response:
    def __init__(self, status: int, body: bytes, headers: Any, url: str):
        self.status, self.body, self.headers, self.url = status, body, headers, url

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)


class Browserless:
    """A client with a cookie jar: GET, form POSTs, and the page's CSRF token."""

    def __init__(self, url: str):
        self.url = url
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def request(
        self, path: str, data: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Response:
        req = urllib.request.Request(self.url + path.lstrip("/"), data=data, headers=headers or {})
        try:
            with self.opener.open(req, timeout=30) as r:
                return Response(r.status, r.read(), r.headers, r.url)
        except urllib.error.HTTPError as e:
            with e:
                return Response(e.code, e.read(), e.headers, e.url)

    def get(self, path: str, headers: dict[str, str] | None = None) -> Response:
        return self.request(path, headers=headers)

    def post(
        self, path: str, fields: dict[str, str], headers: dict[str, str] | None = None
    ) -> Response:
        return self.request(path, urllib.parse.urlencode(fields).encode(), headers)

    def csrf(self, path: str = "/login") -> str:
        return re.search(r'name="csrf-token" content="([^"]*)"', self.get(path).text)[1]

    def login(self, token: str) -> Response:
        return self.post("/login", {"csrf": self.csrf(), "token": token})
