"""``transfer_input_files`` as HTCondor reads it: commas only, directories (with and
without the trailing slash) and URL inputs, from the submit file to the job's sandbox."""

from __future__ import annotations

import http.server
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import TestCluster, wait_until, write

from control_node.input_files import (
    InputError,
    InputTrees,
    split_inputs,
    url_requirements,
    walk_tree,
    with_url_requirements,
)
from control_node.submit import SubmitError, parse_description
from scheduler.matching.capacity import Capacity, never_reasons
from scheduler.matching.job_status import hold_reason_code
from scheduler.matching.requirements import worker_ad
from scheduler.protocol import NOT_STARTED
from worker_node import url_inputs
from worker_node.machine_attributes import detect
from worker_node.sandbox import Sandbox

# ----------------------------------------------------------------------------- reading


def test_names_are_split_at_commas_only() -> None:
    assert split_inputs("file1.txt,file2.txt in.txt ,  data.csv") == [
        "file1.txt",
        "file2.txt in.txt",
        "data.csv",
    ]
    assert split_inputs(" , a ,, b\t,") == ["a", "b"]


def test_a_missing_name_with_a_space_says_htcondor_splits_at_commas(tmp_path: Path) -> None:
    write(tmp_path / "job.sh", "#!/bin/sh\n", True)
    write(tmp_path / "file1.txt", "1")
    write(tmp_path / "file2.txt", "2")
    sub = write(
        tmp_path / "job.sub",
        "executable = job.sh\ntransfer_input_files = file1.txt file2.txt\nqueue\n",
    )
    with pytest.raises(SubmitError) as info:
        parse_description(sub, None, 1, str(tmp_path), 1)
    assert "input file 'file1.txt file2.txt' does not exist" in str(info.value)
    assert "separates the names of transfer_input_files with commas only" in str(info.value)
    assert info.value.line == 2


def tree(tmp_path: Path) -> Path:
    top = tmp_path / "dir_a"
    write(top / "in.txt", "top\n")
    write(top / "sub" / "deep.txt", "deep\n")
    return top


def test_a_trailing_slash_sends_the_contents_else_the_folder(tmp_path: Path) -> None:
    top = tree(tmp_path)
    trees = InputTrees()
    itself = trees.staged([str(top)])
    contents = trees.staged([str(top) + "/"])
    assert [name for _, name in itself] == ["dir_a/in.txt", "dir_a/sub/deep.txt"]
    assert [name for _, name in contents] == ["in.txt", "sub/deep.txt"]
    assert {local for local, _ in itself} == {str(top / "in.txt"), str(top / "sub" / "deep.txt")}


def test_links_in_a_directory_input(tmp_path: Path) -> None:
    top = tree(tmp_path)
    (top / "again.txt").symlink_to("in.txt")  # inside: sent as the file it names
    assert (str(top / "in.txt"), "again.txt") in walk_tree(str(top))
    write(tmp_path / "secret", "not for the job\n")
    (top / "out").symlink_to(tmp_path / "secret")
    with pytest.raises(
        InputError, match="'out' in input directory .* is a link out of the directory"
    ):
        walk_tree(str(top))
    (top / "out").unlink()
    (top / "up").symlink_to("../dir_a/sub")  # a folder, even inside: refused
    with pytest.raises(InputError, match="link to something not a plain file"):
        walk_tree(str(top))
    (top / "up").unlink()
    os.mkfifo(top / "fifo")
    with pytest.raises(InputError, match="is not a plain file"):
        walk_tree(str(top))


def test_directory_and_url_inputs_in_the_submit_file(tmp_path: Path) -> None:
    tree(tmp_path)
    write(tmp_path / "job.sh", "#!/bin/sh\n", True)
    sub = write(
        tmp_path / "job.sub",
        "executable = job.sh\nrequirements = TARGET.Cpus > 0\n"
        "transfer_input_files = dir_a/, dir_a, https://example.org/x/data.tar.gz, osdf:///p/o.gz\n"
        "queue\n",
    )
    found = parse_description(sub, None, 1, str(tmp_path), 1)
    (proc,) = found.procs
    assert proc.transfer_input_files == [
        f"{tmp_path}/dir_a/",
        f"{tmp_path}/dir_a",
        "https://example.org/x/data.tar.gz",
        "osdf:///p/o.gz",
    ]
    assert proc.requirements == "TARGET.Cpus > 0"  # the user's: the clause goes to the job
    assert any("fetch only http:// and https://" in w and "'osdf'" in w for w in found.warnings)
    assert with_url_requirements(proc.requirements, proc.transfer_input_files[2:]) == (
        '(TARGET.Cpus > 0) && (TARGET.HasFileTransfer && stringListIMember("https",'
        'TARGET.HasFileTransferPluginMethods) && stringListIMember("osdf",'
        "TARGET.HasFileTransferPluginMethods))"
    )


