"""The submit form: uploaded files and fields become a submit file, which goes through
:func:`control_node.submit.submit_with` (the parser and spec building of ``dsub``)
into the scheduler's own ``new_cluster`` and ``submit_jobs`` handlers.

The files land in a fresh directory under ``HOME/web-uploads`` that is removed
afterwards; nothing a submit file names may lie outside it, the scheduler's
environment is not the user's (``getenv`` and ``$ENV()`` see nothing), and the queue
forms that read the scheduler's files or run commands are refused.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from control_node.input_files import is_url
from control_node.submit import Submission, SubmitError, submit_with
from control_node.submit_file import ProcDescription
from control_node.upload import Digests, Stored
from scheduler import control_handlers
from scheduler import protocol as p
from scheduler.connection import RequestError
from scheduler.submission import safe_name
from scheduler.transport.hashing import HashingReader
from scheduler.units import run_request
from scheduler.web.session import WebUser, csrf_ok

if TYPE_CHECKING:
    from scheduler.state import SchedulerState

#: Form fields copied into the generated submit file, with their submit-file keys:
#: those of the seed format (``email``, ``client``) and HTCondor's for the rest.
FIELDS = {
    "email": "email",
    "request_cpus": "request_cpus",
    "request_memory": "request_memory",
    "request_gpus": "request_gpus",
    "requirements": "requirements",
    "worker": "client",
}
_QUEUE_FROM_FILE = re.compile(
    r"^\s*queue\b.*\b(?:matching\b|from\s*(?!\())", re.IGNORECASE | re.MULTILINE
)


class FormError(Exception):
    """A submit form that cannot be turned into jobs; the message says why."""


async def read_form(request: web.Request, directory: Path) -> tuple[dict[str, str], list[str]]:
    """The text fields of the multipart form, and the names of the files it carried
    (saved into ``directory``)."""
    if not request.content_type.startswith("multipart/"):
        raise FormError("the form must be sent as multipart/form-data")
    try:
        return await _read_parts(await request.multipart(), directory)
    except (ValueError, HttpProcessingError) as exc:  # a body that is not what it claims
        raise FormError(f"malformed form: {' '.join(str(exc).split())[:200]}") from None


async def _read_parts(reader: MultipartReader, directory: Path) -> tuple[dict[str, str], list[str]]:
    fields: dict[str, str] = {}
    files: list[str] = []
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader) or part.name is None:
            continue
        if part.filename is None:
            fields[part.name] = (await part.text()).strip()
            continue
        if not part.filename:
            continue  # an empty file input
        name = os.path.basename(part.filename)
        if not safe_name(name) or name in files:
            raise FormError(f"{part.filename!r}: not a plain file name, or given twice")
        with open(directory / name, "wb") as f:
            while chunk := await part.read_chunk(1 << 20):
                f.write(chunk)
        files.append(name)
        key = f"file:{part.name}"
        fields[key] = f"{fields[key]},{name}" if key in fields else name
    return fields, files


def submit_text(fields: dict[str, str], data_files: list[str]) -> str:
    """The submit file the form describes: one job, in the seed format's keys
    (``executable``, ``data``, ``email``, ``client``), so that ``dsub`` reads them the
    same way: the first data file is the job's first argument unless arguments are
    given. Arguments are HTCondor's new syntax without the outer double quotes."""
    executable = fields.get("file:executable", "")
    if not executable:
        raise FormError("choose an executable (or a whole submit file)")
    lines = [f"executable = {executable}"]
    if data_files:
        lines.append(f"data = {data_files[0]}")
    if data_files[1:]:
        lines.append(f"transfer_input_files = {', '.join(data_files[1:])}")
    for field, key in FIELDS.items():
        value = fields.get(field, "")
        if "\n" in value or "\r" in value:
            raise FormError(f"{field}: one line only")
        if value:
            lines.append(f"{key} = {value}")
    arguments = fields.get("arguments", "")
    if "\n" in arguments or "\r" in arguments:
        raise FormError("arguments: one line only")
    if arguments:
        lines.append(f'arguments = "{arguments.replace(chr(34), chr(34) * 2)}"')
    lines.append("queue")
    return "\n".join(lines) + "\n"


