"""Deep queues: every view stays cheap and no view stalls the scheduler.

    .venv/bin/python bench/queue_views.py [--jobs 100000] [--runs 5] [--window 20]

A local cluster (one worker of one slot, the dashboard on a free port) holds N idle
jobs that no worker can run (``request_memory = 400GB``, in two clusters of 80% and
20%). Measured: a trivial job's submit-to-done latency on the empty queue, with the
deep queue, and with the deep queue while 5 clients follow the queue page as it does
(its event stream where the scheduler has one, else polling ``/api/queue`` every 2 s);
the scheduler's loop lag (``/api/overview``, over the last minute) and its CPU for the
5 clients (psutil, over ``--window`` seconds, less the same window without them);
``dq`` (the batch view), the first line of ``dq -nobatch``, ``dq --json`` (time and the
client's peak RSS); the queue page's first paint in Chromium (Playwright); then the
scheduler's CPU for one request of the views that could grow with the queue or the
history: a page of ``dq --json``, ``dq -analyze CLUSTER`` of the big cluster, and,
once the small cluster is removed (its jobs the history), ``dhistory``'s 1,000 jobs,
``/api/history`` and ``/api/jobs`` with finished states (psutil, less the
scheduler's idle CPU over the same time). A feature the scheduler does not have yet
gives a row that says so.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import multiprocessing.queues
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from control_node import Client  # noqa: E402
from control_node.client import HISTORY_PAGE  # noqa: E402
from control_node.local_cluster import LocalCluster  # noqa: E402
from scheduler.control_handlers import QUERY_PAGE  # noqa: E402
from scheduler.loop_lag import INTERVAL, WINDOW  # noqa: E402

CLIENTS = 5
#: The queue page's polling period (scheduler/web/static/app.js, POLL_MS).
POLL = 2.0
#: Where the scheduler's event stream may be; the first that answers is used.
EVENT_PATHS = ("/api/events", "/api/queue/events", "/events", "/api/stream")
CHROMIUM = Path("/usr/bin/chromium")
#: Seconds of loop lag that /api/overview sums up.
LAG_WINDOW = INTERVAL * WINDOW
NA = "not available"

Row = tuple[str, str, str, str, str, str]


def row(what: str, value: str, target: str = "-", ok: bool | None = None,
        baseline: str = "-", ratio: str = "-") -> Row:  # fmt: skip
    verdict = "-" if ok is None else ("met" if ok else "NOT met")
    return (what, value, baseline, ratio, target, verdict)


class Web:
    """The dashboard's API, with the user's token as a bearer."""

    def __init__(self, url: str, token: str):
        self.url, self.token = url.rstrip("/"), token

    def open(self, path: str, accept: str = "application/json", timeout: float = 600) -> Any:
        request = urllib.request.Request(
            self.url + path, headers={"Authorization": f"Bearer {self.token}", "Accept": accept}
        )
        return urllib.request.urlopen(request, timeout=timeout)

    def get(self, path: str) -> Any:
        with self.open(path) as response:
            return json.loads(response.read())

    def event_stream(self) -> str | None:
        """The path of the scheduler's event stream, if it has one."""
        for path in EVENT_PATHS:
            try:
                with self.open(path, "text/event-stream", timeout=10) as response:
                    if response.headers.get("Content-Type", "").startswith("text/event-stream"):
                        return path
            except (urllib.error.URLError, OSError):
                continue
        return None


class Followers:
    """``CLIENTS`` clients following the queue page: on its event stream, or polling.
    Each is a process of its own, as a browser tab is: in threads of the bench they
    would take the bench's own interpreter lock from the client it times."""

    def __init__(self, web: Web, stream: str | None):
        context = multiprocessing.get_context("fork")
        self.web, self.stream = web, stream
        self.stop = context.Event()
        self._started = context.Semaphore(0)
        self._errors: multiprocessing.queues.Queue[str] = context.Queue()
        self._processes = [context.Process(target=self._run, daemon=True) for _ in range(CLIENTS)]
        self.errors: list[str] = []

    def __enter__(self) -> Followers:
        for process in self._processes:
            process.start()
        for _ in self._processes:  # each has loaded the page's data once
            self._started.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for process in self._processes:
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join()
        while not self._errors.empty():
            self.errors.append(self._errors.get())

    def _run(self) -> None:
        first = True
        try:
            self.web.get("/api/queue")
            self._started.release()
            first = False
            if self.stream is not None:
                with self.web.open(self.stream, "text/event-stream", timeout=3600) as events:
                    while not self.stop.is_set() and events.readline():
                        pass
                return
            while not self.stop.wait(POLL):
                self.web.get("/api/queue")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            self._errors.put(str(exc))
            if first:
                self._started.release()


