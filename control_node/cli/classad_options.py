"""``-af`` and ``-constraint``, as condor_q and condor_history take them."""

from __future__ import annotations

import argparse
import sys

from control_node import render_classad
from scheduler.matching.classad import Expression

__all__ = ["add_classad_options", "parse_classad_args"]


def add_classad_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-af", "-autoformat", "--autoformat", nargs="+", metavar="ATTR",
        help="each job's values of these attributes or expressions, space-separated, one line"
        " a job; -af:jlhVr,tng as condor_q (j: job id, h: header, l: labels, V: quote strings,"
        " r: expressions unevaluated, ',' 't' 'n': separator, g: blank line between jobs)",
    )  # fmt: skip
    parser.add_argument(
        "-constraint", "--constraint", metavar="EXPR",
        help="only the jobs for which this ClassAd expression is true (JobStatus == 5, ...)",
    )  # fmt: skip


def parse_classad_args(
    parser: argparse.ArgumentParser, argv: list[str] | None
) -> tuple[argparse.Namespace, Expression | None, str]:
    """The arguments, ``-constraint``'s compiled expression and ``-af:``'s letters; a
    fault in either is a usage error (exit status 2)."""
    try:
        argv, af_options = render_classad.parse_autoformat(sys.argv[1:] if argv is None else argv)
    except ValueError as exc:
        parser.error(str(exc))
    args = parser.parse_args(argv)
    try:
        expr = None if args.constraint is None else render_classad.constraint(args.constraint)
        render_classad.check_attributes(args.autoformat or [])
    except ValueError as exc:
        parser.error(str(exc))
    return args, expr, af_options
