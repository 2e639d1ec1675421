"""``dtail`` of a finished job with a huge stdout reads only the part asked, off the
scheduler's event loop: its memory stays small and other clients are answered."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import write

from control_node.connection import Connection, Endpoint
from scheduler import protocol as p

HUGE = 2 << 30


def peak_rss_mb(pid: int) -> float:
    """The most memory the process has held (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_dtail_of_a_huge_finished_stdout_reads_only_its_end(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    cluster = make_cluster(workers=1)
    write(tmp_path / "out.sh", "#!/bin/sh\nhead -c 200000 /dev/zero\n", True)
    write(tmp_path / "out.sub", "executable = out.sh\nqueue\n")
    assert cluster.run("dsub", "--wait", "out.sub", cwd=tmp_path).returncode == 0
    stdout = cluster.config.spool_dir / "1" / "0" / "stdout"
    assert stdout.stat().st_size == 200000  # large: kept in the spool
    # 2 GiB of stdout (sparse), ending with a line of its own.
    end = b"THE END OF A VERY LONG OUTPUT\n"
    with open(stdout, "r+b") as f:
        f.truncate(HUGE - len(end))
        f.seek(0, os.SEEK_END)
        f.write(end)
    pid = cluster.processes["scheduler"].pid
    before = peak_rss_mb(pid)
    out = cluster.run("dtail", "1.0", "-c", "100")
    assert out.returncode == 0, out.stderr
    assert out.stdout.encode()[-len(end) :] == end and len(out.stdout) == 100
    endpoint = Endpoint("127.0.0.1", cluster.access.port, cluster.token)
    with Connection(endpoint) as tailing, Connection(endpoint) as other:
        # A client asking for everything gets one bounded chunk (and the size) ...
        for offset in (0, HUGE - 10, HUGE + 5):
            reply = tailing.request(p.TailJob(job_id="1.0", offset=offset, limit=HUGE))
            assert isinstance(reply, p.OutputChunk)
            assert reply.size == HUGE and not reply.running
            data = p.unpack_bytes(reply.data)
            assert len(data) == max(0, min(p.INLINE_BUDGET, HUGE - offset))
        assert data == b"" and data is not None
        # ... while the others are answered: requests sent together all come back.
        for _ in range(20):
            tailing._send(p.TailJob(job_id="1.0", offset=0, limit=HUGE).with_id(1000))
            listed = other.request(p.QueryJobs(ids=["1"]))
            assert isinstance(listed, p.JobList) and [j.id for j in listed.jobs] == ["1.0"]
        answered = 0
        while answered < 20:
            reply = tailing._recv()
            answered += isinstance(reply, p.OutputChunk) and reply.id == 1000
    # The scheduler never held the file: its peak memory grew by far less than it.
    assert peak_rss_mb(pid) - before < 200, (before, peak_rss_mb(pid))


def test_the_dashboard_tails_a_huge_finished_stdout(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    from webtools import Browserless, web_cluster

    cluster, url = web_cluster(make_cluster, workers=1)
    write(tmp_path / "out.sh", "#!/bin/sh\nhead -c 200000 /dev/zero\n", True)
    write(tmp_path / "out.sub", "executable = out.sh\nqueue\n")
    assert cluster.run("dsub", "--wait", "out.sub", cwd=tmp_path).returncode == 0
    end = b"THE END OF A VERY LONG OUTPUT\n"
    with open(cluster.config.spool_dir / "1" / "0" / "stdout", "r+b") as f:
        f.truncate(HUGE - len(end))
        f.seek(0, os.SEEK_END)
        f.write(end)
    pid = cluster.processes["scheduler"].pid
    before = peak_rss_mb(pid)
    browser = Browserless(url)
    browser.login(cluster.token)
    chunk = browser.get(f"/api/jobs/1.0/output/stdout?last={len(end)}").json()
    assert chunk["size"] == HUGE and chunk["text"] == end.decode()
    page = browser.get("/jobs/1.0")
    assert page.status == 200 and "THE END OF A VERY LONG OUTPUT" in page.text
    assert peak_rss_mb(pid) - before < 200