def submit_to_done(client: Client, work: Path, runs: int) -> list[float]:
    """Seconds from submit to the job's completion known, for ``runs`` trivial jobs."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        (job,) = client.submit(work / "hello.sub", cwd=str(work)).wait(timeout=600)
        times.append(time.perf_counter() - start)
        assert job.state == "completed", job
    return times


def cpu_percent(process: psutil.Process, seconds: float) -> float:
    """The process's CPU over the next ``seconds``, in percent of one core."""
    before = process.cpu_times()
    time.sleep(seconds)
    after = process.cpu_times()
    used = (after.user - before.user) + (after.system - before.system)
    return 100 * used / seconds


def dq(*args: str) -> list[str]:
    return [sys.executable, "-m", "control_node.cli.dq", *args]


def run_time(env: dict[str, str], argv: list[str]) -> tuple[float, float]:
    """Seconds of a command and its peak RSS in MiB (output discarded). The peak is the
    kernel's high-water mark of the command's own memory (``VmHWM``, read until it
    ends): the ``ru_maxrss`` of ``wait4`` would count this process's memory, which the
    child shares until it runs the command."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _high_water_kb(proc.pid))
        time.sleep(0.01)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {proc.returncode}")
    return took, peak / 1024


def _high_water_kb(pid: int) -> int:
    """``VmHWM`` of a running process, in KiB (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def first_line_time(env: dict[str, str], argv: list[str]) -> float:
    """Seconds until a command prints its first line (as ``| head -1`` sees it)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    took = time.perf_counter() - start
    proc.kill()
    proc.wait()
    if not line:
        raise RuntimeError(f"{' '.join(argv)} printed nothing")
    return took


def first_paint(url: str, token: str) -> tuple[float | None, str]:
    """The queue page's first contentful paint in Chromium, in seconds, or why not."""
    if not CHROMIUM.exists():
        return None, f"{NA}: no {CHROMIUM}"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None, f"{NA}: Playwright is not installed"
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            page = browser.new_context().new_page()
            page.set_default_timeout(600_000)
            page.goto(url)
            page.fill("#token", token)
            page.click("button[type=submit]")
            page.wait_for_url(url)
            page.goto(url.rstrip("/") + "/queue")
            paint = page.wait_for_function(
                "() => performance.getEntriesByName('first-contentful-paint')[0]?.startTime"
            ).json_value()
            return float(paint) / 1000, ""
        finally:
            browser.close()


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float], scale: float = 1000, unit: str = "ms") -> str:
    return (
        f"{median(values) * scale:.0f} {unit} [{min(values) * scale:.0f}-{max(values) * scale:.0f}]"
    )


