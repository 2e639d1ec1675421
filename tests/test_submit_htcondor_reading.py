"""Submit-file readings that follow condor_submit 24 where it is easy to misread: a
byte-order mark, comments inside continued values, blank lines of item lists, and
``queue 0`` (which queues nothing, and succeeds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TestCluster, write

from control_node.submit_file import SubmitDescription, SubmitFileError, parse_submit_text


@pytest.fixture
def farm(tmp_path: Path) -> Path:
    write(tmp_path / "a.sh", "#!/bin/sh\necho $@\n", True)
    return tmp_path


def parse(cwd: Path, text: str) -> SubmitDescription:
    return parse_submit_text(text, filename="job.sub", cluster=1, cwd=str(cwd), environ={}, seed=1)


def test_a_byte_order_mark_is_refused_with_how_to_remove_it(farm: Path) -> None:
    with pytest.raises(SubmitFileError) as err:
        parse(farm, "\ufeffexecutable = a.sh\nqueue\n")
    assert err.value.line == 1
    assert "byte-order mark" in err.value.message and "save it as plain UTF-8" in err.value.message
    write(farm / "inc.sub", "\ufeffarguments = x\n")
    with pytest.raises(SubmitFileError) as err:
        parse(farm, "executable = a.sh\ninclude : inc.sub\nqueue\n")
    assert (err.value.path, err.value.line) == (str(farm / "inc.sub"), 1)


def test_a_comment_inside_a_continued_value(farm: Path) -> None:
    text = "executable = a.sh\narguments = one \\\n# note\n  two\nqueue\n"
    with pytest.raises(SubmitFileError) as err:
        parse(farm, text)
    assert err.value.line == 3 and "comment line inside a value continued" in err.value.message
    # A comment line that ends with a backslash itself is skipped, as condor_submit does.
    text = "executable = a.sh\narguments = one \\\n# note \\\n  two\nqueue\n"
    assert parse(farm, text).procs[0].arguments == ["one", "two"]


def test_blank_lines_of_a_from_list_are_items_that_keep_the_values(farm: Path) -> None:
    write(farm / "items.txt", "a 1\n\nb 2\n# c 3\n  \n")
    desc = parse(farm, "executable = a.sh\narguments = $(v) $(w)\nqueue v, w from items.txt\n")
    assert [p.arguments for p in desc.procs] == [
        ["a", "1"], ["a", "1"], ["b", "2"], ["#", "c", "3"], ["#", "c", "3"],
    ]  # fmt: skip
    desc = parse(farm, "executable = a.sh\narguments = x$(v)\nqueue v from (\n\na\n# c\n\nb\n)\n")
    assert [p.arguments for p in desc.procs] == [["x"], ["xa"], ["xa"], ["xb"]]


def test_queue_zero_queues_nothing_and_succeeds(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    cluster: TestCluster = make_cluster(workers=0)
    write(tmp_path / "a.sh", "#!/bin/sh\n", True)
    write(tmp_path / "zero.sub", "executable = a.sh\nqueue 0\n")
    out = cluster.run("dsub", "zero.sub", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "zero.sub queues no jobs: nothing was submitted." in out.stdout
    out = cluster.run("dsub", "--dry-run", "--json", "zero.sub", cwd=tmp_path)
    assert (out.returncode, json.loads(out.stdout)) == (0, [])
    assert json.loads(cluster.run("dq", "--json").stdout) == []


def test_a_log_whose_folder_is_missing_is_a_warning_then_a_clear_fetch_error(
    cluster: TestCluster, tmp_path: Path
) -> None:
    write(tmp_path / "a.sh", "#!/bin/sh\necho hi\n", True)
    write(tmp_path / "blocker", "a file, where the log's folder should be\n")
    write(
        tmp_path / "job.sub",
        "executable = a.sh\noutput = out.txt\nlog = blocker/logs/job.log\nqueue\n",
    )
    out = cluster.run("dsub", "--wait", "job.sub", cwd=tmp_path)
    assert "job.sub:3: the folder of log file 'blocker/logs/job.log' does not exist" in out.stderr
    assert "cannot write the event log" in out.stderr and "(log)" in out.stderr
    assert "Traceback" not in out.stderr and out.returncode != 0
    assert (tmp_path / "out.txt").read_text() == "hi\n"
    write(tmp_path / "job.sub", "executable = a.sh\nlog = made/job.log\nqueue\n")
    out = cluster.run("dsub", "--wait", "job.sub", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "job.sub:2: the folder of log file 'made/job.log' does not exist" in out.stderr
    assert " 2.0 terminated: exit code 0" in (tmp_path / "made" / "job.log").read_text()


def test_dollardollar_is_kept_for_the_match_as_htcondor_keeps_it(farm: Path) -> None:
    text = 'executable = a.sh\n+Price = "$$(DOLLARDOLLAR)5"\narguments = x$$(DOLLARDOLLAR)\nqueue\n'
    proc = parse(farm, text).procs[0]
    assert proc.attributes == {"Price": '"$$(DOLLARDOLLAR)5"'}
    assert proc.arguments == ["x$$(DOLLARDOLLAR)"]  # a literal $$ once matched


def test_max_retries_bounds_on_exit_remove_as_condor_submit_folds_it(
    make_cluster,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    text = "executable = a.sh\non_exit_remove = ExitCode == 5\nmax_retries = 2\nqueue\n"
    write(tmp_path / "a.sh", "#!/bin/sh\n", True)
    proc = parse(tmp_path, text).procs[0]
    assert proc.attributes == {
        "OnExitRemove": "NumJobCompletions > JobMaxRetries || ExitCode is 0 || ExitCode == 5",
    }
    assert proc.max_retries == 2  # the job ad's JobMaxRetries
    cluster: TestCluster = make_cluster(workers=1)
    for code, starts in ((1, 3), (5, 1)):  # retried twice, then ends; 5 ends at once
        write(tmp_path / "a.sh", f"#!/bin/sh\nexit {code}\n", True)
        write(tmp_path / "job.sub", text)
        out = cluster.run("dsub", "--wait", "--json", "job.sub", cwd=tmp_path)
        (job,) = json.loads(out.stdout)["jobs"]
        assert (job["state"], job["exit_code"], job["num_starts"]) == ("completed", code, starts)


def test_multi_line_values(farm: Path) -> None:
    text = (
        "executable = a.sh\narguments @=END\n  -a 1\n  # left out\n\n  -b \\\n  2\n  @END\n"
        'MY.Sum @= S\n  1 +\n  2\n@S\nnote @=\nqueue\n@\n+Note = "$(note)"\nqueue\n'
    )
    proc = parse(farm, text).procs[0]
    assert proc.arguments == ["-a", "1", "-b", "2"]
    assert proc.attributes == {"Sum": "1 +\n2", "Note": '"queue"'}
    for text, line, message in [
        ("arguments @=END\n  a\nqueue\n", 2, "has no line '@END'"),
        ("+Note @=END\n1\n@END\nqueue\n", 2, "write 'MY.Note @=TAG'"),
        ("output @=END\na\nb\n@END\nqueue\n", 2, "the value of 'output' spans lines"),
    ]:
        with pytest.raises(SubmitFileError) as err:
            parse(farm, "executable = a.sh\n" + text)
        assert err.value.line == line and message in err.value.message


def test_request_cpus_takes_an_expression_that_gives_a_number(farm: Path) -> None:
    text = "executable = a.sh\nrequest_cpus = {}\nrequest_gpus = ifThenElse(true, 1, 0)\nqueue\n"
    proc = parse(farm, text.format("2 * 2")).procs[0]
    assert (proc.request_cpus, proc.request_gpus) == (4, 1)
    with pytest.raises(SubmitFileError) as err:
        parse(farm, text.format("many"))
    assert err.value.line == 2
    assert "request_cpus = many gives undefined without a machine" in err.value.message
