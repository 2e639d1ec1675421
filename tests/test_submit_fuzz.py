"""Seeded fuzzing of the submit-file parser: random text built from the pieces of the
submit language (keys, macros, functions, quoting, conditionals, continuations,
queue forms, CRLF) is either read or refused with a SubmitError naming the file
and a line of it, never anything else."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from control_node.submit import SubmitError, parse_description

KEYS = [
    "executable", "arguments", "environment", "input", "output", "error", "log", "initialdir",
    "transfer_input_files", "transfer_output_files", "request_cpus", "request_memory",
    "request_disk", "request_gpus", "priority", "max_retries", "notify_user", "notification",
    "requirements", "rank", "universe", "getenv", "periodic_hold", "periodic_remove",
    "periodic_release", "on_exit_hold", "on_exit_remove", "should_transfer_files",
    "when_to_transfer_output", "+JobFlavour", "MY.Score", "+ProjectName", "batch_name",
    "random_seed", "x", "Item", "process", "DOLLAR", "file", "v",
]  # fmt: skip
VALUES = [
    "job.sh", "in.txt", "out.$(Process)", "1", "-3", "2GB", "1.5 G", "lots", '"', "''", '""',
    "\"a 'b c' d\"", "A=1;B=2", '"A=1 B=\'x y\'"', "true", "False", "never", "Complete",
    "vanilla", "docker", 'OpSys == "LINUX"', "(Memory >", "Memory > 1 && Arch =?= \"X\"",
    "ExitCode != 0", "time() - QDate > 60", "a, b c", "items.txt", "run_0", "..", "/",
    "$(x)", "$(x:def)", "$(undefined)", "$(", "$()", "$$(Machine)", "$$(", "$ENV(HOME)",
    "$ENV(NOPE:d)", "$Fn(file)", "$Fqa(x)", "$Fz(x)", "$INT(x)", "$INT(x,%03d)", "$REAL(x)",
    "$SUBSTR(x,1,2)", "$SUBSTR(x)", "$CHOICE(Process,a,b)", "$CHOICE(9,a)", "$RANDOM_CHOICE(a,b)",
    "$RANDOM_INTEGER(1,5)", "$RANDOM_INTEGER(5,1)", "$(DOLLAR)", "\t", "\\", "#", "=", "\x07",
    "é", "{1, 2}", "[a=1]",
]  # fmt: skip
QUEUES = [
    "queue", "queue 3", "queue 0", "queue -1", "queue abc", "queue 2*2", "queue $(n)",
    "queue v in (a b c)", "queue v in (a, b", "queue v in [1:] (a b)", "queue v in [x] (a)",
    "queue v from items.txt", "queue v from nowhere.txt", "queue a, b from (\n1 2\n3\n)",
    "queue a,b from (", "queue v matching *.txt", "queue v matching dirs run_*",
    "queue 2 v in (a)", "queue input in (in.txt)", "queue from (\np\n)", "queue in ()",
    "queue v from [::2] items.txt", "queue v from seq 2 |", "queue x, y, z from items.txt",
]  # fmt: skip
CONDITIONALS = [
    "if defined x", "if ! defined x", "if true", "if $(x)", "if version >= 8.0", "elif false",
    "else", "endif", "if", "include : common.inc", "include : missing.inc", "include : self.inc",
    "include common.inc", "include command : echo request_cpus = 3 |", "include : $(x).inc",
    "include command : exit 1 |", "error : $(x)", "warning : $(x)", "error", "warning :",
]  # fmt: skip


def statement() -> st.SearchStrategy[str]:
    assignment = st.builds(
        lambda k, v, sep, cont: f"{k}{sep}{v}" + (" \\\n  " + v if cont else ""),
        st.sampled_from(KEYS),
        st.lists(st.sampled_from(VALUES), max_size=3).map(" ".join),
        st.sampled_from([" = ", "=", "\t=\t", " ", " := "]),
        st.booleans(),
    )
    return st.one_of(
        assignment,
        assignment,
        st.sampled_from(QUEUES),
        st.sampled_from(CONDITIONALS),
        st.sampled_from(["# comment", "", "   ", "garbage line", ")"]),
        st.text(alphabet="ab=$()\"' \\#+.\t", max_size=12),
    )


submit_texts = st.builds(
    lambda head, body, crlf: ("\r\n" if crlf else "\n").join([head, *body]),
    st.sampled_from(["executable = job.sh", "", "executable = nowhere.sh"]),
    st.lists(statement(), max_size=12),
    st.booleans(),
)


@settings(
    max_examples=400,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(text=submit_texts)
def test_the_parser_reads_or_refuses_with_a_line(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        (base / "job.sh").write_text("#!/bin/sh\n")
        (base / "in.txt").write_text("x\n")
        (base / "items.txt").write_text("a\nb\n")
        (base / "common.inc").write_text("request_cpus = 2\n")
        (base / "self.inc").write_text("a = 1\ninclude : self.inc\n")
        (base / "run_0").mkdir()
        path = base / "fuzz.sub"
        path.write_text(text, encoding="utf-8")
        try:
            parse_description(path, None, 1, folder, 7, {"HOME": "/nonexistent"})
        except SubmitError as exc:
            if exc.path == str(base / "self.inc"):  # the include that closes the cycle
                assert exc.line == 2 and "a cycle" in str(exc), exc
                return
            assert exc.path == str(path), exc
            if exc.line is None:
                # Only a file that queues nothing is refused as a whole.
                assert "queue" not in text.lower(), exc
            else:
                assert 1 <= exc.line <= text.count("\n") + 2, exc