def measure(jobs: int, runs: int, window: float, log: Callable[[str], None]) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="dfarm-views-") as tmp:
        work = Path(tmp)
        (work / "hello.sh").write_text("#!/bin/sh\necho hello\n")
        (work / "hello.sh").chmod(0o755)
        (work / "hello.sub").write_text("executable = hello.sh\nqueue\n")
        deep = jobs * 4 // 5
        for name, count in (("deep1", deep), ("deep2", jobs - deep)):
            (work / f"{name}.sub").write_text(
                f"executable = hello.sh\nrequest_memory = 400GB\nqueue {count}\n"
            )
        cluster = LocalCluster(work / "home", workers=1, slots=1)
        cluster.scheduler_args = ("--web-port", "0")
        access = cluster.start()
        env = {k: v for k, v in os.environ.items() if not k.startswith("DFARM_")}
        env["DFARM_HOME"] = str(work / "home")
        scheduler = psutil.Process(cluster.processes["scheduler"].pid)
        token = access.token
        assert token is not None, "dfarm up gives the local user a token"
        try:
            with Client(scheduler=f"{access.host}:{access.port}", token=access.token) as client:
                while not client.workers():
                    time.sleep(0.05)
                url = cluster.web_url()
                while url is None:
                    time.sleep(0.05)
                    url = cluster.web_url()
                web = Web(url, token)
                submit_to_done(client, work, 1)  # warms the worker
                log("latency on the empty queue ...")
                empty = submit_to_done(client, work, runs)
                log(f"submitting {jobs:,} idle jobs ...")
                start = time.perf_counter()
                big, small = (
                    client.submit(work / f"{name}.sub", cwd=str(work)).id
                    for name in ("deep1", "deep2")
                )
                rows.append(
                    row(f"submit {jobs:,} idle jobs", f"{time.perf_counter() - start:.1f} s")
                )
                log("latency with the deep queue ...")
                quiet = submit_to_done(client, work, runs)
                log(f"scheduler CPU without clients ({window:.0f} s) ...")
                idle_cpu = cpu_percent(scheduler, window)
                stream = web.event_stream()
                how = (
                    f"their event stream {stream}"
                    if stream
                    else f"polling /api/queue every {POLL:.0f} s"
                )
                log(f"{CLIENTS} clients on the queue page ({how}) ...")
                with Followers(web, stream) as followers:
                    started = time.monotonic()
                    busy_cpu = cpu_percent(scheduler, window)
                    loaded = submit_to_done(client, work, runs)
                    # The monitor's window: only the time with the clients.
                    time.sleep(max(0.0, started + LAG_WINDOW + 1 - time.monotonic()))
                    lag = web.get("/api/overview").get("loop_lag")
                errors = followers.errors
                rows += latency_rows(empty, quiet, loaded, jobs, how)
                rows += lag_rows(lag)
                clients_cpu = max(0.0, busy_cpu - idle_cpu)  # idle may measure above busy
                rows.append(row(f"scheduler CPU for {CLIENTS} clients ({how})",
                                f"{clients_cpu:.1f}% of a core ({busy_cpu:.1f}% - {idle_cpu:.1f}%)"
                                + (f"; {len(errors)} failed: {errors[0]}" if errors else ""),
                                "< 5%", clients_cpu < 5))  # fmt: skip
                log("dq ...")
                rows += dq_rows(env, jobs)
                log("the queue page in Chromium ...")
                paint, why = first_paint(url, token)
                rows.append(row("queue page first paint (Chromium)",
                                why if paint is None else f"{paint * 1000:.0f} ms",
                                "< 1 s", None if paint is None else paint < 1))  # fmt: skip
                log("one request of each view: the scheduler's CPU ...")
                rows += request_rows(
                    client, web, scheduler, idle_cpu, (big, deep), (small, jobs - deep)
                )
        finally:
            cluster.stop()
    return rows


def latency_rows(
    empty: list[float], quiet: list[float], loaded: list[float], jobs: int, how: str
) -> list[Row]:
    vs_quiet, vs_empty = median(loaded) / median(quiet), median(loaded) / median(empty)
    return [
        row("trivial job submit-to-done, empty queue", spread(empty)),
        row(f"  with {jobs:,} idle jobs, no client", spread(quiet),
            baseline=f"empty {spread(empty)}", ratio=f"{median(quiet) / median(empty):.2f}"),
        row(f"  with {jobs:,} idle jobs and {CLIENTS} clients ({how})", spread(loaded),
            "<= 1.5x no client", vs_quiet <= 1.5, f"no client {spread(quiet)}", f"{vs_quiet:.2f}"),
        row("  the same, against the empty queue", spread(loaded), "<= 2x empty",
            vs_empty <= 2, f"empty {spread(empty)}", f"{vs_empty:.2f}"),
    ]  # fmt: skip


def lag_rows(lag: dict[str, float] | None) -> list[Row]:
    what = "scheduler loop lag with the clients, last minute, {}"
    if lag is None:
        note = f"{NA}: /api/overview has no loop_lag"
        return [row(what.format("p99"), note, "< 10 ms"), row(what.format("max"), note, "< 50 ms")]
    return [
        row(what.format("p99"), f"{lag['p99_ms']:.1f} ms", "< 10 ms", lag["p99_ms"] < 10),
        row(what.format("max"), f"{lag['max_ms']:.1f} ms", "< 50 ms", lag["max_ms"] < 50),
    ]


def dq_rows(env: dict[str, str], jobs: int) -> list[Row]:
    helped = subprocess.run(dq("--help"), env=env, capture_output=True, text=True).stdout
    rows = []
    out = subprocess.run(dq(), env=env, capture_output=True, text=True, timeout=900).stdout
    batch_default = "BATCH" in out.partition("\n")[0]
    if batch_default or "-batch" in helped:
        argv = dq() if batch_default else dq("-batch")
        took, _ = run_time(env, argv)
        label = "dq (batch view)" if batch_default else "dq -batch (batch view; not the default)"
        rows.append(row(label, f"{took:.2f} s", "< 0.3 s", took < 0.3))
    else:
        rows.append(row("dq (batch view)", f"{NA}: dq has no batch view", "< 0.3 s"))
    listing = dq("-nobatch") if "-nobatch" in helped else dq()
    first = first_line_time(env, listing)
    label = "dq -nobatch | head -1" if "-nobatch" in helped else "dq | head -1 (the job list)"
    rows.append(row(label, f"{first:.2f} s to the first line", "< 0.5 s", first < 0.5))
    took, rss = run_time(env, dq("--json"))
    rows.append(row(f"dq --json ({jobs:,} jobs)", f"{took:.2f} s", "< 3 s", took < 3))
    rows.append(row("  its peak RSS (client)", f"{rss:.0f} MiB", "flat: < 100 MiB", rss < 100))
    return rows


