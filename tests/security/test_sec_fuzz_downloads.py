"""A download's ``Content-Disposition`` header holds any file name a job may write: a
quote and a semicolon, which once ended the quoted name and started a parameter of
the job's choosing, and characters beyond ASCII. The exact name travels as
``filename*`` (RFC 6266/8187); the plain ``filename`` is a safe ASCII stand-in."""

from __future__ import annotations

import email.message
import email.utils
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from conftest import TestCluster, write
from webtools import Browserless, web_cluster

from scheduler.web.disposition import attachment

NAMES = ['a";b.txt', "é ü€.txt", 'x"; filename="evil.sh', "%41\\.txt"]


def parse_disposition(header: str) -> tuple[str, str, str]:
    """The type, the exact name (``filename*``) and the plain ``filename`` of a
    ``Content-Disposition`` header, as a mail or HTTP client reads them."""
    message = email.message.Message()
    message["Content-Disposition"] = header
    params = message.get_params(header="content-disposition")
    assert params is not None, header
    kind = params[0][0]
    names = [value for key, value in params[1:] if key == "filename"]
    assert len(names) == 2, (header, params)  # filename and filename*, nothing else
    encoded = [v for v in names if isinstance(v, tuple)]
    plain = [v for v in names if isinstance(v, str)]
    assert len(encoded) == 1 and encoded[0][0] == "UTF-8" and len(plain) == 1, names
    return kind, email.utils.collapse_rfc2231_value(encoded[0]), plain[0]


def test_attachment_header_round_trips_every_name() -> None:
    for name in [*NAMES, "plain.txt", "\u202etxt.exe", "\t tab", "\U0001f600"]:
        kind, exact, plain = parse_disposition(attachment(name))
        assert (kind, exact) == ("attachment", name)
        assert plain.isascii() and plain.isprintable()
        assert not set(plain) & set('"\\;%'), plain


def test_downloads_name_files_exactly(
    make_cluster: Callable[..., TestCluster], tmp_path: Path
) -> None:
    cluster, url = web_cluster(make_cluster, workers=1)
    script = "#!/bin/sh\n" + "".join(
        f"printf '%s' {i} > '{name}'\n" for i, name in enumerate(NAMES)
    )
    write(tmp_path / "job.sh", script, True)
    write(tmp_path / "job.sub", "executable = job.sh\nqueue\n")
    done = cluster.run("dsub", "--wait", "--dest", str(tmp_path / "r"), "job.sub", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    alice = Browserless(url)
    alice.login(cluster.token)
    assert sorted(alice.get("/api/jobs/1.0").json()["files"]) == sorted(NAMES)
    for i, name in enumerate(NAMES):
        got = alice.get("/jobs/1.0/files/" + urllib.parse.quote(name, safe=""))
        assert got.status == 200 and got.body == str(i).encode(), (name, got.status)
        headers = got.headers.get_all("Content-Disposition")
        assert len(headers) == 1, headers
        kind, exact, plain = parse_disposition(headers[0])
        assert (kind, exact) == ("attachment", name)
        assert plain.isascii() and not set(plain) & set('"\\;%'), plain
