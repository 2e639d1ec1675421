"""The requirements language: parsed by hand (never eval), HTCondor's meaning, errors
that name the column; and the plain-words reasons of jobs no worker can run."""

from __future__ import annotations

import pytest

from scheduler.matching.capacity import Capacity, never_reasons
from scheduler.matching.classad import ERROR, UNDEFINED
from scheduler.matching.requirements import RequirementsError, compile_requirements, worker_ad
from scheduler.protocol import JobSpec

AD = worker_ad(name="w1", worker_id=3, cpus=8, memory_mb=16384, gpus=1, disk_kb=10**8,
               hostname="node1.example.org", opsys="Linux", arch="x86_64", load_avg=0.5,
               gpu_memory_mb=24000)  # fmt: skip


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("Memory >= 16384", True),
        ("Cpus >= 4 && Gpus > 0", True),
        ("Cpus >= 16 || Memory > 1000", True),
        ("!(Cpus >= 16)", True),
        ('OpSys == "linux" && Arch == "X86_64"', True),  # == ignores case for strings
        ('OpSys =?= "linux"', False),  # =?= does not
        ('Name =!= "w2"', True),
        ("TARGET.Cpus * 2 + 1 == 17", True),
        ("Cpus / 3 == 2", True),  # integer division, as ClassAds
        ("Cpus % 3 == 2", True),
        ("-Cpus < 0", True),
        ("LoadAvg < 1.5e0", True),
        ("WorkerId == 3 && GpuMemory >= 20000", True),
        ('Machine == "node1.example.org"', True),
        ("undefined || Cpus > 1", True),
        ("undefined && Cpus > 1", UNDEFINED),
        ("undefined == 1", UNDEFINED),
        ("undefined =?= undefined", True),
        ('Cpus == "8"', ERROR),  # a number never equals a string
        ("Cpus / 0 > 1", ERROR),
        ("OpSysAndVer =?= undefined && TARGET.HasCVMFS =?= undefined", True),
        ("MY.Cpus =?= undefined && RequestCpus =?= undefined", True),
        ('regexp("^node[0-9]", Machine) && stringListMember("w1", "w0, w1")', True),
        ("true && !false", True),
    ],
)
def test_evaluation(text: str, value: object) -> None:
    assert compile_requirements(text).evaluate(AD) == value
    assert compile_requirements(text).matches(AD) is (value is True)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Memory >", "column 9: the expression ends too early"),
        ("Memory >< 2", "column 9: unexpected '<'"),
        ("(Cpus > 1", "column 10: expected ')' to close the '(' of column 1"),
        ("Cpus > 1)", "column 9: unexpected ')'"),
        ("Memroy > 1", "column 1: unknown attribute 'Memroy'"),
        ('Name == "w1', "column 9: unterminated string"),
        ("Cpus @ 2", "column 6: unexpected character '@'"),
        ('__import__("os")', "column 1: unknown function __import__()"),
        ("size(1, 2)", "column 1: size() takes 1 arguments, not 2"),
        ("Cpus > 1 ? 2", "column 13: expected ':' for the '?' of column 10"),
        ("", "column 1: the expression ends too early"),
    ],
)
def test_errors_name_the_column(text: str, message: str) -> None:
    with pytest.raises(RequirementsError) as info:
        compile_requirements(text)
    assert str(info.value).startswith(message)


def cap(name: str, cpus: int, memory_mb: int, gpus: int = 0) -> Capacity:
    ad = worker_ad(name=name, worker_id=1, cpus=cpus, memory_mb=memory_mb, gpus=gpus, disk_kb=10**9)
    return Capacity(worker_id=1, name=name, cpus=cpus, memory_mb=memory_mb, gpus=gpus,
                    disk_kb=10**9, ad=ad)  # fmt: skip


def test_reasons_in_plain_words() -> None:
    pool = [cap("a", 8, 16384), cap("b", 2, 4096, gpus=1)]
    spec = JobSpec(executable="x", request_memory=65536)
    assert never_reasons(spec, pool) == (
        [], ["no worker has 64 GB of memory; largest is 16 GB"]
    )  # fmt: skip
    spec = JobSpec(executable="x", request_cpus=4, request_gpus=1)
    assert never_reasons(spec, pool)[1] == [
        "no single worker has everything the job asks for together (4 cpus, 1 GPUs)"
    ]
    spec = JobSpec(executable="x", requirements='Name == "c"')
    assert never_reasons(spec, pool)[1] == ['no worker satisfies the requirements (Name == "c")']
    assert never_reasons(JobSpec(executable="x", machine="zz"), pool)[1] == [
        "the job is pinned to worker 'zz', which is not connected"
    ]
    assert never_reasons(JobSpec(executable="x", request_gpus=1), pool)[0] == ["b"]
    assert never_reasons(JobSpec(executable="x"), []) == ([], ["no worker is connected"])


def test_job_ad_holds_the_job_s_own_attributes() -> None:
    """``+Name`` values: a constant is its value, an expression naming attributes is
    evaluated where used, with the job as MY; dfarm's own attributes win."""
    from types import SimpleNamespace

    from scheduler.matching.job_ad import job_ad

    spec = SimpleNamespace(
        request_cpus=2,
        request_memory=None,
        request_disk=None,
        request_gpus=0,
        attributes={
            "Flavour": '"long"',
            "Weight": "3",
            "Twice": "Weight * RequestCpus",
            "RequestCpus": "99",
            "Broken": "nosuchfunction(1)",
        },
    )
    ad = job_ad(spec)
    assert ad["flavour"] == "long" and ad["weight"] == 3 and ad["requestcpus"] == 2
    worker = worker_ad(name="w", worker_id=1, cpus=4, memory_mb=1024, gpus=0, disk_kb=1)
    rule = compile_requirements(
        'Flavour == "long" && MY.Twice == 6 && Cpus >= MY.Twice - 2', ["Flavour", "Twice"]
    )
    assert rule.needs_job and rule.matches(worker, ad)
    assert compile_requirements("isError(MY.Broken)").matches(worker, ad)
    assert not compile_requirements('MY.Flavour == "short"').matches(worker, ad)