@pytest.mark.parametrize("url", ["https://example.org/", "https://example.org/a/%2e%2e"])
def test_a_url_that_names_no_file_is_refused(tmp_path: Path, url: str) -> None:
    write(tmp_path / "job.sh", "#!/bin/sh\n", True)
    sub = write(tmp_path / "job.sub", f"executable = job.sh\ntransfer_input_files = {url}\nqueue\n")
    with pytest.raises(SubmitError, match="names no file"):
        parse_description(sub, None, 1, str(tmp_path), 1)


def test_workers_match_the_schemes_they_fetch() -> None:
    ad = worker_ad(
        name="w1", worker_id=1, cpus=1, memory_mb=1024, gpus=0, disk_kb=1 << 20, hostname="h",
        opsys="LINUX", arch="X86_64", load_avg=0.0, gpu_memory_mb=0,
        extra=detect(os_release=Path("/nonexistent")),
    )  # fmt: skip
    worker = Capacity(
        worker_id=1, name="w1", cpus=1, memory_mb=1024, gpus=0, disk_kb=1 << 20, ad=ad
    )

    class Job:
        request_cpus, request_memory, request_disk, request_gpus = 1, None, None, 0
        machine = None
        attributes: dict[str, str] = {}

        def __init__(self, urls: list[str]) -> None:
            self.requirements = with_url_requirements(None, urls)

    assert never_reasons(Job(["https://a/b", "http://c/d"]), [worker]) == (["w1"], [])
    matching, reasons = never_reasons(Job(["osdf:///a/b"]), [worker])
    assert matching == []
    assert 'stringListIMember("osdf",TARGET.HasFileTransferPluginMethods)' in reasons[0]
    assert never_reasons(Job(["file:///etc/shadow"]), [worker])[0] == []
    assert url_requirements([]) is None


# ----------------------------------------------------------------------------- the worker


def test_folders_of_a_directory_input_are_made_below_the_sandbox(tmp_path: Path) -> None:
    source = write(tmp_path / "cache" / "abc", "content\n")
    sandbox = Sandbox(tmp_path / "jobs")
    (tmp_path / "jobs").mkdir()
    sandbox.prepare(1, "1.0-1")
    inode = source.stat().st_ino
    sandbox.stage({"run.sh": (source, inode), "dir_a/sub/x.txt": (source, inode)})
    assert (sandbox.directory / "dir_a" / "sub" / "x.txt").read_text() == "content\n"
    sandbox.finish(reusable=True)
    assert not (tmp_path / "jobs" / "1.0-1").exists()  # a folder input: never reused


