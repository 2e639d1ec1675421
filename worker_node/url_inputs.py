"""Fetching a job's URL inputs (``transfer_input_files = https://...``) into its sandbox.

The worker fetches ``http://`` and ``https://`` itself and advertises those schemes
in ``HasFileTransferPluginMethods``; a job with another scheme (``osdf``, ``s3``,
``file``, ...) never matches it, since condor_submit's requirement clause asks for
each scheme. ``file://`` in particular is never fetched: it would read the worker's
own files. A redirect to another scheme is refused for the same reason.

The download runs in a process of the job's own account (``python -m
worker_node.url_inputs``) in the sandbox: the network sees the job's user, not the
worker's, and the file it writes (the last part of the URL's path, created new,
never through a link) is the job's. Each download has a timeout without progress,
an overall deadline and a size bound; the first failure ends them all, and the job
is held with HTCondor's wording (HoldReasonCode 13, TransferInputError).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:  # the download process imports nothing of the worker's
    from worker_node.identity import Account

#: The schemes this worker fetches, as it advertises them.
SCHEMES = ("http", "https")
#: What the worker advertises (HTCondor's machine attributes).
ATTRIBUTES: dict[str, bool | str] = {
    "HasFileTransfer": True,
    "HasFileTransferPluginMethods": ",".join(SCHEMES),
}
#: Seconds a download may go without receiving anything.
STALL_TIMEOUT = 60.0
#: Seconds all of a job's URL inputs may take together.
DEADLINE = 3600.0
#: Bytes a job's URL inputs may hold together, unless its ``request_disk`` says less.
MAX_BYTES = 16 << 30
BLOCK = 1 << 20
#: Seconds between looks at whether the job was removed while its inputs download.
CANCEL_POLL = 0.5
#: Variables of the worker's environment the download sees (proxies, locale).
PASSED_ENV = ("PATH", "LANG", "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY",
              "HTTPS_PROXY", "NO_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR")  # fmt: skip


class UrlInputError(Exception):
    """A URL input could not be fetched: ``url``, and ``detail`` in words."""

    def __init__(self, url: str, detail: str) -> None:
        super().__init__(f"{url}: {detail}")
        self.url, self.detail = url, detail


def file_name(url: str) -> str:
    """The sandbox file a URL input becomes: the last part of its path."""
    return unquote(urlsplit(url).path.rsplit("/", 1)[-1])


def hold_reason(worker: str, url: str, detail: str) -> str:
    """HTCondor's hold reason for a failed input transfer by a plugin."""
    scheme = url.split("://", 1)[0]
    return (
        f"Transfer input files failure at execution point {worker} using protocol"
        f" {scheme}. Details: error fetching {url}: {detail}"
    )


class _SameSchemeRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects to http or https only."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN201
        if urlsplit(newurl).scheme.lower() not in SCHEMES:
            raise urllib.error.HTTPError(
                newurl, code, f"redirect to a scheme not fetched: {newurl}", headers, fp
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _opener() -> urllib.request.OpenerDirector:
    """An opener that knows http and https only (no file:, ftp: or data: handler)."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(),
        _SameSchemeRedirects(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


def fetch(url: str, budget: int, deadline: float, stall: float = STALL_TIMEOUT) -> int:
    """Download ``url`` into a new file of the current folder; returns its size.
    ``budget``: the most bytes it may have; ``deadline``: ``time.monotonic()`` by
    which it must be done. Raises UrlInputError (leaving no partial file)."""
    if urlsplit(url).scheme.lower() not in SCHEMES:
        raise UrlInputError(url, "this worker fetches only http and https URLs")
    name = file_name(url)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, 0o644)
    except OSError as exc:
        raise UrlInputError(url, f"cannot create {name!r}: {exc.strerror}") from None
    size = 0
    try:
        with os.fdopen(fd, "wb") as out, _opener().open(url, timeout=stall) as response:
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > budget:
                raise UrlInputError(url, f"its {length} bytes exceed the bound of {budget}")
            while block := response.read(BLOCK):
                size += len(block)
                if size > budget:
                    raise UrlInputError(url, f"it has more than the bound of {budget} bytes")
                if time.monotonic() > deadline:
                    raise UrlInputError(url, "the URL inputs took too long")
                out.write(block)
        return size
    except UrlInputError:
        _discard(name)
        raise
    except urllib.error.HTTPError as exc:
        _discard(name)
        raise UrlInputError(url, f"HTTP error {exc.code}: {exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        _discard(name)
        why = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise UrlInputError(url, str(why) or type(exc).__name__) from None


def _discard(name: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(name)


def fetch_all(urls: list[str], max_bytes: int, seconds: float) -> None:
    """Fetch every URL into the current folder, within ``max_bytes`` and ``seconds``."""
    deadline = time.monotonic() + seconds
    left = max_bytes
    for url in urls:
        left -= fetch(url, left, deadline)


def fetch_as(
    urls: list[str],
    sandbox: Path,
    account: Account | None,
    python: str | None,
    max_bytes: int = MAX_BYTES,
    seconds: float = DEADLINE,
    cancelled: Callable[[], bool] = lambda: False,
) -> UrlInputError | None:
    """Fetch ``urls`` into ``sandbox`` in a process of ``account`` (None: the
    worker's own) run by ``python`` (one that account can run); the failure, if any.
    The process is killed when ``cancelled()`` (the job was removed meanwhile)."""
    env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
    command = [python or sys.executable, "-m", __name__, "--max-bytes", str(max_bytes),
               "--seconds", str(seconds), *urls]  # fmt: skip
    ids: dict[str, Any] = {}
    if account is not None:
        ids = {"user": account.uid, "group": account.gid, "extra_groups": list(account.groups)}
    try:
        process = subprocess.Popen(
            command, cwd=sandbox, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL, text=True, start_new_session=True, **ids,
        )  # fmt: skip
    except OSError as exc:
        return UrlInputError(urls[0], f"cannot start the download: {exc.strerror}")
    give_up = time.monotonic() + seconds + STALL_TIMEOUT
    while True:
        try:
            out, err = process.communicate(timeout=CANCEL_POLL)
            break
        except subprocess.TimeoutExpired:
            late = time.monotonic() > give_up
            if late or cancelled():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)  # not reaped yet: still its group
                process.communicate()
                why = "the URL inputs took too long" if late else "the job was removed"
                return UrlInputError(urls[0], why)
    if process.returncode == 0:
        return None
    for line in reversed(out.splitlines()):
        try:
            failed = json.loads(line)
            return UrlInputError(str(failed["url"]), str(failed["detail"]))
        except (ValueError, KeyError, TypeError):
            continue
    last = (err.strip().splitlines() or [f"exit status {process.returncode}"])[-1]
    return UrlInputError(urls[0], f"the download failed: {last}")


def main(argv: list[str] | None = None) -> int:
    """In the job's account, in its sandbox: fetch the URLs; on a failure print it
    as one JSON line (``url``, ``detail``) and exit 1."""
    parser = argparse.ArgumentParser(prog="python -m worker_node.url_inputs")
    parser.add_argument("--max-bytes", type=int, default=MAX_BYTES)
    parser.add_argument("--seconds", type=float, default=DEADLINE)
    parser.add_argument("urls", nargs="+")
    args = parser.parse_args(argv)
    try:
        fetch_all(args.urls, args.max_bytes, args.seconds)
    except UrlInputError as exc:
        print(json.dumps({"url": exc.url, "detail": exc.detail}))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
