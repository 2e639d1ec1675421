"""Submit keys as condor_submit reads them: custom attributes, HTCondor's keys that
dfarm stores or accepts with a warning, aliases, unknown keys, redefined macros and
queue variables that are keys. Where the ``htcondor`` bindings are installed (the
``test`` extra), each case is also read by HTCondor's own submit code and compared."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
from conftest import write

from control_node.cli.dedit import split_words
from control_node.render import jobs_long
from control_node.submit_dict import submit_text
from control_node.submit_file import SubmitDescription, SubmitFileError, parse_submit_text
from control_node.submit_keys import ALIASES, CARRIED_OUT, IGNORED, STORED, canonical
from scheduler import protocol as p

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # "no condor_config": none is needed to expand jobs
    try:
        import classad  # type: ignore[import-not-found]
        import htcondor  # type: ignore[import-not-found]
    except ImportError:
        htcondor = classad = None

needs_htcondor = pytest.mark.skipif(htcondor is None, reason="htcondor bindings not installed")


@pytest.fixture
def farm(tmp_path: Path) -> Path:
    for name in ("a.sh", "a.txt", "b.txt"):
        write(tmp_path / name, "x\n", name.endswith(".sh"))
    return tmp_path


def parse(cwd: Path, text: str) -> SubmitDescription:
    return parse_submit_text(
        "executable = a.sh\n" + text, filename="job.sub", cluster=1, cwd=str(cwd), environ={}
    )


def htcondor_jobs(cwd: Path, text: str) -> list[Any]:
    """HTCondor's job ClassAds for the same file, read in ``cwd``."""

    here = os.getcwd()
    os.chdir(cwd)
    try:
        return list(htcondor.Submit("executable = a.sh\n" + text).jobs(clusterid=1))
    finally:
        os.chdir(here)


def same_expression(ours: str, theirs: Any) -> bool:
    """Whether our attribute text is the expression HTCondor stored."""
    mine = classad.ExprTree(ours)
    if str(mine) == str(theirs):
        return True
    a, b = mine.eval(), theirs.eval()  # a number HTCondor wrote in its own form
    return isinstance(a, int | float) and isinstance(b, int | float) and float(a) == float(b)


# ------------------------------------------------------------------ custom attributes

CUSTOM = """\
+JobFlavour = "espresso"
MY.Project = "p_$(Process)"
+Num = $(x)
x = 5
+Empty =
+Req = TARGET.Memory > 10 && $(x) > 1
queue 2
"""


def test_custom_attributes_are_job_attributes_with_macros_expanded(farm: Path) -> None:
    desc = parse(farm, CUSTOM)
    assert [proc.attributes for proc in desc.procs] == [
        {
            "JobFlavour": '"espresso"',
            "Project": f'"p_{n}"',
            "Num": "5",
            "Empty": "undefined",
            "Req": "TARGET.Memory > 10 && 5 > 1",
        }
        for n in (0, 1)
    ]
    assert desc.warnings == []


def test_custom_attribute_names_are_case_insensitive_and_usable_as_macros(farm: Path) -> None:
    desc = parse(farm, "+foo = 1\n+Foo = 2\narguments = $(MY.Foo)\nqueue\n")
    assert desc.procs[0].attributes == {"foo": "2"} and desc.procs[0].arguments == ["2"]


def test_a_continued_line_starting_with_plus_is_not_an_attribute(farm: Path) -> None:
    desc = parse(farm, "arguments = a \\\n+b=c\nqueue\n")
    assert desc.procs[0].arguments == ["a", "+b=c"] and desc.procs[0].attributes == {}


@needs_htcondor
def test_custom_attributes_as_htcondor_reads_them(farm: Path) -> None:
    ours = parse(farm, CUSTOM).procs
    theirs = htcondor_jobs(farm, CUSTOM)
    for proc, job in zip(ours, theirs, strict=True):
        for name, value in proc.attributes.items():
            assert same_expression(value, job.lookup(name)), name


# ------------------------------------------------------------------ stored keys