#: Scheduler CPU one request may take: "a few milliseconds" of the issue.
FEW_MS = 5.0


def scheduler_ms(
    process: psutil.Process, idle_percent: float, calls: int, call: Callable[[], object]
) -> float:
    """The scheduler's CPU for one of ``calls`` calls of ``call``, in milliseconds,
    less its idle CPU (``idle_percent`` of a core) over the same time."""
    before, start = process.cpu_times(), time.perf_counter()
    for _ in range(calls):
        call()
    elapsed, after = time.perf_counter() - start, process.cpu_times()
    used = (after.user - before.user) + (after.system - before.system)
    return 1000 * max(0.0, used - idle_percent / 100 * elapsed) / calls


def request_rows(
    client: Client,
    web: Web,
    scheduler: psutil.Process,
    idle_cpu: float,
    big: tuple[int, int],
    small: tuple[int, int],
) -> list[Row]:
    """The scheduler's CPU for one request of ``dq -analyze`` of the ``big`` cluster
    (id, jobs), then, the ``small`` one removed, of ``dhistory`` and the API's pages
    of finished jobs."""
    rows = []
    pages: list[int] = []
    took = scheduler_ms(scheduler, idle_cpu, 1, lambda: pages.extend(map(len, client.wire_pages())))
    took /= len(pages)
    rows.append(row(f"dq --json ({sum(pages):,} jobs): scheduler CPU a page of {max(pages):,}",
                    f"{took:.1f} ms ({len(pages)} pages)", f"< {FEW_MS:.0f} ms",
                    took < FEW_MS))  # fmt: skip
    took = scheduler_ms(scheduler, idle_cpu, 200, lambda: client.analyze_clusters([str(big[0])]))
    rows.append(row(f"dq -analyze CLUSTER ({big[1]:,} jobs): scheduler CPU a request",
                    f"{took:.1f} ms", f"< {FEW_MS:.0f} ms", took < FEW_MS))  # fmt: skip
    removed = client.remove([str(small[0])])
    assert len(removed.changed) == small[1], removed.skipped
    history: list[int] = []
    took = scheduler_ms(scheduler, idle_cpu, 5, lambda: history.append(len(client.history())))
    assert len(set(history)) == 1 and history[0] >= min(1000, small[1]), history
    requests = -(-history[0] // HISTORY_PAGE)
    rows.append(row(f"dhistory ({history[0]:,} jobs): scheduler CPU a request",
                    f"{took / requests:.1f} ms ({requests} requests, {took:.0f} ms in all)",
                    f"< {FEW_MS:.0f} ms", took / requests < FEW_MS))  # fmt: skip
    took = scheduler_ms(scheduler, idle_cpu, 20, lambda: web.get("/api/history"))
    rows.append(row(f"/api/history (a page of {HISTORY_PAGE}): scheduler CPU a request",
                    f"{took:.1f} ms", f"< {FEW_MS:.0f} ms", took < FEW_MS))  # fmt: skip
    page = f"/api/jobs?states=all&limit={QUERY_PAGE}"
    last = f"{page}&after={small[0]}.{small[1] - 3 * QUERY_PAGE}"  # among the finished ones
    took = scheduler_ms(scheduler, idle_cpu, 10, lambda: (web.get(page), web.get(last)))
    took /= 2
    rows.append(row(f"/api/jobs?states=all (a page of {QUERY_PAGE}): scheduler CPU a request",
                    f"{took:.1f} ms", f"< {FEW_MS:.0f} ms", took < FEW_MS))  # fmt: skip
    return rows


HEADERS = ("measure", "dfarm", "baseline", "ratio", "target", "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000, help="idle jobs (default 100,000)")
    parser.add_argument("--runs", type=int, default=5, help="trivial jobs per latency figure")
    parser.add_argument("--window", type=float, default=20, help="seconds of each CPU window")
    args = parser.parse_args()
    rows = measure(args.jobs, args.runs, args.window, lambda text: print(text, file=sys.stderr))
    print(f"\nmedian of {args.runs} jobs [min-max]")
    print(tabulate(rows, headers=HEADERS, disable_numparse=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
