"""The DAG file reader: every example of DAGMan's manual read into the nodes, edges
and settings the manual describes; what DAGMan refuses and what dfarm does not run
refused with the file and line; and files that HTCondor's own ``htcondor.dags`` writes
read back into the workflow it was given."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from htcondor_oracle import HTCONDOR, _env, condor_jobs

from control_node.dag_builder import DagBuilder, DagBuildError
from control_node.dag_dot import dot_text, write_dot_file
from control_node.dag_file import DagFileError, read_dag
from control_node.dag_model import Dag, DagNode
from control_node.submit_quoting import parse_arguments

SUBMIT = "executable = /bin/true\nqueue\n"


def write(folder: Path, files: dict[str, str], submit: tuple[str, ...] = ()) -> None:
    """Write ``files`` (name -> text) and a trivial submit file for each of ``submit``."""
    for name in submit:
        files.setdefault(name, SUBMIT)
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


def edges(dag: Dag) -> set[tuple[str, str]]:
    return {(p, n.name) for n in dag.nodes.values() for p in n.parents}


def read_error(path: Path) -> str:
    with pytest.raises(DagFileError) as caught:
        read_dag(path)
    return str(caught.value)


DIAMOND = """\
# File name: diamond.dag

JOB A A.sub
JOB B B.sub
JOB C C.sub
JOB D D.sub
PARENT A CHILD B C
PARENT B C CHILD D
"""
DIAMOND_EDGES = {("A", "B"), ("A", "C"), ("B", "D"), ("C", "D")}
ABCD = ("A.sub", "B.sub", "C.sub", "D.sub")


# ------------------------------------------------------------------- the manual


def test_the_diamond(tmp_path: Path) -> None:
    write(tmp_path, {"diamond.dag": DIAMOND}, ABCD)
    dag = read_dag(tmp_path / "diamond.dag")
    assert list(dag.nodes) == ["A", "B", "C", "D"]
    assert edges(dag) == DIAMOND_EDGES
    assert dag.nodes["C"].submit_file == "C.sub"
    assert dag.submit_path("C") == tmp_path / "C.sub"
    assert dag.nodes["D"].line == 6 and dag.nodes["D"].file == str(tmp_path / "diamond.dag")
    assert dag.children("A") == ["B", "C"]
    assert dag.child_lists() == {"A": ["B", "C"], "B": ["D"], "C": ["D"], "D": []}


def test_edges_on_separate_lines_give_the_same_diamond(tmp_path: Path) -> None:
    text = DIAMOND.replace("PARENT B C CHILD D", "PARENT B CHILD D\nPARENT C CHILD D")
    write(tmp_path, {"d.dag": text}, ABCD)
    assert edges(read_dag(tmp_path / "d.dag")) == DIAMOND_EDGES


def test_many_to_many(tmp_path: Path) -> None:
    text = "JOB p1 x.sub\nJOB p2 x.sub\nJOB c1 x.sub\nJOB c2 x.sub\nPARENT p1 p2 CHILD c1 c2\n"
    write(tmp_path, {"m.dag": text}, ("x.sub",))
    assert edges(read_dag(tmp_path / "m.dag")) == {
        (p, c) for p in ("p1", "p2") for c in ("c1", "c2")
    }


def test_keywords_any_case_comments_continuation_and_forward_references(tmp_path: Path) -> None:
    text = (
        "# a comment\n"
        "parent A child \\\n"
        "# a commented-out continuation line \\\n"
        "    B C\n"
        "  Job A A.sub\n"
        "job B B.sub DoNe\n"
        "JOB C C.sub noop\n"
        "# JOB D D.sub \\\n"
        "Retry A 2\n"
    )
    write(tmp_path, {"c.dag": text}, ("A.sub", "B.sub"))
    dag = read_dag(tmp_path / "c.dag")
    assert edges(dag) == {("A", "B"), ("A", "C")}
    assert dag.nodes["B"].done and dag.nodes["C"].noop and dag.nodes["A"].retry == 2
    assert "D" not in dag.nodes
    assert dag.nodes["A"].line == 5


def test_vars_of_the_manual(tmp_path: Path) -> None:
    text = (
        DIAMOND.replace("JOB D D.sub", "JOB D D.sub\nJOB NodeA A.sub\nJOB NodeB A.sub")
        + 'VARS A state="Wisconsin"\n'
        + 'VARS NodeA first="Alberto Contador"\n'
        + 'VARS NodeA second="\\"\\"Andy Schleck\\"\\""\n'
        + 'VARS NodeA third="Lance\\\\ Armstrong"\n'
        + "VARS NodeA fourth=\"Vincenzo ''The Shark'' Nibali\"\n"
        + 'VARS NodeA misc="!@#$%^&*()_-=+=[]{}?/"\n'
        + 'VARS NodeB second="\\\\\\"Andreas_Kloden\\\\\\""\n'
        + "VARS NodeB fourth=\"Bernard_'The_Badger'_Hinault\"\n"
        + "VARS NodeB args=\"'Nairo Quintana' 'Chris Froome'\"  other = \"tab\there\"\n"
        + 'VARS B nodename="$(JOB)" outfilename="$(JOB)-output" noderetry="$(RETRY)"\n'
        + 'VARS C My.A="\\"bob\\"" +B="\\"bob\\""\n'
        + 'VARS D a="foo"\nVARS D a="bar"\n'
    )
    write(tmp_path, {"v.dag": text}, ABCD)
    dag = read_dag(tmp_path / "v.dag")
    assert dag.nodes["A"].vars == {"state": "Wisconsin"}
    assert dag.nodes["NodeA"].vars == {
        "first": "Alberto Contador",
        "second": '""Andy Schleck""',
        "third": "Lance\\ Armstrong",
        "fourth": "Vincenzo ''The Shark'' Nibali",
        "misc": "!@#$%^&*()_-=+=[]{}?/",
    }
    assert dag.nodes["NodeB"].vars == {
        "second": '\\"Andreas_Kloden\\"',
        "fourth": "Bernard_'The_Badger'_Hinault",
        "args": "'Nairo Quintana' 'Chris Froome'",
        "other": "tab\there",
    }
    assert dag.nodes["B"].vars == {
        "nodename": "B",
        "outfilename": "B-output",
        "noderetry": "$(RETRY)",
    }
    assert dag.nodes["C"].vars == {"My.A": '"bob"', "My.B": '"bob"'}
    assert dag.nodes["D"].vars == {"a": "bar"}
    assert all(not n.append_vars for n in dag.nodes.values())


def test_vars_of_the_advanced_pages(tmp_path: Path) -> None:
    text = (
        '# File: example.dag\nJOB A sample.sub\nVARS A test_case="$(JOB)-$(ClusterId)"\n'
        'JOB ONLY sample.sub\nVARS ONLY custom_macro="foo"\nVARS ONLY custom_macro="bar"\n'
        "JOB B shared.sub\nJOB C shared.sub\n"
        'VARS B filename="beta"\nVARS C filename="charlie"\n'
        'VARS B My.name="\\"Greg\\"" +other="\\"Cole\\"" with.dot="1"\n'
    )
    write(tmp_path, {"example.dag": text}, ("sample.sub", "shared.sub"))
    n = read_dag(tmp_path / "example.dag").nodes
    assert n["A"].vars == {"test_case": "A-$(ClusterId)"}
    assert n["ONLY"].vars == {"custom_macro": "bar"}
    assert n["B"].vars == {
        "filename": "beta",
        "My.name": '"Greg"',
        "My.other": '"Cole"',
        "with.dot": "1",
    }
    assert n["C"].vars == {"filename": "charlie"}


def test_quoted_file_and_folder_names(tmp_path: Path) -> None:
    text = 'JOB A "my job.sub" DIR "run 1"\nSPLICE S "inner dag.dag"\n'
    files = {"d.dag": text, "run 1/my job.sub": SUBMIT, "inner dag.dag": "JOB B b.sub\n"}
    write(tmp_path, files, ("b.sub",))
    dag = read_dag(tmp_path / "d.dag")
    assert (dag.nodes["A"].submit_file, dag.nodes["A"].directory) == ("my job.sub", "run 1")
    assert dag.submit_path("A") == tmp_path / "run 1" / "my job.sub"
    assert list(dag.nodes) == ["A", "S+B"]


def test_vars_prepend_append_and_the_default(tmp_path: Path) -> None:
    text = 'JOB A a.sub\nVARS A PREPEND var1="A"\nVARS A APPEND var2="B"\nVARS A var3="C"\n'
    write(tmp_path, {"p.dag": text}, ("a.sub",))
    node = read_dag(tmp_path / "p.dag").nodes["A"]
    assert node.vars == {"var1": "A", "var2": "B", "var3": "C"}
    assert node.append_vars == ["var2"]
    write(
        tmp_path,
        {"q.dag": "CONFIG q.config\n" + text, "q.config": "DAGMAN_DEFAULT_APPEND_VARS = True\n"},
    )
    dag = read_dag(tmp_path / "q.dag")
    assert dag.nodes["A"].append_vars == ["var2", "var3"]
    assert dag.config == {"DAGMAN_DEFAULT_APPEND_VARS": "true"}


def test_all_nodes_and_the_last_command_wins(tmp_path: Path) -> None:
    text = (
        "# File: all_ex.dag\n"
        "JOB A node.sub\nJOB B node.sub\nJOB C node.sub\n\n"
        "SCRIPT PRE ALL_NODES my_script $JOB\n\n"
        'VARS ALL_NODES name="$(JOB)"\n\n'
        "# This overrides the above VARS command for node B.\n"
        'VARS B name="nodeB"\n\n'
        "RETRY all_nodes 3\n"
    )
    write(tmp_path, {"all_ex.dag": text}, ("node.sub",))
    dag = read_dag(tmp_path / "all_ex.dag")
    assert {n: dag.nodes[n].vars["name"] for n in "ABC"} == {"A": "A", "B": "nodeB", "C": "C"}
    assert all(dag.nodes[n].retry == 3 for n in "ABC")
    pre = dag.nodes["C"].pre
    assert pre is not None and (pre.executable, pre.arguments) == ("my_script", ["$JOB"])
    assert dag.nodes["A"].pre is not pre  # each node has its own
    write(tmp_path, {"o.dag": 'JOB A node.sub\nVARS A name="A"\nVARS ALL_NODES name="X"\n'})
    assert read_dag(tmp_path / "o.dag").nodes["A"].vars == {"name": "X"}


def test_retry_abort_priority_and_scripts_of_the_manual(tmp_path: Path) -> None:
    text = (
        DIAMOND
        + "RETRY  C 3\nABORT-DAG-ON C 10 RETURN 1\nPRIORITY C 1\n"
        + "RETRY B 2 UNLESS-EXIT 42\nABORT-DAG-ON D 7\n"
        + "SCRIPT PRE  B  pre.sh $JOB .gz\nSCRIPT POST A stage-out job_status $RETURN\n"
        + "SCRIPT DEFER 4 300 POST D post.sh $RETRY $MAX_RETRIES\n"
        + "PRE_SKIP B 99\nPRIORITY A -5\n"
    )
    write(tmp_path, {"r.dag": text}, ABCD)
    n = read_dag(tmp_path / "r.dag").nodes
    assert (n["C"].retry, n["C"].retry_unless_exit, n["C"].abort_on, n["C"].priority) == (
        3,
        None,
        (10, 1),
        1,
    )
    assert (n["B"].retry, n["B"].retry_unless_exit, n["B"].pre_skip) == (2, 42, 99)
    assert n["D"].abort_on == (7, None) and n["A"].priority == -5
    assert n["B"].pre is not None and n["B"].pre.arguments == ["$JOB", ".gz"]
    post = n["A"].post
    assert post is not None and (post.when, post.executable, post.line) == ("POST", "stage-out", 15)
    assert post.arguments == ["job_status", "$RETURN"]
    deferred = n["D"].post
    assert deferred is not None and (deferred.defer_status, deferred.defer_time) == (4, 300)
    assert all(node.hold is None for node in n.values())


def test_category_and_maxjobs(tmp_path: Path) -> None:
    text = DIAMOND + "CATEGORY B sims\nCATEGORY C sims\nMAXJOBS sims 1\n"
    write(tmp_path, {"t.dag": text}, ABCD)
    dag = read_dag(tmp_path / "t.dag")
    assert [dag.nodes[x].category for x in "ABCD"] == [None, "sims", "sims", None]
    assert dag.max_jobs == {"sims": 1}


def test_dir_and_noop(tmp_path: Path) -> None:
    text = (
        "JOB A a.sub DIR work\nJOB OnlyPreNode noop.sub NOOP\n"
        "SCRIPT PRE OnlyPreNode prescript.sh\nPARENT OnlyPreNode CHILD A\n"
    )
    write(tmp_path, {"d.dag": text, "work/a.sub": SUBMIT})
    dag = read_dag(tmp_path / "d.dag")
    assert dag.nodes["A"].directory == "work"
    assert dag.folder("A") == tmp_path / "work"
    assert dag.nodes["OnlyPreNode"].noop  # its submit file need not exist


def test_a_diamond_spliced_between_two_nodes(tmp_path: Path) -> None:
    top = (
        "# Outer DAG: topLevel.dag\nJOB X simple-job.sub\nJOB Y simple-job.sub\n\n"
        "# This is an instance of diamond.dag, given the symbolic name DIAMOND\n"
        "SPLICE DIAMOND diamond.dag\n\n"
        "PARENT X CHILD DIAMOND\nPARENT DIAMOND CHILD Y\n"
    )
    inner = "".join(f"JOB {x} simple-job.sub\n" for x in "ABCD")
    inner += "PARENT A CHILD B C\nPARENT B C CHILD D\n"
    write(tmp_path, {"topLevel.dag": top, "diamond.dag": inner}, ("simple-job.sub",))
    dag = read_dag(tmp_path / "topLevel.dag")
    assert set(dag.nodes) == {"X", "Y", "DIAMOND+A", "DIAMOND+B", "DIAMOND+C", "DIAMOND+D"}
    assert edges(dag) == {
        ("X", "DIAMOND+A"),
        ("DIAMOND+A", "DIAMOND+B"),
        ("DIAMOND+A", "DIAMOND+C"),
        ("DIAMOND+B", "DIAMOND+D"),
        ("DIAMOND+C", "DIAMOND+D"),
        ("DIAMOND+D", "Y"),
    }


X_DAG = (
    "# Example: X.dag\n"
    + "".join(f"JOB {x} simple-job.sub\n" for x in "ABCDEFG")
    + "\n# Make an X-shaped dependency graph\nPARENT A B C CHILD D\nPARENT D CHILD E F G\n"
)
S1_DAG = (
    "# Top-level DAG: s1.dag\nJOB A simple-job.sub\nJOB B simple-job.sub\n\n"
    "SPLICE X1 X.dag\nSPLICE X2 X.dag\n\n"
    "PARENT A CHILD X1\nPARENT X1 CHILD X2\nPARENT X2 CHILD B\n"
)


def x_edges(prefix: str) -> set[tuple[str, str]]:
    """The edges of X.dag spliced as ``prefix``."""
    return {(prefix + p, prefix + "D") for p in "ABC"} | {(prefix + "D", prefix + c) for c in "EFG"}


def test_one_dag_spliced_twice(tmp_path: Path) -> None:
    write(tmp_path, {"X.dag": X_DAG, "s1.dag": S1_DAG}, ("simple-job.sub",))
    dag = read_dag(tmp_path / "s1.dag")
    assert len(dag.nodes) == 16
    assert edges(dag) == (
        x_edges("X1+")
        | x_edges("X2+")
        | {("A", f"X1+{c}") for c in "ABC"}
        | {(f"X1+{p}", f"X2+{c}") for p in "EFG" for c in "ABC"}
        | {(f"X2+{p}", "B") for p in "EFG"}
    )


def test_a_disjoint_splice_of_splices(tmp_path: Path) -> None:
    top = (
        "# Outer DAG: toplevel.dag\n"
        + "".join(f"JOB {x} simple-job.sub\n" for x in "ABCD")
        + "PARENT A CHILD B C\nPARENT B C CHILD D\n"
        + "SPLICE S2 X.dag\nPARENT D CHILD S2\n"
        + "SPLICE S3 s1.dag\n"
    )
    write(
        tmp_path,
        {"X.dag": X_DAG, "s1.dag": S1_DAG, "toplevel.dag": top},
        ("simple-job.sub",),
    )
    dag = read_dag(tmp_path / "toplevel.dag")
    assert len(dag.nodes) == 4 + 7 + 16
    assert {"S3+A", "S3+B", "S3+X1+A", "S3+X2+G", "S2+E"} <= set(dag.nodes)
    expected = (
        DIAMOND_EDGES
        | x_edges("S2+")
        | {("D", f"S2+{c}") for c in "ABC"}
        | x_edges("S3+X1+")
        | x_edges("S3+X2+")
        | {("S3+A", f"S3+X1+{c}") for c in "ABC"}
        | {(f"S3+X1+{p}", f"S3+X2+{c}") for p in "EFG" for c in "ABC"}
        | {(f"S3+X2+{p}", "S3+B") for p in "EFG"}
    )
    assert edges(dag) == expected


def test_noop_nodes_carry_the_scripts_of_a_splice(tmp_path: Path) -> None:
    example = (
        "# Outer DAG: example.dag\n"
        "# Names a node with no associated node job, a NOOP node\n"
        "# Note that the file noop.sub does not need to exist\n"
        "JOB OnlyPreNode noop.sub NOOP\nJOB OnlyPostNode noop.sub NOOP\n\n"
        "# Attach Scripts to NOOP Nodes\n"
        "SCRIPT PRE OnlyPreNode prescript.sh\nSCRIPT POST OnlyPostNode postscript.sh\n\n"
        "# Define the splice\nSPLICE TheSplice thenode.dag\n\n"
        "# Define the dependency\n"
        "PARENT OnlyPreNode CHILD TheSplice\nPARENT TheSplice CHILD OnlyPostNode\n"
    )
    files = {"example.dag": example, "thenode.dag": X_DAG}
    write(tmp_path, files, ("simple-job.sub",))
    dag = read_dag(tmp_path / "example.dag")
    assert edges(dag) == (
        x_edges("TheSplice+")
        | {("OnlyPreNode", f"TheSplice+{c}") for c in "ABC"}
        | {(f"TheSplice+{p}", "OnlyPostNode") for p in "EFG"}
    )
    pre, post = dag.nodes["OnlyPreNode"].pre, dag.nodes["OnlyPostNode"].post
    assert pre is not None and post is not None
    assert (pre.executable, post.executable) == ("prescript.sh", "postscript.sh")
    assert dag.nodes["OnlyPreNode"].noop and not dag.nodes["TheSplice+A"].noop


def test_splice_categories_global_and_scoped(tmp_path: Path) -> None:
    files = {
        "upper.dag": "SPLICE A splice1.dag\nSPLICE B splice2.dag\nMAXJOBS +init 2\n"
        "SPLICE L lower.dag\nMAXJOBS L+catX 10\nMAXJOBS +catY 2\n",
        "splice1.dag": "JOB C C.sub\nCATEGORY C +init\nJOB D D.sub\nCATEGORY D +init\n",
        "splice2.dag": "JOB X x.sub\nCATEGORY X +init\nJOB Y x.sub\nCATEGORY Y +init\n",
        "lower.dag": "JOB N x.sub\nCATEGORY N catX\nJOB M x.sub\nCATEGORY M +catY\n"
        "MAXJOBS catX 5\nMAXJOBS +catY 1\n",
    }
    write(tmp_path, files, ("C.sub", "D.sub", "x.sub"))
    dag = read_dag(tmp_path / "upper.dag")
    assert {n.name: n.category for n in dag.nodes.values()} == {
        "A+C": "+init",
        "A+D": "+init",
        "B+X": "+init",
        "B+Y": "+init",
        "L+N": "L+catX",
        "L+M": "+catY",
    }
    assert dag.max_jobs == {"+init": 2, "L+catX": 10, "+catY": 2}


def test_splice_dir_prefixes_its_nodes_folders(tmp_path: Path) -> None:
    files = {
        "top.dag": "SPLICE S inner.dag DIR sub\n",
        "sub/inner.dag": "JOB A a.sub\nJOB B b.sub DIR deeper\nPARENT A CHILD B\n",
        "sub/a.sub": SUBMIT,
        "sub/deeper/b.sub": SUBMIT,
    }
    write(tmp_path, files)
    dag = read_dag(tmp_path / "top.dag")
    assert dag.nodes["S+A"].directory == "sub"
    assert dag.nodes["S+B"].directory == "sub/deeper"
    assert dag.submit_path("S+B") == tmp_path / "sub/deeper/b.sub"


def test_subdag_external_is_expanded_with_its_priority(tmp_path: Path) -> None:
    files = {
        "line.dag": "# Outer DAG: line.dag\nJOB X job.sub\nSUBDAG EXTERNAL Y diamond.dag\n"
        "JOB Z job.sub\n\nPARENT X CHILD Y\nPARENT Y CHILD Z\n",
        "diamond.dag": DIAMOND.replace("A.sub", "job.sub")
        .replace("B.sub", "job.sub")
        .replace("C.sub", "job.sub")
        .replace("D.sub", "job.sub"),
        "priorities.dag": "JOB A job.sub\nSUBDAG EXTERNAL B SD.dag\nPARENT A CHILD B\n"
        "PRIORITY A 60\nPRIORITY B 100\n",
        "SD.dag": "JOB SA job.sub\nJOB SB job.sub\nPARENT SA CHILD SB\n"
        "PRIORITY SA 10\nPRIORITY SB 20\n",
        "done.dag": "SUBDAG EXTERNAL Y SD.dag DONE\nJOB Z job.sub\nPARENT Y CHILD Z\n",
        "all.dag": "JOB A job.sub\nSUBDAG EXTERNAL B SD.dag\nPRIORITY ALL_NODES 7\n",
    }
    write(tmp_path, files, ("job.sub",))
    dag = read_dag(tmp_path / "line.dag")
    assert edges(dag) == {("X", "Y+A"), ("Y+D", "Z")} | {
        ("Y+" + p, "Y+" + c) for p, c in DIAMOND_EDGES
    }
    prio = read_dag(tmp_path / "priorities.dag")
    assert {n.name: n.priority for n in prio.nodes.values()} == {
        "A": 60,
        "B+SA": 110,
        "B+SB": 120,
    }
    every = read_dag(tmp_path / "all.dag")
    assert {n.name: n.priority for n in every.nodes.values()} == {"A": 7, "B+SA": 17, "B+SB": 27}
    done = read_dag(tmp_path / "done.dag")
    assert [n.done for n in done.nodes.values()] == [True, True, False]


def test_include_of_the_manual(tmp_path: Path) -> None:
    files = {
        "foo.dag": "# File name: foo.dag\n\nJOB  A  A.sub\nINCLUDE bar.dag\n",
        "bar.dag": "# File name: bar.dag\n\nJOB  B  B.sub\nJOB  C  C.sub\n",
        "workflow.dag": "JOB Split split.sub\n"
        + "".join(f"JOB Process{i:02d} process.sub\n" for i in range(3))
        + "JOB Combine combine.sub\nPARENT Split CHILD Process00 Process01 Process02\n"
        "PARENT Process00 Process01 Process02 CHILD Combine\n",
        "data57.vars": "".join(
            f'VARS {n} dataset="data57"\n'
            for n in ("Split", "Process00", "Process01", "Process02", "Combine")
        ),
        "run_dataset57.dag": "INCLUDE workflow.dag\nINCLUDE data57.vars\n",
    }
    write(tmp_path, files, ("A.sub", "B.sub", "C.sub", "split.sub", "process.sub", "combine.sub"))
    assert list(read_dag(tmp_path / "foo.dag").nodes) == ["A", "B", "C"]
    dag = read_dag(tmp_path / "run_dataset57.dag")
    assert len(dag.nodes) == 5 and all(n.vars == {"dataset": "data57"} for n in dag.nodes.values())
    assert dag.nodes["Split"].file == str(tmp_path / "workflow.dag")


def test_parent_all_nodes_means_every_other_node(tmp_path: Path) -> None:
    text = "JOB a x.sub\nJOB b x.sub\nJOB last x.sub\nPARENT ALL_NODES CHILD last\n"
    write(tmp_path, {"g.dag": text}, ("x.sub",))
    assert edges(read_dag(tmp_path / "g.dag")) == {("a", "last"), ("b", "last")}


def test_config_and_dot(tmp_path: Path) -> None:
    files = {
        "c.dag": DIAMOND + "CONFIG dagman.config\nDOT dag.dot DONT-UPDATE DONT-OVERWRITE "
        "INCLUDE head.dot\n",
        "dagman.config": "# settings\nDAGMAN_MAX_JOBS_SUBMITTED = 10\ndagman_always_run_post = "
        "True\nDAGMAN_MAX_PRE_SCRIPTS=2\n",
        "head.dot": "node [fontsize=10];\n",
    }
    write(tmp_path, files, ABCD)
    dag = read_dag(tmp_path / "c.dag")
    assert dag.config == {
        "DAGMAN_MAX_JOBS_SUBMITTED": "10",
        "DAGMAN_ALWAYS_RUN_POST": "true",
        "DAGMAN_MAX_PRE_SCRIPTS": "2",
    }
    assert dag.dot_file == str(tmp_path / "dag.dot")
    assert not dag.dot_overwrite and dag.dot_include == str(tmp_path / "head.dot")


# -------------------------------------------------------------------- refusals

REFUSALS = [
    ("JOB A A.sub\nJOB B B.sub\nPARENT A CHILD B\nPARENT B CHILD A\n", 3, "cycle: A -> B -> A"),
    ("JOB A A.sub\nPARENT A CHILD A\n", 2, "cycle: A -> A"),
    ("JOB A A.sub\nJOB A B.sub\n", 2, "A is already defined at"),
    ("JOB A A.sub\nSPLICE A s.dag\n", 2, "A is already defined"),
    ("JOB A A.sub\nPARENT A CHILD X\n", 2, "unknown node 'X'"),
    ("JOB A A.sub\nRETRY B 2\n", 2, "unknown node 'B'"),
    ("JOB A A.sub\nJOB B missing.sub\n", 2, "missing.sub does not exist"),
    ("JOB A A.sub DIR nowhere\n", 1, "DIR nowhere is not a folder"),
    ("JOB A A.sub\nFINAL F A.sub\n", 2, "FINAL nodes are not supported"),
    ("PROVISIONER P A.sub\n", 1, "PROVISIONER nodes are not supported"),
    ("SERVICE S A.sub\n", 1, "SERVICE nodes are not supported"),
    ("JOB A A.sub\nSET_JOB_ATTR x = 1\n", 2, "SET_JOB_ATTR is not supported"),
    ("JOB A A.sub\nENV SET a=b\n", 2, "ENV is not supported"),
    ("JOB A A.sub\nJOBSTATE_LOG x.log\n", 2, "JOBSTATE_LOG is not supported"),
    ("JOB A A.sub\nNODE_STATUS_FILE x\n", 2, "NODE_STATUS_FILE is not supported"),
    ("JOB A A.sub\nSAVE_POINT_FILE A\n", 2, "SAVE_POINT_FILE is not supported"),
    ("JOB A {\n", 1, "inline submit descriptions are not supported"),
    ("SUBMIT-DESCRIPTION d {\n", 1, "inline submit descriptions are not supported"),
    ("JOB A A.sub\nFROBNICATE A\n", 2, "unknown statement 'FROBNICATE'"),
    ("JOB A A.sub\nREJECT\n", 2, "marked REJECT"),
    ("JOB A A.sub\nRETRY A two\n", 2, "must be an integer, not 'two'"),
    ("JOB A A.sub\nRETRY A -1\n", 2, "must be at least 0"),
    ("JOB A A.sub\nRETRY A 2 UNLESS 3\n", 2, "RETRY <NodeName"),
    ("JOB A A.sub\nVARS A x=unquoted\n", 2, "the value of x must be in double quotes"),
    ('JOB A A.sub\nVARS A x="open\n', 2, "no closing double quote"),
    ('JOB A A.sub\nVARS A queue_x="1"\n', 2, "cannot begin with 'queue'"),
    ("JOB A A.sub\nVARS A\n", 2, "VARS <NodeName"),
    ('JOB A A.sub\nVARS A x="a\\d"\n', 2, "unknown escape sequence '\\\\d' in the value of x"),
    ('JOB A A.sub\nVARS A x="1" APPEND y="2"\n', 2, "APPEND must come before all the variables"),
    ('JOB A A.sub\nVARS A a+b="1"\n', 2, "expected macroname="),
    ('JOB A A.sub\nVARS A x "1"\n', 2, "expected = after x"),
    ("JOB A A.sub\nSCRIPT DEFER 0 10 PRE A x.sh\n", 2, "the DEFER status must be at least 1"),
    ('JOB A "A.sub\n', 1, 'the double quote of "A.sub is not closed'),
    ("JOB A A.sub\nSCRIPT DEBUG f ALL PRE A x.sh\n", 2, "SCRIPT DEBUG is not supported"),
    ("JOB A A.sub\nSCRIPT MIDDLE A x.sh\n", 2, "SCRIPT [DEFER"),
    ("JOB A A.sub\nSCRIPT HOLD A notify.sh\n", 2, "SCRIPT HOLD is not supported"),
    ("JOB A A.sub\nPRE_SKIP A 0\n", 2, "from 1 to 255"),
    ("JOB A A.sub\nABORT-DAG-ON A 1 RETURN 300\n", 2, "from 0 to 255"),
    ("JOB A A.sub\nMAXJOBS c 0\n", 2, "MAXJOBS must be at least 1"),
    ("JOB A A.sub\nDOT d.dot UPDATE\n", 2, "DOT UPDATE is not supported"),
    ("JOB A A.sub\nDOT d.dot INCLUDE no.dot\n", 2, "no.dot does not exist"),
    ("JOB A A.sub\nCONFIG none.config\n", 2, "none.config does not exist"),
    ("JOB A A.sub\nINCLUDE self.dag\n", 2, "includes itself"),
    ("JOB A A.sub\nINCLUDE gone.dag\n", 2, "gone.dag does not exist"),
    ("JOB A A.sub\nINCLUDE /dev/zero\n", 2, "/dev/zero is not a file"),
    ("JOB PARENT A.sub\n", 1, "reserved word"),
    ("JOB all_nodes A.sub\n", 1, "reserved word"),
    ("JOB a+b A.sub\n", 1, "contains '+' or '.'"),
    ("JOB a.b A.sub\n", 1, "contains '+' or '.'"),
    ("JOB A\n", 1, "JOB NodeName SubmitFile"),
    ("JOB A A.sub RETRY\n", 1, "unexpected 'RETRY'"),
    ("JOB A A.sub\nPARENT A B\n", 2, "PARENT ParentName"),
    ("SUBDAG A s.dag\n", 1, "SUBDAG EXTERNAL"),
    ("SPLICE S nothere.dag\n", 1, "nothere.dag does not exist"),
    ("JOB A A.sub\nSPLICE S self.dag\n", 2, "self.dag splices itself"),
    ("SPLICE S s.dag\nRETRY S 2\n", 2, "S is a splice: RETRY applies to nodes"),
    ("SUBDAG EXTERNAL S s.dag\nRETRY S 2\n", 2, "S is a SUBDAG EXTERNAL"),
    ("SUBDAG EXTERNAL S s.dag\nSCRIPT PRE S x.sh\n", 2, "S is a SUBDAG EXTERNAL"),
    ("SUBDAG EXTERNAL S s.dag\nRETRY ALL_NODES 2\n", 2, "would apply to SUBDAG EXTERNAL S"),
]


@pytest.mark.parametrize(("text", "line", "message"), REFUSALS, ids=[r[2] for r in REFUSALS])
def test_refused_with_the_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    write(tmp_path, {"self.dag": text, "s.dag": "JOB In A.sub\n"}, ("A.sub", "B.sub"))
    error = read_error(tmp_path / "self.dag")
    assert error.startswith(f"{tmp_path / 'self.dag'}:{line}: "), error
    assert message in error


def test_splices_that_splice_each_other_are_refused(tmp_path: Path) -> None:
    files = {"a.dag": "JOB A x.sub\nSPLICE B b.dag\n", "b.dag": "JOB C x.sub\nSPLICE A a.dag\n"}
    write(tmp_path, files, ("x.sub",))
    assert read_error(tmp_path / "a.dag") == (
        f"{tmp_path / 'b.dag'}:2: DAG file {tmp_path / 'a.dag'} splices itself"
    )


def test_refusals_inside_included_and_spliced_files_name_that_file(tmp_path: Path) -> None:
    files = {
        "top.dag": "JOB A A.sub\nINCLUDE more.dag\nSPLICE S s.dag\n",
        "more.dag": "JOB B A.sub\n",
        "s.dag": "JOB C A.sub\nCONFIG x.config\n",
    }
    write(tmp_path, files, ("A.sub",))
    assert read_error(tmp_path / "top.dag") == (
        f"{tmp_path / 's.dag'}:2: CONFIG in a spliced or sub-DAG file is not supported: dfarm "
        "runs them all as one DAG, whose CONFIG and DOT the top DAG file gives"
    )
    write(tmp_path, {"more.dag": "JOB B A.sub\nRETRY C 1\n", "s.dag": "JOB C A.sub\n"})
    assert read_error(tmp_path / "top.dag").startswith(f"{tmp_path / 'more.dag'}:2: unknown node")


def test_config_settings_dfarm_does_not_apply_are_refused(tmp_path: Path) -> None:
    files = {
        "c.dag": "JOB A A.sub\nCONFIG c.config\n",
        "c.config": "DAGMAN_MAX_JOBS_SUBMITTED = 3\nDAGMAN_USE_STRICT = 2\n",
    }
    write(tmp_path, files, ("A.sub",))
    error = read_error(tmp_path / "c.dag")
    assert error.startswith(f"{tmp_path / 'c.config'}:2: DAGMAN_USE_STRICT is not a setting")
    write(tmp_path, {"c.config": "DAGMAN_MAX_JOBS_SUBMITTED = many\n"})
    assert "must be a whole number, not 'many'" in read_error(tmp_path / "c.dag")
    write(tmp_path, {"c.dag": "JOB A A.sub\nCONFIG c.config\nCONFIG d.config\n", "d.config": ""})
    write(tmp_path, {"c.config": ""})
    assert "a second CONFIG file" in read_error(tmp_path / "c.dag")


def test_a_long_cycle_is_named_with_an_edge_of_it(tmp_path: Path) -> None:
    nodes = "".join(f"JOB n{i} A.sub\n" for i in range(6))
    text = (
        nodes + "".join(f"PARENT n{i} CHILD n{i + 1}\n" for i in range(5)) + "PARENT n5 CHILD n2\n"
    )
    write(tmp_path, {"c.dag": text}, ("A.sub",))
    error = read_error(tmp_path / "c.dag")
    assert error == f"{tmp_path / 'c.dag'}:9: the DAG has a cycle: n2 -> n3 -> n4 -> n5 -> n2"


# ------------------------------------------------------ HTCondor's htcondor.dags

_WRITE_WITH_HTCONDOR = r"""
import json, sys, warnings
from pathlib import Path
warnings.filterwarnings("ignore")
import htcondor
from htcondor import dags