#: A value HTCondor takes for each stored key (default "3").
SAMPLES = {
    "batch_name": "mybatch",
    "description": "my job",
    "rank": "Memory >= 64",
    "on_exit_hold": "ExitCode != 0",
    "on_exit_hold_reason": '"bad exit"',
    "on_exit_remove": "ExitBySignal == false",
    "periodic_hold": "NumJobStarts > 2",
    "periodic_hold_reason": '"too many starts"',
    "periodic_release": "true",
    "periodic_remove": "JobStatus == 5",
    "transfer_executable": "false",
    "docker_image": "ubuntu:22.04",
    "container_image": "docker://ubuntu:22.04",
    "transfer_checkpoint_files": "a.txt",
    "gpus_minimum_capability": "7.5",
    "accounting_group": "group_physics",
    "accounting_group_user": "alice",
    "concurrency_limits": "db,licence",
    "kill_sig": "SIGUSR1",
    "want_graceful_removal": "true",
    "leave_in_queue": "true",
    "job_lease_duration": "100",
    "output_destination": "file:///tmp/out",
    "environment": '"A=1 B=2"',
    "initialdir": ".",
    "transfer_output_remaps": "a=b",
    "submit_event_notes": "note",
    "job_ad_information_attrs": "Owner",
    "email_attributes": "Owner",
    "job_machine_attrs": "Cpus",
    "remote_initialdir": "/scratch",
    "checkpoint_exit_code": "85",
    "want_ft_on_checkpoint": "true",
}


#: What HTCondor needs beside a key to set its attribute.
BESIDE = {
    "accounting_group_user": "accounting_group = g\n",
    "gpus_minimum_capability": "request_gpus = 1\n",
    "want_ft_on_checkpoint": "checkpoint_exit_code = 85\n",
}


@pytest.mark.parametrize("key", sorted(STORED))
def test_stored_keys_become_attributes(farm: Path, key: str) -> None:
    attr, kind = STORED[key]
    value = SAMPLES.get(key, "3")
    proc = parse(farm, f"{key} = {value}\nqueue\n").procs[0]
    quoted = kind in ("string", "unquoted", "names")
    assert proc.attributes[attr] == (f'"{value}"' if quoted else value)


@pytest.mark.parametrize(
    ("text", "attr", "stored"),
    [
        ("email_attributes = RemoteHost, ExitCode", "EmailAttributes", '"RemoteHost,ExitCode"'),
        ("email_attributes = RemoteHost ExitCode", "EmailAttributes", '"RemoteHost,ExitCode"'),
        ('transfer_output_remaps = "a = b/a"', "TransferOutputRemaps", '"a = b/a"'),
        ("image_size = 28 Mb", "ImageSize", "28672"),
        ("image_size = 100", "ImageSize", "100"),
    ],
)
def test_stored_keys_in_htcondor_form(farm: Path, text: str, attr: str, stored: str) -> None:
    """Lists joined by commas, one pair of quotes dropped, sizes in KiB, as HTCondor does."""
    assert parse(farm, f"{text}\nqueue\n").procs[0].attributes[attr] == stored


@needs_htcondor
@pytest.mark.parametrize("key", sorted(STORED))
def test_stored_keys_as_htcondor_reads_them(farm: Path, key: str) -> None:
    text = BESIDE.get(key, "") + f"{key} = {SAMPLES.get(key, '3')}\nqueue\n"
    proc, job = parse(farm, text).procs[0], htcondor_jobs(farm, text)[0]
    attr = STORED[key][0]
    assert same_expression(proc.attributes[attr], job.lookup(attr))


def test_policies_are_stored_without_a_warning(farm: Path) -> None:
    """The scheduler evaluates them (scheduler/policies.py): nothing to warn of."""
    keys = ["periodic_hold", "periodic_release", "periodic_remove", "on_exit_hold",
            "on_exit_remove"]  # fmt: skip
    text = "".join(f"{key} = JobStatus == 5\n" for key in keys) + "queue\n"
    desc = parse(farm, text)
    assert desc.warnings == []
    assert set(desc.procs[0].attributes) == {STORED[key][0] for key in keys}


# ------------------------------------------------------------------ aliases


