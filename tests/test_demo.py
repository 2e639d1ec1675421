"""`make demo` end to end: the README's first command must keep working."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_demo_runs_every_example(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DFARM_")}
    env.update(DFARM_DEMO_HOME=str(tmp_path / "home"), DFARM_DEMO_RESULTS=str(tmp_path / "out"))
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    result = subprocess.run(
        ["bash", str(ROOT / "submit_examples" / "demo.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = tmp_path / "out"
    assert "Hello from job 1.0" in (out / "1.0" / "stdout").read_text()
    assert "rows: 1000" in (out / "2.0" / "stdout").read_text()
    assert (out / "pi.out").read_text().startswith("3.14159265358979323846")
    assert (out / "pi.err").read_text() == ""
    assert "3.0 terminated: exit code 0" in (out / "pi.log").read_text()
    assert "config.yaml not found" in (out / "4.0" / "stderr").read_text()
    squares = [(out / f"5.{i}" / "stdout").read_text() for i in range(10)]
    assert squares == [f"{i} squared is {i * i}\n" for i in range(10)]
    assert "14 job(s): 14 completed" in result.stdout
    assert "Cluster 6: 100 jobs, 100 results, 0 failures, 0 pending" in result.stdout
    assert (out / "montecarlo.png").read_bytes().startswith(b"\x89PNG")
    assert "Cluster 7: 12 jobs, 12 results, 0 failures" in (out / "grid.txt").read_text()
    assert_twin_primes_found((out / "map_primes.txt").read_text())
    leftovers = [p for p in psutil.process_iter(["cmdline"])
                 if str(tmp_path) in " ".join(p.info["cmdline"] or [])]  # fmt: skip
    assert not leftovers


def assert_twin_primes_found(text: str) -> None:
    """``map_primes.py``'s output names a twin-prime pair above a million."""
    found = re.search(r"twin primes above a million: \((\d+), (\d+)\)", text)
    assert found, text
    low, high = int(found[1]), int(found[2])

    def prime(k: int) -> bool:
        return all(k % d for d in range(2, math.isqrt(k) + 1))

    assert low > 1_000_000 and high == low + 2 and prime(low) and prime(high), text