where = Path(sys.argv[1])
inner = dags.DAG()
i1 = inner.layer(name="in", submit_description=htcondor.Submit({"executable": "/bin/true"}),
                 vars=[{"k": "1"}, {"k": "2"}])
i1.child_layer(name="out", submit_description=htcondor.Submit({"executable": "/bin/true"}))
dags.write_dag(inner, where / "outer", dag_file_name="inner.dag")

dag = dags.DAG(dagman_config={"DAGMAN_MAX_JOBS_SUBMITTED": 5},
               dot_config=dags.DotConfig(Path("dag.dot"), overwrite=False))
submit = htcondor.Submit({"executable": "/bin/echo", "arguments": "$(word)"})
prep = dag.layer(name="prep", submit_description=submit, retries=2, retry_unless_exit=3,
                 pre=dags.Script("pre.sh", arguments=["$JOB", "x y"]), priority=5,
                 category="small", abort=dags.DAGAbortCondition(9, 1))
sims = prep.child_layer(name="sim", submit_description=submit,
                        vars=[{"word": 'say "hi"', "n": str(i)} for i in range(4)],
                        post=dags.Script("post.sh", arguments=["$RETURN"], retry=True,
                                         retry_status=2, retry_delay=30),
                        pre_skip_exit_code=7, noop={1: True}, done={2: True})