@pytest.mark.parametrize(
    ("alias", "key", "value"),
    [
        ("ShouldTransferFiles", "should_transfer_files", "YES"),
        ("TransferInputFiles", "transfer_input_files", "a.txt"),
        ("RequestMemory", "request_memory", "77"),
        ("RequestGPUs", "request_gpus", "1"),
        ("JobPrio", "priority", "5"),
        ("JobMaxRetries", "max_retries", "4"),
        ("Args", "arguments", "x y"),
        ("env", "environment", "A=1;B=2"),
        ("JobBatchName", "batch_name", "b"),
    ],
)
def test_aliases_are_the_same_key(farm: Path, alias: str, key: str, value: str) -> None:
    ours = parse(farm, f"{alias} = {value}\nqueue\n").procs[0]
    plain = parse(farm, f"{key} = {value}\nqueue\n").procs[0]
    assert ours == plain and canonical(alias) == key


@needs_htcondor
@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_aliases_as_htcondor_reads_them(farm: Path, alias: str) -> None:
    key = ALIASES[alias]
    value = SAMPLES.get(key, "3")
    if key in ("transfer_input_files", "transfer_output_files", "log"):
        value = "a.txt"
    if key in ("should_transfer_files",):
        value = "YES"
    if key in ("when_to_transfer_output",):
        value = "ON_EXIT_OR_EVICT"
    if key == "notification":
        value = "Always"
    ignore = {"QDate", "EnteredCurrentStatus"}

    def ad(name: str) -> dict[str, str]:
        job = htcondor_jobs(farm, f"{name} = {value}\nqueue\n")[0]
        return {k: str(job.lookup(k)) for k in job if k not in ignore}

    assert ad(alias) == ad(key) != ad("not_a_key")


@needs_htcondor
def test_max_retries_has_no_camel_case_alias(farm: Path) -> None:
    assert "JobMaxRetries" not in htcondor_jobs(farm, "MaxRetries = 3\nqueue\n")[0]
    assert parse(farm, "MaxRetries = 3\nqueue\n").procs[0].max_retries == 0


# ------------------------------------------------------------------ keys with warnings


@pytest.mark.parametrize("key", sorted(k for k, why in IGNORED.items() if why))
def test_ignored_keys_are_accepted_with_a_warning_that_says_why(farm: Path, key: str) -> None:
    desc = parse(farm, f"{key} = 3\nqueue\n")
    assert desc.warnings == [f"job.sub:2: '{key}' has no effect here: {IGNORED[key]}"]


@needs_htcondor
@pytest.mark.parametrize(
    "key",
    sorted(set(IGNORED) - {"x509userproxy", "use_x509userproxy", "vm_type", "vm_memory"}),
)
def test_htcondor_accepts_the_ignored_keys_too(farm: Path, key: str) -> None:
    assert len(htcondor_jobs(farm, f"{key} = {SAMPLES.get(key, '3')}\nqueue\n")) == 1


@pytest.mark.parametrize(
    ("universe", "beside"),
    [
        ("scheduler", ""),
        ("local", ""),
        ("grid", "grid_resource = batch slurm\n"),
        ("docker", "docker_image = ubuntu:22.04\n"),
        ("vm", "vm_memory = 100\n"),
        ("parallel", "machine_count = 2\n"),
    ],
)
def test_other_universes_run_as_vanilla_with_a_warning(
    farm: Path, universe: str, beside: str
) -> None:
    desc = parse(farm, f"universe = {universe}\n{beside}queue\n")
    assert len(desc.procs) == 1
    assert any(f"universe '{universe}' runs here as vanilla: " in w for w in desc.warnings)


#: Universes and transfer settings condor_submit 24 refuses, and what dsub says.
REFUSED_SETTINGS = [
    ("universe = standard", "'Standard' is not a supported universe"),
    ("universe = Standard", "'Standard' is not a supported universe"),
    ("universe = pvm", "'PVM' is not a supported universe"),
    ("universe = globus", "unknown universe 'globus'"),
    ("universe = vm", "the vm universe needs vm_memory"),
    ("universe = vm\nvm_memory = 100\nvm_type = kvm", "needs vm_disk"),
    ("universe = grid", "the grid universe needs grid_resource"),
    ("universe = java", "needs the class to run"),
    ("universe = parallel", "needs machine_count"),
    ("universe = docker", "docker jobs need a docker_image"),
    ("universe = container", "container jobs need a container_image or docker_image"),
    (
        "should_transfer_files = IF_NEEDED\nwhen_to_transfer_output = ON_EXIT_OR_EVICT",
        "are incompatible",
    ),
    ("should_transfer_files = NO\nwhen_to_transfer_output = ON_EXIT", "contradicts"),
]


