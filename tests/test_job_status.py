"""A job's ClassAd in HTCondor's names, from the record users see."""

from __future__ import annotations

from scheduler.matching.classad import ERROR, compile_expression
from scheduler.matching.job_status import (
    hold_reason_code,
    quote_arguments,
    status_ad,
    status_attributes,
)
from scheduler.protocol import JobInfo


def _info(**changes: object) -> JobInfo:
    fields: dict[str, object] = {
        "id": "7.2",
        "cluster": 7,
        "proc": 2,
        "owner": "alice",
        "state": "idle",
        "submit_time": 1000.5,
        "executable": "/bin/run",
        "arguments": ["-n", "a b"],
    }
    fields.update(changes)
    return JobInfo(**fields)  # type: ignore[arg-type]


def test_idle_job_in_htcondor_names() -> None:
    ad = status_ad(_info())
    assert ad["clusterid"] == 7 and ad["procid"] == 2 and ad["owner"] == "alice"
    assert ad["jobstatus"] == 1 and ad["qdate"] == 1000 and ad["enteredcurrentstatus"] == 1000
    assert ad["numjobstarts"] == 0 and ad["completiondate"] == 0
    assert ad["cmd"] == "/bin/run" and ad["arguments"] == "-n 'a b'"
    assert ad["remotewallclocktime"] == 0.0
    assert ad["requestcpus"] == 1 and ad["requestgpus"] == 0 and "requestmemory" not in ad
    sized = status_ad(_info(request_cpus=4, request_memory=2048, request_disk=1024))
    assert (sized["requestcpus"], sized["requestmemory"], sized["requestdisk"]) == (4, 2048, 1024)
    assert "exitcode" not in ad and "holdreason" not in ad and "jobstartdate" not in ad


def test_running_and_completed_jobs() -> None:
    running = status_ad(_info(state="running", start_time=1010.0, worker="w1", num_starts=1))
    assert running["jobstatus"] == 2 and running["remotehost"] == "w1"
    assert running["jobcurrentstartdate"] == 1010 and running["enteredcurrentstatus"] == 1010
    done = status_ad(
        _info(
            state="completed",
            start_time=1010,
            end_time=1070.9,
            exit_code=3,
            wall_time=60.9,
            cpu_time=12.5,
            worker="w1",
            num_starts=1,
        )
    )
    assert done["jobstatus"] == 4 and done["exitcode"] == 3 and done["exitbysignal"] is False
    assert done["completiondate"] == 1070 and done["enteredcurrentstatus"] == 1070
    assert done["remotewallclocktime"] == 60.9 and done["remoteusercpu"] == 12.5
    assert done["lastremotehost"] == "w1" and "remotehost" not in done
    killed = status_ad(_info(state="completed", end_time=1080, exit_signal=9))
    assert killed["exitbysignal"] is True and killed["exitsignal"] == 9
    assert status_ad(_info(state="removed", end_time=1090))["jobstatus"] == 3


def test_held_job_has_htcondor_hold_codes() -> None:
    ad = status_ad(_info(state="held", end_time=1100, hold_reason="held by alice: wait"))
    assert ad["jobstatus"] == 5 and ad["holdreason"] == "held by alice: wait"
    assert ad["holdreasoncode"] == 1 and ad["enteredcurrentstatus"] == 1100
    assert hold_reason_code("submitted on hold at user's request") == 15
    assert hold_reason_code("periodic_hold: ran too long") == 3
    assert hold_reason_code("could not fetch input file data.txt") == 13
    assert hold_reason_code("exec format error") == 6
    assert hold_reason_code("memory limit exceeded: used 900 MB, 400 MB over") == 34


def test_custom_attributes_evaluated_in_the_ad() -> None:
    ad = status_ad(
        _info(
            attributes={
                "JobFlavour": '"espresso"',
                "Score": "ProcId * 10",
                "Bad": "1 +",
                "JobStatus": "99",
                "Flag": "true",
            }
        )
    )
    assert ad["jobflavour"] == "espresso" and ad["score"] == 20 and ad["flag"] is True
    assert ad["bad"] is ERROR and ad["jobstatus"] == 1
    expr = compile_expression('JobFlavour == "ESPRESSO" && MY.Score > 10 && JobStatus == 1')
    assert expr.evaluate(ad) is True


def test_long_form_quotes_strings_and_keeps_expressions() -> None:
    rows = dict(status_attributes(_info(attributes={"Score": "ProcId * 10", "Name": '"x"'})))
    assert rows["Owner"] == '"alice"' and rows["JobStatus"] == "1" and rows["ClusterId"] == "7"
    assert rows["Score"] == "ProcId * 10" and rows["Name"] == '"x"'
    assert list(rows) == sorted(rows, key=str.lower)


def test_quote_arguments() -> None:
    assert quote_arguments(["a", "it's", ""]) == "a 'it''s' ''"


def test_autoformat_options_and_batches() -> None:
    from control_node.render_classad import AutoFormat, autoformat, batch_table, parse_autoformat

    assert parse_autoformat(["-af:jh,", "A", "-l"]) == (["-af", "A", "-l"], "jh,")
    try:
        parse_autoformat(["-af:x", "A"])
    except ValueError as exc:
        assert "unknown option 'x'" in str(exc)
    else:
        raise AssertionError("-af:x accepted")
    jobs = [_info(id=f"{c}.{i}", cluster=c, proc=i) for c in (3, 4) for i in range(2)]
    assert autoformat(jobs[:1], AutoFormat(["ProcId", "Missing"], "tV")) == "0\tundefined"
    assert autoformat(jobs[:1], AutoFormat(["Owner"], "V")) == '"alice"'
    rows = batch_table(jobs).splitlines()
    assert [r.split()[1:3] + r.split()[-1:] for r in rows[1:]] == [
        ["ID:", "3", "3.0-1"],
        ["ID:", "4", "4.0-1"],
    ]