def submit(
    s: SchedulerState, user: WebUser, fields: dict[str, str], directory: Path
) -> tuple[Submission, str]:
    """Submit what the form holds (files already in ``directory``); returns the
    submission and the submit file it went through."""
    submit_file = fields.get("file:submit_file", "")
    if submit_file:
        path = directory / submit_file
        text = path.read_text(encoding="utf-8", errors="replace")
        if _QUEUE_FROM_FILE.search(text):
            raise FormError(
                f"{submit_file}: 'queue ... from FILE', 'from COMMAND |' and 'matching' read"
                " the scheduler's files: list the items in the file, or submit it with dsub"
            )
    else:
        data = [n for n in fields.get("file:data", "").split(",") if n]
        text = submit_text(fields, data)
        path = directory / "web.sub"
        path.write_text(text)

    def inside(procs: list[ProcDescription]) -> None:
        root = directory.resolve()
        for proc in procs:
            files = [n for n in proc.transfer_input_files if not is_url(n)]  # fetched by workers
            for name in [proc.executable, *files, proc.input, proc.initialdir]:
                if name and not Path(name).resolve().is_relative_to(root):
                    raise SubmitError(f"{path.name}: {name!r} is not one of the uploaded files")

    def reserve() -> tuple[int, Callable[[list[str]], Stored]]:
        created = run_request(
            s, "new_cluster", lambda: control_handlers.on_new_cluster(s, user, p.NewCluster())
        )
        assert isinstance(created, p.ClusterCreated)
        s.spool.revoke(created.upload)  # the files are here already: no FTP needed
        return created.cluster, lambda paths: _store_large(s, created.cluster, paths)

    def queue(message: p.SubmitJobs) -> p.Submitted:
        reply = run_request(
            s, message.type, lambda: control_handlers.on_submit_jobs(s, user, message)
        )
        assert isinstance(reply, p.Submitted)
        s.end_turn()  # committed before the browser hears of it
        return reply

    # Strict: a form has no place to show warnings, so what dsub warns of is refused.
    done = submit_with(
        reserve, queue, path, str(directory), text, environ={}, check=inside, strict=True
    )
    if not done.job_ids:
        raise SubmitError(f"{path.name}: the file queues no jobs (queue 0): nothing was submitted")
    return done, text


def _store_large(s: SchedulerState, cluster: int, paths: list[str]) -> Stored:
    """Put inputs too large to travel inline where an FTP upload would: the cluster's
    input directory, under their hash."""
    directory = s.spool.input_dir(cluster)
    directory.mkdir(parents=True, exist_ok=True)
    digests: Digests = {}
    for number, path in enumerate(paths):
        part = directory / f"part-{number}"  # hashed while copied, then renamed to its hash
        with open(path, "rb") as f, open(part, "wb") as out:
            reader = HashingReader(f)
            shutil.copyfileobj(reader, out, 1 << 20)
        sha = reader.digest.hexdigest()
        os.replace(part, directory / sha)
        digests[path] = (sha, reader.size)
    return Stored(digests)


async def handle(s: SchedulerState, request: web.Request, user: WebUser) -> tuple[Submission, str]:
    """Read the form, submit it; :class:`FormError` or :class:`RequestError`-like
    messages come back as :class:`FormError`."""
    uploads = s.config.home / "web-uploads"
    uploads.mkdir(exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix=f"{user.name}-", dir=uploads))
    try:
        fields, _ = await read_form(request, directory)
        if not csrf_ok(request, fields.get("csrf")):
            raise web.HTTPForbidden(text="missing or wrong CSRF token: reload the page and retry")
        return submit(s, user, fields, directory)
    except (SubmitError, RequestError) as exc:
        # Name the files as the user named them, not where the scheduler put them.
        raise FormError(str(exc).replace(f"{directory}{os.sep}", "")) from None
    finally:
        shutil.rmtree(directory, ignore_errors=True)