@pytest.mark.parametrize(("text", "message"), REFUSED_SETTINGS)
def test_settings_htcondor_refuses_are_refused_with_the_line(
    farm: Path, text: str, message: str
) -> None:
    with pytest.raises(SubmitFileError, match=message) as refused:
        parse(farm, f"{text}\nqueue\n")
    assert refused.value.line is not None


@needs_htcondor
@pytest.mark.parametrize(("text", "message"), REFUSED_SETTINGS)
def test_settings_dsub_refuses_htcondor_refuses(farm: Path, text: str, message: str) -> None:
    with pytest.raises(Exception):  # noqa: B017 (the bindings raise their own classes)
        htcondor_jobs(farm, f"{text}\nqueue\n")


def test_no_file_transfer_is_accepted_with_a_warning(farm: Path) -> None:
    desc = parse(farm, "should_transfer_files = NO\nqueue\n")
    assert ["dfarm always transfers files" in w for w in desc.warnings] == [True]


def test_every_carried_out_key_is_known_to_htcondor_or_dfarm_s_own() -> None:
    own = {"data", "email", "client", "notification_per_job", "random_seed", "result_file"}
    assert own <= CARRIED_OUT and not (CARRIED_OUT & set(STORED))


# ------------------------------------------------------------------ unknown keys


def test_unknown_key_is_a_macro_with_a_typo_warning(farm: Path) -> None:
    desc = parse(farm, "argumnets = 1 2\nqueue\n")
    said = "job.sub:2: unknown key 'argumnets', did you mean 'arguments'?"
    assert desc.warnings == desc.unknown_keys == [said]
    assert desc.procs[0].arguments == []


def test_unknown_key_used_as_a_macro_is_not_unknown(farm: Path) -> None:
    desc = parse(farm, "base = run7\noutput = $(base).out\nqueue\n")
    assert desc.warnings == desc.unknown_keys == []


def test_unknown_key_far_from_any_key_has_no_suggestion(farm: Path) -> None:
    desc = parse(farm, "zzqqx = 1\nqueue\n")
    assert desc.unknown_keys == ["job.sub:2: unknown key 'zzqqx' (it only defines a macro)"]


@needs_htcondor
def test_htcondor_also_takes_an_unknown_key_as_a_macro(farm: Path) -> None:
    job = htcondor_jobs(farm, "argumnets = 1 2\nqueue\n")[0]
    assert str(job.lookup("Arguments")) == '""'


# ------------------------------------------------------------------ macros and queue variables

REDEFINED = "Process = 7\nProcId = 8\nStep = 9\narguments = $(Process) $(ProcId) $(Step)\nqueue 2\n"


def test_redefined_predefined_macros_win(farm: Path) -> None:
    desc = parse(farm, REDEFINED)
    assert desc.warnings == [] and parse(farm, "Row = 3\nqueue\n").warnings == []
    assert [(p.proc, p.arguments) for p in desc.procs] == [
        (0, ["7", "8", "9"]),
        (1, ["7", "8", "9"]),
    ]


@needs_htcondor
def test_redefined_predefined_macros_as_htcondor_reads_them(farm: Path) -> None:
    jobs = htcondor_jobs(farm, REDEFINED)
    assert [(j["ProcId"], j["Args"]) for j in jobs] == [(0, "7 8 9"), (1, "7 8 9")]


QUEUE_INPUT = "input = b.txt\nqueue input in (a.txt b.txt)\n"


def test_a_queue_variable_that_is_a_key_sets_it_for_each_job(farm: Path) -> None:
    assert [p.input for p in parse(farm, QUEUE_INPUT).procs] == [
        str(farm / "a.txt"),
        str(farm / "b.txt"),
    ]


@needs_htcondor
def test_a_queue_variable_that_is_a_key_as_htcondor_reads_it(farm: Path) -> None:
    assert [j["In"] for j in htcondor_jobs(farm, QUEUE_INPUT)] == ["a.txt", "b.txt"]


# ------------------------------------------------------------------ where attributes go