pairs = sims.child_layer(name="pair", submit_description=submit,
                         vars=[{"i": str(i)} for i in range(4)], edge=dags.OneToOne())
merge = pairs.child_layer(name="merge", submit_description=submit)
sub = merge.child_subdag(name="inner", dag_file=where / "outer" / "inner.dag")
many = dag.layer(name="wide", submit_description=submit, vars=[{}] * 3)
many.child_layer(name="wide2", submit_description=submit, vars=[{}] * 3)
path = dags.write_dag(dag, where / "outer")

fmt = dags.SimpleFormatter()
def names(layer, count):
    return [fmt.generate(layer, i) for i in range(count)]
edges = []
def all_to_all(a, b): edges.extend([p, c] for p in a for c in b)
all_to_all(names("prep", 1), names("sim", 4))
edges.extend([p, c] for p, c in zip(names("sim", 4), names("pair", 4)))
all_to_all(names("pair", 4), names("merge", 1))
all_to_all(names("wide", 3), names("wide2", 3))
print(json.dumps({"path": str(path), "edges": edges}))
"""


@pytest.mark.skipif(not HTCONDOR, reason="HTCondor's bindings (the test extra) are missing")
def test_what_htcondor_dags_writes_is_read_as_it_was_built(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _WRITE_WITH_HTCONDOR, str(tmp_path)],
        capture_output=True,
        text=True,
        env=_env(None),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    written = json.loads(done.stdout)
    dag = read_dag(written["path"])
    real = {n for n in dag.nodes if not n.startswith("__JOIN__")}
    inner = ["inner:0+in:0", "inner:0+in:1", "inner:0+out:0"]
    assert real == {
        "prep:0",
        *(f"sim:{i}" for i in range(4)),
        *(f"pair:{i}" for i in range(4)),
        "merge:0",
        *inner,
        *(f"wide:{i}" for i in range(3)),
        *(f"wide2:{i}" for i in range(3)),
    }
    # The edges as built, through the join nodes htcondor.dags puts in many-to-many ones.
    expected = {tuple(e) for e in written["edges"]}
    expected |= {("merge:0", "inner:0+in:0"), ("merge:0", "inner:0+in:1")}
    expected |= {(p, "inner:0+out:0") for p in ("inner:0+in:0", "inner:0+in:1")}
    assert reach(dag, real) == closure(expected)
    prep = dag.nodes["prep:0"]
    assert (prep.retry, prep.retry_unless_exit, prep.priority, prep.category) == (2, 3, 5, "small")
    assert prep.abort_on == (9, 1)
    assert prep.pre is not None and prep.pre.arguments == ["$JOB", "x", "y"]
    sim = dag.nodes["sim:0"]
    assert sim.vars == {"word": 'say "hi"', "n": "0"} and sim.pre_skip == 7
    assert sim.post is not None and (sim.post.defer_status, sim.post.defer_time) == (2, 30)
    assert [dag.nodes[f"sim:{i}"].noop for i in range(4)] == [False, True, False, False]
    assert [dag.nodes[f"sim:{i}"].done for i in range(4)] == [False, False, True, False]
    assert dag.nodes["inner:0+in:1"].vars == {"k": "2"}
    assert dag.config == {"DAGMAN_MAX_JOBS_SUBMITTED": "5"}
    assert dag.dot_file == str(tmp_path / "outer" / "dag.dot") and not dag.dot_overwrite


def reach(dag: Dag, keep: set[str]) -> set[tuple[str, str]]:
    """(ancestor, descendant) pairs among ``keep``, through any node."""
    pairs = closure(edges(dag))
    return {(a, b) for a, b in pairs if a in keep and b in keep}


def closure(direct: set[tuple[str, str]]) -> set[tuple[str, str]]:
    children: dict[str, set[str]] = {}
    for p, c in direct:
        children.setdefault(p, set()).add(c)
    out: set[tuple[str, str]] = set()
    for start in list(children):
        stack, seen = [start], set()
        while stack:
            for c in children.get(stack.pop(), ()):
                if c not in seen:
                    seen.add(c)
                    stack.append(c)
        out |= {(start, c) for c in seen}
    return out


# ------------------------------------------------------------- the Python builder


def test_the_builder_makes_what_the_file_makes(tmp_path: Path) -> None:
    text = (
        DIAMOND
        + 'VARS B x="$(JOB)!"\nVARS B APPEND y="2"\nRETRY C 3 UNLESS-EXIT 2\n'
        + "SCRIPT PRE B pre.sh $JOB\nSCRIPT POST D post.sh $RETURN\nPRE_SKIP B 9\n"
        + "ABORT-DAG-ON C 10 RETURN 1\nCATEGORY C slow\nMAXJOBS slow 2\nPRIORITY D 4\n"
    )
    write(tmp_path, {"d.dag": text}, ABCD)
    from_file = read_dag(tmp_path / "d.dag")
    d = DagBuilder(tmp_path)
    a = d.job("A", "A.sub")
    b = d.job(
        "B",
        "B.sub",
        after=[a],
        vars={"x": "$(JOB)!", "y": "2"},
        append_vars=["y"],
        pre="pre.sh $JOB",
        pre_skip=9,
    )
    c = d.job(
        "C", "C.sub", after=[a], retry=3, retry_unless_exit=2, abort_on=(10, 1), category="slow"
    )
    d.job("D", "D.sub", after=[b, c], post=["post.sh", "$RETURN"], priority=4)
    d.max_jobs("slow", 2)
    built = d.dag
    assert edges(built) == edges(from_file) == DIAMOND_EDGES
    for name in "ABCD":
        f, p = from_file.nodes[name], built.nodes[name]
        assert (f.vars, f.append_vars, f.retry, f.retry_unless_exit, f.abort_on) == (
            p.vars,
            p.append_vars,
            p.retry,
            p.retry_unless_exit,
            p.abort_on,
        )
        assert (f.category, f.priority, f.pre_skip) == (p.category, p.priority, p.pre_skip)
        for when in ("pre", "post"):
            fs, ps = getattr(f, when), getattr(p, when)
            assert (fs and (fs.executable, fs.arguments)) == (ps and (ps.executable, ps.arguments))
        assert built.submit_path(name) == from_file.submit_path(name)
    assert built.max_jobs == from_file.max_jobs
    assert built.nodes["B"].vars["x"] == "B!"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda d: d.job("A", "A.sub"), "node A is already defined"),
        (lambda d: d.job("B", "A.sub", after=["Z"]), "'Z', which is not a node yet"),
        (lambda d: d.job("B", "gone.sub"), "gone.sub does not exist"),
        (lambda d: d.job("a+b", "A.sub"), "contains '+' or '.'"),
        (lambda d: d.job("B", "A.sub", dir="nowhere"), "is not a folder"),
        (lambda d: d.job("B", "A.sub", vars={"queue": "1"}), "cannot begin with 'queue'"),
        (lambda d: d.job("B", "A.sub", vars={"a b": "1"}), "cannot name a macro"),
        (lambda d: d.job("B", "A.sub", retry=-1), "retry must be at least 0"),
        (lambda d: d.job("B", "A.sub", pre_skip=0), "pre_skip must be from 1 to 255"),
        (lambda d: d.job("B", "A.sub", abort_on=(1, 256)), "return code must be from 0 to 255"),
        (lambda d: d.job("B", "A.sub", append_vars=["v"]), "append_vars names no var"),
        (lambda d: d.job("B", "A.sub", pre=""), "the PRE script is empty"),
        (lambda d: d.max_jobs("c", 0), "max_jobs must be at least 1"),
        (lambda d: d.config("DAGMAN_USE_STRICT", 1), "is not a setting"),
        (lambda d: d.config("DAGMAN_MAX_JOBS_SUBMITTED", "x"), "must be a whole number"),
        (lambda d: d.config("DAGMAN_ALWAYS_RUN_POST", 1), "must be True or False"),
    ],
)
def test_the_builder_refuses(
    tmp_path: Path, call: Callable[[DagBuilder], object], message: str
) -> None:
    write(tmp_path, {}, ("A.sub",))
    d = DagBuilder(tmp_path)
    d.job("A", "A.sub")
    with pytest.raises(DagBuildError, match=re.escape(message)):
        call(d)


def test_the_builder_takes_noop_nodes_and_settings(tmp_path: Path) -> None:
    d = DagBuilder(tmp_path)
    d.job("gate", "never-written.sub", noop=True, pre="check.sh")
    d.config("DAGMAN_MAX_JOBS_SUBMITTED", 4).config("DAGMAN_ALWAYS_RUN_POST", True)
    assert d.dag.nodes["gate"].noop and d.dag.folder("gate") == tmp_path
    assert d.dag.config == {"DAGMAN_MAX_JOBS_SUBMITTED": "4", "DAGMAN_ALWAYS_RUN_POST": "true"}


# ------------------------------------------------------------------ the DOT file


def test_the_dot_file(tmp_path: Path) -> None:
    files = {
        "d.dag": DIAMOND.replace("JOB D D.sub", "JOB D D.sub DONE") + "DOT out/dag.dot\n",
        "out/.keep": "",
    }
    write(tmp_path, files, ABCD)
    dag = read_dag(tmp_path / "d.dag")
    written = write_dot_file(dag, states={"A": "done"})
    assert written == tmp_path / "out" / "dag.dot"
    text = written.read_text()
    assert text.startswith('digraph DAG {\n    label="DAG d.dag";\n')
    assert '"A" [shape=ellipse label="A (done)"];' in text
    assert '"D" [shape=ellipse label="D" style=filled' in text
    assert {line.strip() for line in text.splitlines() if "->" in line} == {
        f'"{p}" -> "{c}";' for p, c in DIAMOND_EDGES
    }
    assert write_dot_file(dag) == written  # OVERWRITE is the default
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".keep", "dag.dot"]


def test_dot_dont_overwrite_numbers_the_files_and_include_adds_a_header(tmp_path: Path) -> None:
    files = {
        "d.dag": DIAMOND + "DOT dag.dot DONT-OVERWRITE INCLUDE head.dot\n",
        "head.dot": "node [fontsize=10];\n",
    }
    write(tmp_path, files, ABCD)
    dag = read_dag(tmp_path / "d.dag")
    assert [write_dot_file(dag) for _ in range(3)] == [tmp_path / f"dag.dot.{n}" for n in range(3)]
    assert (tmp_path / "dag.dot.0").read_text().splitlines()[2] == "    node [fontsize=10];"
    dag.dot_file = None
    assert write_dot_file(dag) is None


def test_dot_names_with_quotes_are_escaped() -> None:
    dag = Dag(nodes={'a"b': DagNode('a"b', "x.sub")})
    assert '"a\\"b" [shape=ellipse label="a\\"b"];' in dot_text(dag)


def test_a_dag_file_that_cannot_be_read(tmp_path: Path) -> None:
    assert read_error(tmp_path / "none.dag") == f"{tmp_path / 'none.dag'}: does not exist"
    (tmp_path / "bin.dag").write_bytes(b"JOB A A.sub\n\xff\xfe\n")
    assert read_error(tmp_path / "bin.dag") == f"{tmp_path / 'bin.dag'}:2: is not UTF-8 text"
    (tmp_path / "empty.dag").write_text("# nothing\n")
    write(tmp_path, {"top.dag": "SPLICE S empty.dag\n"})
    assert read_error(tmp_path / "top.dag").endswith("empty.dag defines no node")
    assert read_error(tmp_path / "empty.dag") == f"{tmp_path / 'empty.dag'}: defines no node"


_REFUSED_FROM_HTCONDOR = r"""
import json, sys, warnings
from pathlib import Path
warnings.filterwarnings("ignore")
import htcondor
from htcondor import dags

