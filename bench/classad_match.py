"""Matchmaking speed of a ``requirements`` expression over 1,000 worker ads: dfarm's
ClassAd evaluator (:mod:`scheduler.matching.classad`) beside HTCondor's own library
(``classad2``, from the ``htcondor`` wheel, when installed).

    .venv/bin/python bench/classad_match.py [--workers 1000] [--rounds 20]

Prints microseconds per evaluation (one job's requirements against one worker ad)
for each, and how many workers matched (the same for both, or the bench fails). The
names are scoped (``TARGET.``): classad2 alone does not look a bare name up in the
other ad, as HTCondor's daemons do.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from scheduler.matching.requirements import compile_requirements

REQUIREMENTS = (
    'TARGET.Cpus >= MY.RequestCpus && TARGET.Memory >= MY.RequestMemory && TARGET.OpSys == "LINUX"'
    ' && TARGET.Arch == "X86_64" && TARGET.OpSysAndVer =!= undefined'
    ' && TARGET.HasDocker =?= true && regexp("^w[0-9]*[2468]$", TARGET.Name)'
)
JOB = {"RequestCpus": 4, "RequestMemory": 8192}


def machines(n: int) -> list[dict[str, Any]]:
    return [
        {
            "Name": f"w{i}", "Cpus": 1 + i % 32, "Memory": 1024 * (1 + i % 64), "OpSys": "LINUX",
            "Arch": "X86_64" if i % 5 else "aarch64", "OpSysAndVer": "Ubuntu22",
            "HasDocker": i % 2 == 0, "GPUs": i % 4, "LoadAvg": 0.5,
        }
        for i in range(n)
    ]  # fmt: skip


def timed(rounds: int, n: int, once: Callable[[], int]) -> tuple[float, int]:
    """Microseconds per evaluation (best round) and the matches of one round."""
    best, matched = float("inf"), 0
    for _ in range(rounds):
        start = time.perf_counter()
        matched = once()
        best = min(best, time.perf_counter() - start)
    return best / n * 1e6, matched


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    ads = machines(args.workers)
    ours = [{k.lower(): v for k, v in ad.items()} for ad in ads]
    job = {k.lower(): v for k, v in JOB.items()}
    rule = compile_requirements(REQUIREMENTS)
    us, matched = timed(args.rounds, len(ads), lambda: sum(rule.matches(ad, job) for ad in ours))
    print(f"dfarm evaluator: {us:.2f} us per evaluation, {matched} of {len(ads)} match")
    try:
        import classad2
    except ImportError:
        print("classad2: not installed (pip install htcondor==24.12.24)")
        return
    their_ads = [classad2.ClassAd(ad) for ad in ads]
    their_job = classad2.ClassAd(JOB)
    tree = classad2.ExprTree(REQUIREMENTS)

    def evaluate() -> int:
        return sum(tree.eval(their_job, ad) is True for ad in their_ads)

    them, same = timed(args.rounds, len(ads), evaluate)
    print(f"classad2 ExprTree.eval: {them:.2f} us per evaluation, {same} of {len(ads)} match")
    their_job["Requirements"] = tree

    def symmetric() -> int:
        return sum(ad.matches(their_job) for ad in their_ads)

    fast, also = timed(args.rounds, len(ads), symmetric)
    print(f"classad2 ClassAd.matches: {fast:.2f} us per evaluation, {also} of {len(ads)} match")
    assert matched == same == also, (matched, same, also)


if __name__ == "__main__":
    main()
