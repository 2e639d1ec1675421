"""The web dashboard in a real headless Chromium (Debian's, driven by Playwright):
log in, see the workers, submit a job with a data file through the form, watch it
go from idle to done, read its stdout, download an output, run a small sweep and
see its plot, hold and release a job, and check that a second user reaches none of
the first one's jobs or files.

``DFARM_SCREENSHOTS=DIR`` also saves the screenshots of docs/web.md into DIR.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import TestCluster, wait_until, write
from webtools import add_user, web_cluster

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
#: Milliseconds Playwright waits for what the page should show.
WAIT = 60_000

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium at /usr/bin/chromium (make test installs it as root)",
)


@pytest.fixture
def browser() -> Iterator[object]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def log_in(browser: object, url: str, token: str) -> object:
    """A fresh browser context (its own cookies) logged in with ``token``."""
    page = browser.new_context(viewport={"width": 1200, "height": 800}).new_page()
    page.set_default_timeout(WAIT)
    page.goto(url)
    assert page.url.endswith("/login")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url(url)
    return page


def test_dashboard_in_a_browser(
    make_cluster: Callable[..., TestCluster], browser: object, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    shots = os.environ.get("DFARM_SCREENSHOTS")
    cluster, url = web_cluster(make_cluster)
    page = log_in(browser, url, cluster.token)
    expect(page.locator(".tile").first).to_contain_text("workers")

    # Two workers.
    page.click("nav >> text=Workers")
    expect(page.locator("#workers tbody tr")).to_have_count(2)
    expect(page.locator("#workers tbody")).to_contain_text("w1")
    expect(page.locator("#workers tbody")).to_contain_text("w2")

    # A job that keeps w1 busy until the test lets it go, so that the next one waits.
    flag = tmp_path / "go"
    write(tmp_path / "block.sh", f"#!/bin/sh\nwhile [ ! -e {flag} ]; do sleep 0.1; done\n", True)
    write(tmp_path / "block.sub", "executable = block.sh\nclient = w1\nqueue\n")
    assert cluster.run("dsub", "block.sub", cwd=tmp_path).returncode == 0

    # Submit through the form: an executable, a data file, arguments, a worker.
    exe = write(tmp_path / "analyze.sh", '#!/bin/sh\ncat numbers.txt\necho "sum: $1" > sum.txt\n')
    data = write(tmp_path / "numbers.txt", "1 2 3\n")
    page.click("nav >> text=Submit")
    page.set_input_files("#executable", str(exe))
    page.set_input_files("#data", str(data))
    page.fill("#arguments", "six")
    page.select_option("#worker", "w1")  # a list of the connected workers
    page.click("#submit")
    expect(page.locator("#submitted")).to_contain_text("1 job(s) submitted to cluster 2")
    job_id = "2.0"

    # In the queue, waiting for w1: hold it, release it.
    page.click("nav >> text=Queue")
    row = page.locator(f'#queue tr[data-job="{job_id}"]')
    expect(row.locator(".state")).to_have_text("idle")
    expect(row).to_contain_text("0 of 1 matching worker(s) free")  # one line a job
    if shots:
        page.screenshot(path=str(Path(shots) / "web-queue.png"))
    row.locator("button", has_text="hold").click()
    expect(row.locator(".state")).to_have_text("held")
    row.locator("button", has_text="release").click()
    expect(row.locator(".state")).to_have_text("idle")

    # Its page follows it from idle to completed, live.
    row.locator(f"a >> text={job_id}").click()
    expect(page.locator("#state")).to_have_text("idle")
    expect(page.locator("#why")).to_contain_text("could run it")  # dq -analyze's words
    flag.touch()
    expect(page.locator("#state")).to_have_text("completed", timeout=WAIT)
    expect(page.locator("#exit")).to_have_text("exit code 0")
    expect(page.locator("#stdout")).to_have_text("1 2 3\n")
    with page.expect_download() as download:
        page.click("#files >> text=sum.txt")
    assert Path(download.value.path()).read_text() == "sum: six\n"

    # A small sweep, from a whole submit file, and its plot.
    square = write(tmp_path / "square.sh", "#!/bin/sh\necho $(($1 * $1))\n")
    sweep = write(tmp_path / "sweep.sub", "executable = square.sh\narguments = $(x)\n"
                  "queue x in (1, 2, 3, 4, 5, 6)\n")  # fmt: skip
    page.click("nav >> text=Submit")
    page.set_input_files("#executable", str(square))
    page.set_input_files("#submit_file", str(sweep))
    page.click("#submit")
    expect(page.locator("#submitted")).to_contain_text("6 job(s) submitted to cluster 3")
    page.click("text=Results of cluster 3")
    expect(page.locator("[data-field=pending]")).to_have_text("0", timeout=WAIT)
    expect(page.locator("[data-field=results]")).to_have_text("6")
    expect(page.locator("#summary")).to_contain_text("15.1667")  # mean of 1, 4, ..., 36
    plot = page.locator("img.plot").first
    expect(plot).to_be_visible()
    # (The page's CSP allows no eval: poll from here.)
    width = wait_until(lambda: plot.evaluate("img => img.complete && img.naturalWidth"))
    assert width >= 600
    if shots:
        page.screenshot(path=str(Path(shots) / "web-sweep.png"), full_page=True)

    # Another user: none of the first one's jobs, outputs or plots, by link or by API.
    other = log_in(browser, url, add_user(cluster, "bob"))
    for path in [f"jobs/{job_id}", f"jobs/{job_id}/stdout", "clusters/3", f"api/jobs/{job_id}"]:
        response = other.goto(url + path)
        assert response.status == 404, path
        assert "no job of yours" in other.content()
        assert "1 2 3" not in other.content()
    response = other.request.get(url + f"jobs/{job_id}/files/sum.txt")
    assert response.status == 404 and "sum: six" not in response.text()
    assert other.request.get(url + "clusters/3/plot.png").status == 404
    assert other.request.get(url + f"api/jobs?ids={job_id}&states=all").json() == []
    missing = other.goto(url + "no/such/page")
    assert missing.status == 404 and other.locator("nav >> text=Queue").is_visible()
    other.goto(url + "queue?all=1")
    assert not re.search(r"/jobs/2\.0", other.content())  # no link to another's job