where = Path(sys.argv[1])
submit = htcondor.Submit({"executable": "/bin/true"})
made = {}
for name, options in [
    ("final", {}),
    ("jobstate", {"jobstate_log": Path("states.log")}),
    ("status", {"node_status_file": dags.NodeStatusFile(Path("status.txt"))}),
    ("attrs", {"dagman_job_attributes": {"Tag": 1}}),
    ("update", {"dot_config": dags.DotConfig(Path("d.dot"), update=True)}),
]:
    dag = dags.DAG(**options)
    dag.layer(name="work", submit_description=submit)
    if name == "final":
        dag.final(name="cleanup", submit_description=submit)
    made[name] = str(dags.write_dag(dag, where / name))
print(json.dumps(made))
"""


@pytest.mark.skipif(not HTCONDOR, reason="HTCondor's bindings (the test extra) are missing")
def test_what_htcondor_dags_writes_that_dfarm_does_not_run_is_refused(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _REFUSED_FROM_HTCONDOR, str(tmp_path)],
        capture_output=True,
        text=True,
        env=_env(None),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    made = json.loads(done.stdout)
    expected = {
        "final": "FINAL nodes are not supported",
        "jobstate": "JOBSTATE_LOG is not supported",
        "status": "NODE_STATUS_FILE is not supported",
        "attrs": "SET_JOB_ATTR is not supported",
        "update": "DOT UPDATE is not supported",
    }
    for name, message in expected.items():
        error = read_error(Path(made[name]))
        assert error.startswith(made[name] + ":") and message in error, error


#: The manual's VARS with special characters, and the arguments it says each node's
#: job receives (its submit files, with NodeA's misspelt ``($fourth)`` as meant).
_MANUAL_ARGUMENTS = [
    (
        "NodeA",
        """arguments = "'$(first)' '$(second)' '$(third)' '$(fourth)' '$(misc)'"\n""",
        [
            "Alberto Contador",
            '"Andy Schleck"',
            "Lance\\ Armstrong",
            "Vincenzo 'The Shark' Nibali",
            "!@#$%^&*()_-=+=[]{}?/",
        ],
    ),
    (
        "NodeB",
        "arguments = $(first) $(second) $(third) $(fourth) $(misc)\n",
        [
            "Lance_Armstrong",
            '"Andreas_Kloden"',
            "Ivan_Basso",
            "Bernard_'The_Badger'_Hinault",
            "!@#$%^&*()_-=+=[]{}?/",
        ],
    ),
    ("NodeC", 'arguments = "$(args)"\n', ["Nairo Quintana", "Chris Froome"]),
]
_MANUAL_VARS = r"""
JOB NodeA a.sub
JOB NodeB b.sub
JOB NodeC c.sub
VARS NodeA first="Alberto Contador"
VARS NodeA second="\"\"Andy Schleck\"\""
VARS NodeA third="Lance\\ Armstrong"
VARS NodeA fourth="Vincenzo ''The Shark'' Nibali"
VARS NodeA misc="!@#$%^&*()_-=+=[]{}?/"