def test_attributes_travel_in_the_spec_and_older_specs_have_none() -> None:
    spec = p.JobSpec(executable="a.sh", attributes={"JobFlavour": '"espresso"'})
    wire = json.loads(json.dumps(p.to_wire(spec)))
    assert p.from_wire(p.JobSpec, wire, "spec") == spec
    del wire["attributes"]
    assert p.from_wire(p.JobSpec, wire, "spec").attributes == {}


def test_dq_long_shows_attributes_as_condor_q_does() -> None:
    job = p.JobInfo(
        id="1.0", cluster=1, proc=0, owner="u", state="idle", submit_time=0.0,
        attributes={"JobFlavour": '"espresso"', "Rank": "Memory"},
    )  # fmt: skip
    lines = jobs_long([job]).splitlines()
    assert 'JobFlavour = "espresso"' in lines and "Rank = Memory" in lines


def test_dedit_takes_attributes_as_key_value_pairs() -> None:
    assert split_words(["42.0", '+JobFlavour="longlunch"', "MY.Project", "7"]) == (
        ["42.0"],
        {"+JobFlavour": '"longlunch"', "MY.Project": "7"},
    )


def dsub(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "control_node.cli.dsub", *args],
        cwd=cwd, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )  # fmt: skip


def test_dry_run_json_shows_attributes_and_warns_on_stderr(farm: Path) -> None:
    write(farm / "job.sub", 'executable = a.sh\n+JobFlavour = "espresso"\nargumnets = 1\nqueue\n')
    out = dsub(farm, "--dry-run", "--json", "job.sub")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0]["attributes"] == {"JobFlavour": '"espresso"'}
    assert out.stderr == (
        "dsub: warning: job.sub:3: unknown key 'argumnets', did you mean 'arguments'?\n"
    )


def test_strict_refuses_an_unknown_key_with_its_line(farm: Path) -> None:
    write(farm / "job.sub", "executable = a.sh\nargumnets = 1\nqueue\n")
    out = dsub(farm, "--dry-run", "--json", "--strict", "job.sub")
    assert out.returncode != 0 and out.stdout == ""
    assert "job.sub:2: unknown key 'argumnets', did you mean 'arguments'? (--strict)" in out.stderr


def test_a_dict_description_takes_custom_attributes(farm: Path) -> None:
    text = submit_text({"+JobFlavour": '"espresso"', "MY.Project": 7, "queue": 1})
    assert parse(farm, text).procs[0].attributes == {"JobFlavour": '"espresso"', "Project": "7"}
    with pytest.raises(ValueError, match="not a submit-file key"):
        submit_text({"+bad name": 1})


@pytest.mark.parametrize("line", ["+Foo = (a", 'MY.Foo = "open', "rank = Memory)"])
def test_an_expression_that_cannot_parse_is_refused_with_its_line(farm: Path, line: str) -> None:
    with pytest.raises(SubmitFileError) as info:
        parse(farm, f"{line}\nqueue\n")
    assert info.value.line == 2 and "cannot parse the expression" in info.value.message
    if htcondor is not None:
        with pytest.raises(Exception, match="Parse error"):
            htcondor_jobs(farm, f"{line}\nqueue\n")


POOL_STYLE = (
    "universe = vanilla\r\n"
    "Arguments = $(ProcId) $(ClusterId)\r\n"
    "output = out.$(ClusterId).$(ProcId)\r\n"
    "ShouldTransferFiles = YES\r\n"
    "WhenToTransferOutput = ON_EXIT\r\n"
    "TransferInputFiles = a.txt\r\n"
    '+JobFlavour = "workday"\r\n'
    '+ProjectName = "dfarm-tests"\r\n'
    '+SingularityImage = "/cvmfs/singularity.opensciencegrid.org/x:latest"\r\n'
    '+JobDurationCategory = \t"Medium"\r\n'
    "JobBatchName = pool_$(ClusterId)\r\n"
    "transfer_executable = False\r\n"
    "on_exit_hold = (ExitBySignal == True) || (ExitCode != 0)\r\n"
    "periodic_release = (NumJobStarts < 3) && ((CurrentTime - EnteredCurrentStatus) > 600)\r\n"
    "periodic_remove = JobStatus == 2 && (time() - EnteredCurrentStatus) > 3600 * 24\r\n"
    "queue 3\r\n"
)


