"""Options of the commands that fetch results (``dsub --wait``, ``dwait``, ``dfetch``)."""

from __future__ import annotations

import argparse


def add_per_job_option(parser: argparse.ArgumentParser) -> None:
    """``--per-job``: a folder for every job, as the ``DfarmPerJob`` attribute asks."""
    parser.add_argument(
        "--per-job",
        action="store_true",
        help="a <cluster>.<proc>/ folder for every job whose results are fetched (default:"
        " only for jobs with output files, a large stdout or stderr, or a failure)",
    )