VARS NodeB first="Lance_Armstrong"
VARS NodeB second="\\\"Andreas_Kloden\\\""
VARS NodeB third="Ivan_Basso"
VARS NodeB fourth="Bernard_'The_Badger'_Hinault"
VARS NodeB misc="!@#$%^&*()_-=+=[]{}?/"

VARS NodeC args="'Nairo Quintana' 'Chris Froome'"
"""


@pytest.mark.skipif(not HTCONDOR, reason="HTCondor's bindings (the test extra) are missing")
@pytest.mark.parametrize(("node", "arguments", "expected"), _MANUAL_ARGUMENTS)
def test_vars_values_give_the_manual_s_arguments_through_condor_submit(
    tmp_path: Path, node: str, arguments: str, expected: list[str]
) -> None:
    """The values read from VARS, given to HTCondor's own submit code as the macros
    DAGMan defines, make the job arguments the manual says."""
    write(tmp_path, {"v.dag": _MANUAL_VARS}, ("a.sub", "b.sub", "c.sub"))
    macros = read_dag(tmp_path / "v.dag").nodes[node].vars
    text = "executable = /bin/echo\n"
    text += "".join(f"{key} = {value}\n" for key, value in macros.items())
    found = condor_jobs(text + arguments + "queue\n", str(tmp_path))
    assert "error" not in found, found
    job = found["jobs"][0]
    if "Arguments" in job:  # the new syntax, kept as its quoted form
        assert parse_arguments('"' + job["Arguments"].replace('"', '""') + '"') == expected
    else:  # the old syntax: arguments as the job gets them, between blanks
        assert job["Args"].split() == expected