def test_a_file_in_the_style_of_the_big_pools(farm: Path) -> None:
    procs = parse(farm, POOL_STYLE).procs
    assert [p.arguments for p in procs] == [["0", "1"], ["1", "1"], ["2", "1"]]
    assert procs[2].attributes["JobBatchName"] == '"pool_1"'
    assert procs[0].attributes["JobDurationCategory"] == '"Medium"'
    assert procs[0].transfer_input_files == [str(farm / "a.txt")]
    if htcondor is None:
        return
    jobs = htcondor_jobs(farm, POOL_STYLE)
    for proc, job in zip(procs, jobs, strict=True):
        assert proc.arguments == str(job["Args"]).split()
        for name, value in proc.attributes.items():
            assert same_expression(value, job.lookup(name)), name


@pytest.mark.parametrize(("value", "held"), [("true", True), ("False", False)])
def test_hold_is_carried_out(farm: Path, value: str, held: bool) -> None:
    desc = parse(farm, f"hold = {value}\nqueue\n")
    assert desc.procs[0].hold is held and desc.warnings == []
    if htcondor is not None:
        assert htcondor_jobs(farm, f"hold = {value}\nqueue\n")[0]["JobStatus"] == (5 if held else 1)


def test_the_compatibility_table_has_a_row_for_every_key() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "htcondor-compatibility.md").read_text()
    doc = doc.split("\n## Submit keys\n", 1)[1].split("\n## ", 1)[0]
    rows = {line.split("`")[1] for line in doc.splitlines() if line.startswith("| `")}
    assert rows == CARRIED_OUT | set(STORED) | set(IGNORED)
    for alias, key in ALIASES.items():
        assert f"`{alias}`" in doc, (alias, key)


#: Stored expressions condor_submit refuses (ClassAd syntax errors), and the reason.
BAD_EXPRESSIONS = [
    ("+Weight = 1 +", "job attribute Weight: cannot parse the expression '1 \\+'"),
    ("MY.Weight = abc def", "job attribute Weight: .*column 5: unexpected 'def'"),
    ("rank = Memory +", "rank: cannot parse"),
    ("on_exit_hold = ExitCode = 1", "on_exit_hold: .*column 10: unexpected '='"),
    ("periodic_remove = JobStatus ==", "periodic_remove: cannot parse"),
    ("allowed_execute_duration = 10m", "allowed_execute_duration: .*unexpected 'm'"),
    ("+Items = {1, 2", "expected '}'"),
]


@pytest.mark.parametrize(("text", "message"), BAD_EXPRESSIONS)
def test_bad_expressions_are_refused_with_the_line(farm: Path, text: str, message: str) -> None:
    with pytest.raises(SubmitFileError, match=message) as refused:
        parse(farm, f"{text}\nqueue\n")
    assert refused.value.line == 2


@needs_htcondor
@pytest.mark.parametrize(("text", "message"), BAD_EXPRESSIONS)
def test_bad_expressions_are_refused_by_htcondor(farm: Path, text: str, message: str) -> None:
    with pytest.raises(Exception, match="Parse error"):
        htcondor_jobs(farm, f"{text}\nqueue\n")


@pytest.mark.parametrize(
    "text", ["+F = nosuchfunction(1)", "+F = floor(1, 2, 3)", "+F = 'odd name'", "+F = [a = 1]"]
)
def test_expressions_htcondor_parses_are_accepted(farm: Path, text: str) -> None:
    """An unknown function or a wrong count of arguments is an ERROR value in HTCondor,
    not a syntax error; a quoted attribute name is a name."""
    assert parse(farm, f"{text}\nqueue\n").procs[0].attributes["F"] == text.split("= ", 1)[1]
    if htcondor is not None:
        assert len(htcondor_jobs(farm, f"{text}\nqueue\n")) == 1


def test_my_inside_a_value_is_not_a_custom_attribute(farm: Path) -> None:
    """Only a line that starts with ``MY.Name =`` sets an attribute: ``MY.`` later in a
    value (``requirements = MY.Flavour == ...``) is the expression's own."""
    text = '+Flavour = "long"\nrequirements = MY.Flavour == "long"\nrank = MY.Flavour =?= "x"\n'
    proc = parse(farm, f"{text}queue\n").procs[0]
    assert proc.requirements == 'MY.Flavour == "long"'
    assert proc.attributes == {"Flavour": '"long"', "Rank": 'MY.Flavour =?= "x"'}