def test_a_folder_swapped_for_a_link_is_not_followed(tmp_path: Path) -> None:
    source = write(tmp_path / "cache" / "abc", "content\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "jobs").mkdir()
    sandbox = Sandbox(tmp_path / "jobs")
    sandbox.prepare(1, "1.0-1")
    (sandbox.directory / "dir_a").symlink_to(outside)  # what a job of the owner could do
    with pytest.raises(OSError):
        sandbox.stage({"dir_a/x.txt": (source, source.stat().st_ino)})
    assert list(outside.iterdir()) == []
    sandbox.discard()


class Files(http.server.BaseHTTPRequestHandler):
    """Serves ``/data/<name>`` from a dict; ``/redirect-file`` redirects to file://."""

    files: dict[str, bytes] = {}
    #: Set to let a request for ``/stall`` end.
    release = threading.Event()

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/stall":
            self.release.wait()
            self.send_error(500, "released")
            return
        if self.path == "/redirect-file":
            self.send_response(302)
            self.send_header("Location", "file:///etc/hostname")
            self.end_headers()
            return
        body = self.files.get(self.path.split("?")[0])
        if body is None:
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[str]:
    """A loopback HTTP server on an ephemeral port: its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Files.files = {"/data/numbers.txt": b"1\n2\n3\n", "/data/big.bin": b"x" * 5000}
    Files.release = threading.Event()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    Files.release.set()
    server.shutdown()
    server.server_close()


def test_the_worker_fetches_http_inputs(http_server: str, tmp_path: Path) -> None:
    urls = [f"{http_server}/data/numbers.txt", f"{http_server}/data/big.bin?v=2"]
    assert url_inputs.fetch_as(urls, tmp_path, None, None) is None
    assert (tmp_path / "numbers.txt").read_bytes() == b"1\n2\n3\n"
    assert (tmp_path / "big.bin").stat().st_size == 5000


@pytest.mark.parametrize(
    ("path", "bound", "detail"),
    [
        ("/data/missing.txt", 10**6, "HTTP error 404: Not Found"),
        ("/data/big.bin", 4000, "its 5000 bytes exceed the bound of 4000"),
        ("/redirect-file", 10**6, "Redirection to url 'file:///etc/hostname' is not allowed"),
    ],
)
def test_a_failed_fetch_says_which_url_and_why(
    http_server: str, tmp_path: Path, path: str, bound: int, detail: str
) -> None:
    failed = url_inputs.fetch_as([f"{http_server}{path}"], tmp_path, None, None, bound)
    assert failed is not None and failed.url == f"{http_server}{path}"
    assert detail in failed.detail
    assert list(tmp_path.iterdir()) == []  # no partial file


def test_a_removed_job_stops_its_download(http_server: str, tmp_path: Path) -> None:
    asked: list[bool] = []

    def cancelled() -> bool:  # removed once the download has been waited on once
        asked.append(True)
        return len(asked) > 1

    failed = url_inputs.fetch_as(
        [f"{http_server}/stall"], tmp_path, None, None, cancelled=cancelled
    )
    assert failed is not None and failed.detail == "the job was removed"


def test_the_hold_reason_is_htcondors_and_counts_as_not_started() -> None:
    reason = url_inputs.hold_reason("w1", "https://example.org/a.gz", "HTTP error 404: Not Found")
    assert reason == (
        "Transfer input files failure at execution point w1 using protocol https. Details:"
        " error fetching https://example.org/a.gz: HTTP error 404: Not Found"
    )
    assert reason.startswith(NOT_STARTED) and hold_reason_code(reason) == 13


def test_file_urls_and_links_in_the_sandbox_are_never_followed(
    tmp_path: Path, http_server: str
) -> None:
    failed = url_inputs.fetch_as(["file:///etc/hostname"], tmp_path, None, None)
    assert failed is not None and "fetches only http and https" in failed.detail
    (tmp_path / "numbers.txt").symlink_to(tmp_path / "elsewhere")
    failed = url_inputs.fetch_as([f"{http_server}/data/numbers.txt"], tmp_path, None, None)
    assert failed is not None and "cannot create 'numbers.txt'" in failed.detail
    assert not (tmp_path / "elsewhere").exists()


# ----------------------------------------------------------------------------- a real cluster


def test_directory_inputs_reach_the_sandbox(cluster: TestCluster, tmp_path: Path) -> None:
    tree(tmp_path)
    write(tmp_path / "dir_b" / "b.txt", "bee\n")
    script = (
        "#!/bin/sh\ncat dir_a/in.txt dir_a/sub/deep.txt b.txt\ntest -d dir_b || echo no-dir_b\n"
        # The folders made for the job are the job's own to write in.
        "touch dir_a/sub/new.txt && test -O dir_a/sub && echo writable\n"
    )
    write(tmp_path / "job.sh", script, True)
    write(
        tmp_path / "job.sub", "executable = job.sh\ntransfer_input_files = dir_a, dir_b/\nqueue 2\n"
    )
    result = cluster.run("dsub", "--wait", "--per-job", "job.sub", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    for proc in range(2):
        assert (
            tmp_path / f"1.{proc}" / "stdout"
        ).read_text() == "top\ndeep\nbee\nno-dir_b\nwritable\n"


def test_url_inputs_are_fetched_or_hold_the_job(
    cluster: TestCluster, tmp_path: Path, http_server: str
) -> None:
    # Downloaded by the job's own account: the file is the job's.
    write(
        tmp_path / "job.sh", "#!/bin/sh\ncat numbers.txt\ntest -O numbers.txt && echo mine\n", True
    )
    write(
        tmp_path / "ok.sub",
        f"executable = job.sh\ntransfer_input_files = {http_server}/data/numbers.txt\nqueue\n",
    )
    result = cluster.run("dsub", "--wait", "ok.sub", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "1.0" / "stdout").read_text() == "1\n2\n3\nmine\n"

    missing = f"{http_server}/data/missing.txt"
    write(tmp_path / "404.sub", f"executable = job.sh\ntransfer_input_files = {missing}\nqueue\n")
    result = cluster.run("dsub", "--wait", "404.sub", cwd=tmp_path)
    assert result.returncode == 1
    (job,) = [j for j in json.loads(cluster.run("dq", "--json").stdout) if j["cluster"] == 2]
    assert job["state"] == "held"
    assert job["hold_reason"].startswith("Transfer input files failure at execution point w")
    assert (
        f"using protocol http. Details: error fetching {missing}: HTTP error 404"
        in job["hold_reason"]
    )
    long = cluster.run("dq", "-l", "2.0").stdout
    assert "HoldReasonCode = 13" in long, long


def test_a_scheme_no_worker_fetches_stays_idle_with_the_reason(
    cluster: TestCluster, tmp_path: Path
) -> None:
    write(tmp_path / "job.sh", "#!/bin/sh\n", True)
    write(
        tmp_path / "osdf.sub",
        "executable = job.sh\ntransfer_input_files = osdf:///ospool/x.gz\nqueue\n",
    )
    result = cluster.run("dsub", "osdf.sub", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "HasFileTransferPluginMethods lists 'osdf'" in result.stdout + result.stderr
    analyze = cluster.run("dq", "-analyze", "1.0")
    assert 'stringListIMember("osdf",TARGET.HasFileTransferPluginMethods)' in analyze.stdout, (
        analyze.stdout + analyze.stderr
    )
    wait_until(lambda: cluster.run("dq", "--json").returncode == 0)
    (job,) = json.loads(cluster.run("dq", "--json").stdout)
    assert job["state"] == "idle"
