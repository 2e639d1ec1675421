"""Unit tests for the wire protocol (``scheduler.protocol``): frames, message
validation, stream readers, the handshake helpers, ids, sizes and the access record."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import struct
import threading
import time
from pathlib import Path

import pytest

import scheduler.protocol.checkpoints as ck
import scheduler.protocol.explain as ex
import scheduler.protocol.jobcontrol as jc
from scheduler.protocol import (
    DEFAULT_MAX_FRAME,
    MESSAGE_TYPES,
    AccessRecord,
    Auth,
    AwaitClusters,
    Challenge,
    CheckpointFile,
    ClusterCreated,
    ClusterDone,
    Error,
    FetchResults,
    FtpGrant,
    GpuInfo,
    HandshakeError,
    Heartbeat,
    Hello,
    InputFile,
    JobEvent,
    JobFinished,
    JobInfo,
    JobList,
    JobResults,
    JobSpec,
    JobUpdate,
    KillJob,
    Message,
    NewCluster,
    NewGrant,
    Ok,
    ProbeFtp,
    ProbeGranted,
    ProtocolError,
    QueryJobs,
    QueryWorkers,
    Register,
    Registered,
    RunJob,
    SubmitJobs,
    SubmitSmall,
    Submitted,
    Subscribe,
    Welcome,
    WorkerInfo,
    WorkerList,
    WorkerMetrics,
    answer_challenge,
    auth_message,
    decode,
    encode,
    format_job_id,
    make_verifier,
    parse_disk_kb,
    parse_job_id,
    parse_memory_mb,
    proof_matches,
    read_message,
    recv_message,
    server_signature,
    shared_specs,
    token_user,
    user_key,
    verify_welcome,
)
from scheduler.protocol import dags as dg
from scheduler.transport.ftp import FTP_ERRORS, ftp_session

# ----------------------------------------------------------------------------- samples

SHA = "ab" * 32


def sample_spec() -> JobSpec:
    """A spec with every field away from its default."""
    return JobSpec(
        executable="run.sh",
        arguments=["-n", "3", "two words"],
        environment={"A": "1", "PATH_EXTRA": "/opt/x"},
        stdin="in.txt",
        inputs=[
            InputFile(name="run.sh", sha256=SHA, size=120),
            InputFile(name="in.txt", sha256="cd" * 32, size=0),
        ],
        transfer_output_files=["out/a.txt", "b.txt"],
        request_cpus=4,
        request_memory=2048,
        request_disk=1_000_000,
        request_gpus=1,
        priority=-5,
        machine="w1",
        notify_user="alice@example.org",
        notification="Always",
        output="/home/alice/out.$(Process)",
        error="/home/alice/err",
        log="/home/alice/log",
        initialdir="/home/alice/run",
    )


def sample_grant() -> FtpGrant:
    return FtpGrant(host="10.0.0.1", port=2121, user="gabc", password="pw-xyz")


def sample_metrics() -> WorkerMetrics:
    return WorkerMetrics(
        cores=8,
        threads=16,
        memory_total_mb=64000,
        memory_available_mb=30000,
        disk_total_mb=500000,
        disk_free_mb=120000,
        load_avg=[0.5, 1.25, 2.0],
        gpus=[
            GpuInfo(index=0, name="NVIDIA H100", memory_mb=81559, capability=9.0),
            GpuInfo(index=1, name="NVIDIA H100", memory_mb=81559),
        ],
        os="Linux",
        arch="x86_64",
        hostname="node1",
        attributes={"OpSysAndVer": "Ubuntu22", "HasDocker": False, "Rack": 7, "Speed": 1.5},
    )


def sample_info() -> JobInfo:
    return JobInfo(
        id="42.3",
        cluster=42,
        proc=3,
        owner="alice",
        state="completed",
        submit_time=1700000000.25,
        start_time=1700000001.5,
        end_time=1700000009.75,
        worker="w1",
        exit_code=2,
        exit_signal=None,
        wall_time=8.25,
        cpu_time=7.5,
        num_starts=2,
        hold_reason="was held once",
        executable="run.sh",
        arguments=["x"],
        output_files=["stdout", "outputs/a.txt"],
    )


def sample_worker_info() -> WorkerInfo:
    return WorkerInfo(
        id=3,
        name="w1",
        state="busy",
        address="10.0.0.7:5555",
        slots_total=4,
        slots_used=2,
        cpus_total=8,
        cpus_used=5,
        memory_total_mb=8192,
        memory_used_mb=4096,
        gpus_total=1,
        gpus_used=0,
        metrics=sample_metrics(),
        last_heartbeat=1700000100.5,
        connected_since=1700000000.0,
    )


SAMPLES: dict[str, Message] = {
    "error": Error(message="no such job", code="not_found"),
    "hello": Hello(role="worker", version=1, name="w1", nonce="n" * 32),
    "challenge": Challenge(nonce="c" * 32, salt="ab" * 16, iterations=4096),
    "auth": Auth(digest="d" * 64),
    "welcome": Welcome(digest="e" * 64, server_name="sched", server_time=1700000000.5),
    "ok": Ok(),
    "new_cluster": NewCluster(),
    "cluster_created": ClusterCreated(cluster=42, upload=sample_grant()),
    "submit_jobs": SubmitJobs(
        cluster=42, submit_file="/home/alice/job.sub", jobs=[sample_spec(), JobSpec(executable="x")]
    ),
    "submit_small": SubmitSmall(
        submit_file="map.sub", jobs=[sample_spec()], files={"ab" * 32: "eA=="}, await_end=True
    ),
    "submitted": Submitted(cluster=42, job_ids=["42.0", "42.1"], warnings=["careful"]),
    "query_jobs": QueryJobs(ids=["42", "43.1"], all_users=True, states=["idle", "held"]),
    "job_list": JobList(
        jobs=[
            sample_info(),
            JobInfo(id="1.0", cluster=1, proc=0, owner="bob", state="idle", submit_time=5.0),
        ]
    ),  # fmt: skip
    "query_workers": QueryWorkers(),
    "worker_list": WorkerList(workers=[sample_worker_info()]),
    "subscribe": Subscribe(clusters=[42, 43]),
    "job_update": JobUpdate(job=sample_info()),
    "await_clusters": AwaitClusters(clusters=[42, 43]),
    "cluster_done": ClusterDone(cluster=42),
    "fetch_results": FetchResults(ids=["42.3", "43"]),
    "probe_ftp": ProbeFtp(),
    "probe_granted": ProbeGranted(ftp=sample_grant(), directory="ab12", passive_ports="1-9"),
    "job_results": JobResults(
        download=sample_grant(),
        jobs=[sample_info()],
        specs={"42.3": sample_spec(), "42.4": JobSpec(executable="y")},
        events={
            "42.3": [
                JobEvent(time=1.5, event="submitted", detail="from job.sub"),
                JobEvent(time=2.0, event="executing"),
            ],
            "42.4": [],
        },
        files={"42.3": {"stdout": "aGkK", "outputs/a.txt": ""}},
    ),
    "register": Register(
        slots=4, cpus=8, memory_mb=64000, gpus=2, metrics=sample_metrics(), running=["42.3"]
    ),
    "registered": Registered(worker_id=7, heartbeat_interval=2.5),
    "heartbeat": Heartbeat(metrics=sample_metrics()),
    "job_finished": JobFinished(
        job_id="42.3",
        attempt=2,
        exit_code=None,
        exit_signal=9,
        wall_time=3.5,
        cpu_time=1.25,
        output_files=["a.txt"],
        files={"stdout": "aGkK", "stderr": ""},
        failure="declared output missing",
    ),
    "run_job": RunJob(
        job_id="42.3",
        attempt=2,
        owner="alice",
        spec=sample_spec(),
        ftp=sample_grant(),
        files={"ab" * 32: "aGkK"},
    ),
    "new_grant": NewGrant(job_id="42.3", attempt=2, ftp=sample_grant()),
    "kill_job": KillJob(job_id="42.3", attempt=1, reason="removed"),
    "change_jobs": jc.ChangeJobs(action="hold", ids=["42", "43.1"], reason="later"),
    "edit_jobs": jc.EditJobs(ids=["42.0"], changes={"request_memory": "4GB"}),
    "jobs_changed": jc.JobsChanged(changed=["42.0"], skipped={"42.1": "is completed"}),
    "query_history": jc.QueryHistory(ids=["42"], user="*", since=1.5e9, limit=10),
    "tail_job": jc.TailJob(job_id="42.0", stream="stderr", offset=10),
    "read_output": jc.ReadOutput(job_id="42.0", attempt=2, stream="stdout", offset=0, limit=9),
    "output_chunk": jc.OutputChunk(job_id="42.0", offset=3, data="aGkK", size=6),
    "drain_worker": jc.DrainWorker(name="w1", grace=5.0),
    "drain": jc.Drain(grace=None),
    "draining": jc.Draining(requeue=["42.0:2"]),
    "checkpointed": ck.Checkpointed(
        job_id="42.0",
        attempt=2,
        file=CheckpointFile(name="2-1.tar", sha256="ab" * 32, size=9),
        wall_time=1.5,
        vacating=True,
    ),  # fmt: skip
    "query_users": ex.QueryUsers(),
    "user_list": ex.UserList(
        users=[
            ex.UserUsage(
                user="ann",
                effective_usage=12.5,
                share=1.0,
                idle=3,
                running=1,
                running_cpus=2,
                rank=1,
            )
        ],
        halflife=86400.0,
    ),  # fmt: skip
    "analyze_jobs": ex.AnalyzeJobs(ids=["42.0"]),
    "job_analyses": ex.JobAnalyses(
        jobs=[
            ex.JobAnalysis(
                id="42.0",
                state="idle",
                owner="ann",
                summary="Job 42.0 is idle.",
                reasons=["no worker has a GPU"],
                workers_connected=2,
                estimated_start=1.7e9,
            )
        ],
        clusters=[
            ex.ClusterAnalysis(
                cluster=43,
                owner="ann",
                idle=10,
                running=0,
                held=1,
                idle_reasons={"no connected worker has 400 GB of memory": 10},
                hold_reasons={"submitted on hold at user's request": 1},
            )
        ],
    ),  # fmt: skip
    "query_batches": ex.QueryBatches(all_users=True, clusters=[42]),
    "batch_list": ex.BatchList(
        batches=[
            ex.BatchInfo(
                cluster=42,
                owner="ann",
                batch_name=None,
                submitted=1.7e9,
                done=1,
                running=2,
                idle=3,
                held=0,
                total=6,
                job_ids="42.0-5",
            )
        ],
        totals={"idle": 3, "running": 2, "held": 0},
        all_totals={"idle": 5, "running": 2, "held": 0},
    ),  # fmt: skip
    "query_counts": ex.QueryCounts(all_users=True),
    "job_counts": ex.JobCounts(counts={"idle": 3, "running": 1}),
}

# workflows (scheduler/protocol/dags.py)
SAMPLES.update(
    {
        "submit_dag": dg.SubmitDag(
            dag=7,
            name="a.dag",
            nodes=[
                dg.DagNodeSubmit(
                    name="A",
                    submit_file="a.sub",
                    jobs=[sample_spec()],
                    retry=2,
                    retry_unless_exit=3,
                    pre=dg.DagScriptSpec(name="pre.sh", executable="ab" * 32, arguments=["$JOB"]),
                    category="big",
                    abort_on=5,
                ),
                dg.DagNodeSubmit(name="B", parents=["A"], after=[3], done=True),
            ],
            max_jobs={"big": 2},
            config={"DAGMAN_MAX_JOBS_SUBMITTED": "4"},
        ),
        "dag_submitted": dg.DagSubmitted(dag=7, clusters={"A": 8}, warnings=["careful"]),
        "query_dags": dg.QueryDags(dags=[7], all_users=True),
        "dag_list": dg.DagList(
            dags=[
                dg.DagInfo(
                    id=7,
                    owner="ann",
                    name="a.dag",
                    state="failed",
                    created=1.7e9,
                    ended=1.7e9 + 5,
                    reason="1 node(s) failed",
                    counts={"failed": 1, "futile": 1},
                    nodes=[
                        dg.DagNodeInfo(name="A", state="failed", cluster=8, return_code=1),
                        dg.DagNodeInfo(name="B", state="futile", parents=["A"]),
                    ],
                )
            ]
        ),
        "rerun_dag": dg.RerunDag(dag=7),
    }
)


def body_of(message: Message) -> bytes:
    return encode(message)[4:]


def wire_dict(message: Message) -> dict:
    return json.loads(body_of(message))


def decode_dict(data: object) -> Message:
    return decode(json.dumps(data).encode())


def decode_error(data: object) -> str:
    with pytest.raises(ProtocolError) as info:
        decode_dict(data)
    return str(info.value)


# ----------------------------------------------------------------------------- round trips


def test_samples_cover_every_message_type() -> None:
    assert set(SAMPLES) == set(MESSAGE_TYPES)
    for kind, message in SAMPLES.items():
        assert type(message) is MESSAGE_TYPES[kind]
        assert message.type == kind


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_round_trip(kind: str) -> None:
    message = SAMPLES[kind]
    decoded = decode(body_of(message))
    assert type(decoded) is type(message)
    assert decoded == message
    with_id = message.with_id(99)
    assert decode(body_of(with_id)) == with_id
    assert decode(body_of(with_id)).id == 99


def test_machine_attributes_keep_their_types_and_are_optional() -> None:
    beat = decode(body_of(SAMPLES["heartbeat"]))
    assert isinstance(beat, Heartbeat)
    assert {k: type(v) for k, v in beat.metrics.attributes.items()} == {
        "OpSysAndVer": str, "HasDocker": bool, "Rack": int, "Speed": float,
    }  # fmt: skip
    # A worker of an earlier release sends neither field.
    data = wire_dict(SAMPLES["heartbeat"])
    del data["metrics"]["attributes"]
    for gpu in data["metrics"]["gpus"]:
        del gpu["capability"]
    old = decode(json.dumps(data).encode())
    assert isinstance(old, Heartbeat)
    assert old.metrics.attributes == {} and old.metrics.gpus[0].capability == 0.0


def test_round_trip_keeps_nested_record_types() -> None:
    run = decode(body_of(SAMPLES["run_job"]))
    assert isinstance(run, RunJob)
    assert isinstance(run.spec, JobSpec)
    assert all(isinstance(f, InputFile) for f in run.spec.inputs)
    assert isinstance(run.ftp, FtpGrant)
    workers = decode(body_of(SAMPLES["worker_list"]))
    assert isinstance(workers, WorkerList)
    assert isinstance(workers.workers[0].metrics, WorkerMetrics)
    assert isinstance(workers.workers[0].metrics.gpus[1], GpuInfo)
    results = decode(body_of(SAMPLES["job_results"]))
    assert isinstance(results, JobResults)
    assert isinstance(results.specs["42.3"], JobSpec)
    assert isinstance(results.events["42.3"][0], JobEvent)
    assert results.events["42.4"] == []


def test_equal_specs_in_a_row_become_one_object() -> None:
    a, b = JobSpec(executable="a.sh"), JobSpec(executable="b.sh")
    specs = [a, JobSpec(executable="a.sh"), b, JobSpec(executable="a.sh", arguments=["1"]), b]
    shared = shared_specs(specs)
    assert shared == specs  # the same values, in the same order
    assert [id(s) for s in shared] == [id(a), id(a), id(b), id(specs[3]), id(b)]

    # One wire form for the run: each job's message still carries the whole spec.
    def run(spec: JobSpec) -> bytes:
        return body_of(RunJob(job_id="1.1", attempt=1, owner="u", spec=spec, ftp=sample_grant()))

    assert run(shared[0]) == run(shared[1]) == run(specs[1])


def test_frame_header_is_big_endian_length_of_json_body() -> None:
    message = SAMPLES["job_results"]
    frame = encode(message)
    body = frame[4:]
    assert len(body) > 256  # so that the byte order matters
    assert frame[:4] == struct.pack(">I", len(body))
    assert int.from_bytes(frame[:4], "big") == len(body)
    data = json.loads(body.decode("utf-8"))
    assert data["type"] == "job_results"
    assert data["specs"]["42.3"]["inputs"][0] == {"name": "run.sh", "sha256": SHA, "size": 120}


def test_non_ascii_text_survives_and_length_counts_bytes() -> None:
    message = Error(message="ünïcødé ✓")
    frame = encode(message)
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    assert decode(frame[4:]) == message


def test_id_is_omitted_when_none_and_echoed_by_with_id() -> None:
    assert wire_dict(Ok()) == {"type": "ok"}
    assert "id" not in wire_dict(QueryJobs())
    request = QueryJobs(id=7, ids=["42.0"])
    assert wire_dict(request)["id"] == 7
    reply = Ok().with_id(request.id)
    assert reply.id == 7
    assert wire_dict(reply) == {"type": "ok", "id": 7}
    unchanged = Error(message="x", id=3)
    assert unchanged.with_id(None) is unchanged
    assert decode(b'{"type":"ok","id":null}') == Ok()
    assert decode(b'{"type":"ok","id":12}').id == 12


def test_wire_format_of_defaults() -> None:
    data = wire_dict(QueryJobs(id=1))
    assert data == {
        "type": "query_jobs", "id": 1, "ids": [], "all_users": False, "states": [],
        "limit": 0, "after": "",
    }  # fmt: skip
    # Fields left out on the wire take their defaults.
    assert decode(b'{"type":"query_jobs"}') == QueryJobs()


# ----------------------------------------------------------------------------- decode errors


def test_malformed_json() -> None:
    with pytest.raises(ProtocolError, match="malformed JSON"):
        decode(b'{"type": "ok"')


def test_non_utf8_bytes() -> None:
    with pytest.raises(ProtocolError, match="malformed JSON"):
        decode(b'{"type": "error", "message": "\xff\xfe"}')


@pytest.mark.parametrize("body", [b"[]", b'["ok"]', b'"ok"', b"42", b"null"])
def test_not_an_object(body: bytes) -> None:
    with pytest.raises(ProtocolError, match="JSON object"):
        decode(body)


def test_unknown_type() -> None:
    assert "'bogus'" in decode_error({"type": "bogus"})
    assert "unknown message type" in decode_error({"type": "bogus"})


@pytest.mark.parametrize("data", [{}, {"message": "x"}, {"type": None}, {"type": 5}])
def test_missing_or_non_string_type(data: dict) -> None:
    assert "type" in decode_error(data)


def test_missing_field_is_named() -> None:
    message = decode_error({"type": "hello", "role": "worker", "version": 1, "name": "w"})
    assert message == "hello: missing field 'nonce'"


def test_missing_nested_field_is_named() -> None:
    data = wire_dict(SAMPLES["run_job"])
    del data["spec"]["inputs"][1]["sha256"]
    assert decode_error(data) == "run_job.spec.inputs[1]: missing field 'sha256'"


def test_unknown_field_is_named() -> None:
    assert decode_error({"type": "ok", "extra": 1}) == "ok: unknown field 'extra'"
    data = wire_dict(SAMPLES["worker_list"])
    data["workers"][0]["metrics"]["gpus"][0]["vendor"] = "x"
    assert decode_error(data) == "worker_list.workers[0].metrics.gpus[0]: unknown field 'vendor'"


def test_type_is_not_a_field_of_nested_records() -> None:
    data = wire_dict(SAMPLES["cluster_created"])
    data["upload"]["type"] = "ftp"
    assert "unknown field 'type'" in decode_error(data)


def _set(data: dict, path: list, value: object) -> dict:
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("kind", "path", "value", "where", "expected"),
    [
        ("hello", ["version"], "1", "hello.version", "int"),  # str for int
        ("hello", ["version"], True, "hello.version", "int"),  # bool for int
        ("hello", ["version"], 1.0, "hello.version", "int"),  # float for int
        ("hello", ["version"], 1.5, "hello.version", "int"),
        ("hello", ["name"], 5, "hello.name", "str"),
        ("hello", ["name"], ["w"], "hello.name", "str"),
        ("query_jobs", ["all_users"], 1, "query_jobs.all_users", "bool"),  # int for bool
        ("query_jobs", ["ids"], "42", "query_jobs.ids", "a list"),
        ("query_jobs", ["ids"], ["42", 43], "query_jobs.ids[1]", "str"),  # list item
        ("subscribe", ["clusters"], [1, "2"], "subscribe.clusters[1]", "int"),
        ("subscribe", ["clusters"], [1, False], "subscribe.clusters[1]", "int"),
        ("welcome", ["server_time"], "now", "welcome.server_time", "float"),
        ("welcome", ["server_time"], True, "welcome.server_time", "float"),  # bool for float
        ("registered", ["heartbeat_interval"], [2], "registered.heartbeat_interval", "float"),
        ("job_finished", ["exit_code"], "1", "job_finished.exit_code", "int"),  # optional
        ("job_finished", ["exit_code"], 1.0, "job_finished.exit_code", "int"),
        ("run_job", ["spec", "inputs", 0, "size"], "120", "run_job.spec.inputs[0].size", "int"),
        ("run_job", ["spec", "environment", "A"], 1, "run_job.spec.environment.A", "str"),
        ("run_job", ["spec", "environment"], ["A=1"], "run_job.spec.environment", "an object"),
        ("run_job", ["spec", "request_memory"], 1.5, "run_job.spec.request_memory", "int"),
        ("run_job", ["ftp", "port"], "21", "run_job.ftp.port", "int"),
        ("run_job", ["spec"], "run.sh", "run_job.spec", "an object"),
        ("run_job", ["spec", "inputs", 1], "in.txt", "run_job.spec.inputs[1]", "an object"),
        (
            "worker_list",
            ["workers", 0, "metrics", "load_avg", 2],
            "x",
            "worker_list.workers[0].metrics.load_avg[2]",
            "float",
        ),  # fmt: skip
        (
            "worker_list",
            ["workers", 0, "metrics", "gpus", 1, "memory_mb"],
            1.5,
            "worker_list.workers[0].metrics.gpus[1].memory_mb",
            "int",
        ),  # fmt: skip
        ("job_results", ["specs", "42.4"], 5, "job_results.specs.42.4", "an object"),
        (
            "job_results",
            ["specs", "42.3", "priority"],
            "1",
            "job_results.specs.42.3.priority",
            "int",
        ),  # fmt: skip
        (
            "job_results",
            ["events", "42.3", 1, "time"],
            "t",
            "job_results.events.42.3[1].time",
            "float",
        ),  # fmt: skip
        ("job_results", ["events", "42.3"], {"time": 1.0}, "job_results.events.42.3", "a list"),
        ("job_results", ["events"], [], "job_results.events", "an object"),
    ],
)
def test_wrong_types_name_the_dotted_path(
    kind: str, path: list, value: object, where: str, expected: str
) -> None:
    data = _set(wire_dict(SAMPLES[kind]), path, value)
    assert decode_error(data) == f"{where}: expected {expected}"


@pytest.mark.parametrize(
    ("kind", "path", "where"),
    [
        ("challenge", ["nonce"], "challenge.nonce"),
        ("hello", ["version"], "hello.version"),
        ("query_jobs", ["ids"], "query_jobs.ids"),
        ("query_jobs", ["ids", 0], "query_jobs.ids[0]"),
        ("run_job", ["spec"], "run_job.spec"),
        ("run_job", ["spec", "inputs", 0, "size"], "run_job.spec.inputs[0].size"),
        ("job_results", ["specs", "42.3"], "job_results.specs.42.3"),
        ("welcome", ["server_time"], "welcome.server_time"),
    ],
)
def test_null_for_non_optional_field(kind: str, path: list, where: str) -> None:
    data = _set(wire_dict(SAMPLES[kind]), path, None)
    assert decode_error(data).startswith(f"{where}: ")


def test_null_for_optional_fields_is_accepted() -> None:
    data = wire_dict(SAMPLES["run_job"])
    for name in ("stdin", "transfer_output_files", "request_memory", "machine", "output"):
        data["spec"][name] = None
    decoded = decode_dict(data)
    assert isinstance(decoded, RunJob)
    assert decoded.spec.stdin is None
    assert decoded.spec.transfer_output_files is None
    assert decoded.spec.request_memory is None
    assert decoded.spec.machine is None


def test_int_accepted_for_float() -> None:
    data = wire_dict(SAMPLES["welcome"])
    data["server_time"] = 1700000000
    decoded = decode_dict(data)
    assert isinstance(decoded, Welcome)
    assert decoded.server_time == 1700000000.0
    assert type(decoded.server_time) is float
    data = wire_dict(SAMPLES["heartbeat"])
    data["metrics"]["load_avg"] = [0, 1, 2]
    decoded = decode_dict(data)
    assert isinstance(decoded, Heartbeat)
    assert [type(x) for x in decoded.metrics.load_avg] == [float, float, float]


# ----------------------------------------------------------------------------- streams


def run_async(coro_fn, timeout: float = 5.0):
    async def main():
        return await asyncio.wait_for(coro_fn(), timeout)

    return asyncio.run(main())


def test_read_message_reads_consecutive_frames_fed_in_pieces() -> None:
    first, second = SAMPLES["run_job"].with_id(1), SAMPLES["ok"].with_id(1)
    data = encode(first) + encode(second)

    async def go():
        reader = asyncio.StreamReader()

        async def feed():
            for i in range(0, len(data), 7):
                reader.feed_data(data[i : i + 7])
                await asyncio.sleep(0)
            reader.feed_eof()

        feeder = asyncio.ensure_future(feed())
        got = [await read_message(reader), await read_message(reader)]
        await feeder
        with pytest.raises(asyncio.IncompleteReadError):
            await read_message(reader)
        return got

    assert run_async(go) == [first, second]


def test_read_message_refuses_oversized_frame_before_reading_body() -> None:
    limit = 100

    async def go():
        reader = asyncio.StreamReader()
        # Only the header and the start of a body arrive; no EOF: reading the
        # body would block until the timeout.
        reader.feed_data(struct.pack(">I", limit + 1) + b"BODY")
        with pytest.raises(ProtocolError, match="exceeds"):
            await read_message(reader, max_frame=limit)
        return await reader.read(4)

    assert run_async(go) == b"BODY"


def test_read_message_accepts_frame_of_exactly_max_frame() -> None:
    frame = encode(SAMPLES["error"])
    length = len(frame) - 4

    async def go():
        reader = asyncio.StreamReader()
        reader.feed_data(frame)
        return await read_message(reader, max_frame=length)

    assert run_async(go) == SAMPLES["error"]


def test_read_message_default_limit() -> None:
    async def go():
        reader = asyncio.StreamReader()
        reader.feed_data(struct.pack(">I", DEFAULT_MAX_FRAME + 1))
        await read_message(reader)

    with pytest.raises(ProtocolError, match=str(DEFAULT_MAX_FRAME)):
        run_async(go)


def test_read_message_rejects_invalid_body() -> None:
    async def go():
        reader = asyncio.StreamReader()
        body = b'{"type":"nope"}'
        reader.feed_data(struct.pack(">I", len(body)) + body)
        await read_message(reader)

    with pytest.raises(ProtocolError, match="unknown message type"):
        run_async(go)


@pytest.fixture
def sockpair():
    a, b = socket.socketpair()
    a.settimeout(5)
    b.settimeout(5)
    yield a, b
    a.close()
    b.close()


def test_recv_message_refuses_oversized_frame(sockpair) -> None:
    a, b = sockpair
    a.sendall(struct.pack(">I", 1001) + b"BODY")
    with pytest.raises(ProtocolError, match="exceeds the limit of 1000"):
        recv_message(b, max_frame=1000)
    # The body was not read.
    assert b.recv(4) == b"BODY"


def test_recv_message_reassembles_frames_sent_in_pieces(sockpair) -> None:
    a, b = sockpair
    messages = [SAMPLES["worker_list"].with_id(3), SAMPLES["job_results"], SAMPLES["ok"]]
    data = b"".join(encode(m) for m in messages)

    def send() -> None:
        for i in range(0, len(data), 97):
            a.sendall(data[i : i + 97])
            time.sleep(0.001)
        # A frame split inside its header.
        a.sendall(data[:2])
        time.sleep(0.02)
        a.sendall(data[2:])

    sender = threading.Thread(target=send)
    sender.start()
    try:
        got = [recv_message(b) for _ in range(len(messages) + 1)]
    finally:
        sender.join()
    assert got == [*messages, messages[0]]


def test_recv_message_raises_when_peer_closes_mid_frame(sockpair) -> None:
    a, b = sockpair
    frame = encode(SAMPLES["ok"])
    a.sendall(frame[:-1])
    a.shutdown(socket.SHUT_WR)
    with pytest.raises(ConnectionError):
        recv_message(b)


# ----------------------------------------------------------------------------- handshake

KEY = user_key("w1:pool-secret")
HELLO = Hello(role="worker", version=1, name="w1", nonce="11" * 16)
CHALLENGE = Challenge(nonce="22" * 16, salt="33" * 16, iterations=4096)
VERIFIER = make_verifier(KEY, bytes.fromhex(CHALLENGE.salt))


def proof(key: bytes, hello: Hello, challenge: Challenge) -> bytes:
    return bytes.fromhex(answer_challenge(key, hello, challenge).digest)


def test_the_scheduler_checks_a_proof_with_the_verifier_alone() -> None:
    message = auth_message(HELLO, CHALLENGE)
    assert proof_matches(VERIFIER, message, proof(KEY, HELLO, CHALLENGE))
    assert not proof_matches(VERIFIER, message, proof(user_key("w1:other"), HELLO, CHALLENGE))
    # What the verifier holds is no key: a proof made with it is refused.
    for stolen in (VERIFIER.stored_key, VERIFIER.server_key):
        assert not proof_matches(VERIFIER, message, proof(stolen, HELLO, CHALLENGE))


def test_a_proof_binds_every_input() -> None:
    message = auth_message(HELLO, CHALLENGE)
    variants = {
        "role": Hello(role="control", version=1, name="w1", nonce=HELLO.nonce),
        "name": Hello(role="worker", version=1, name="w2", nonce=HELLO.nonce),
        "peer nonce": Hello(role="worker", version=1, name="w1", nonce="44" * 16),
    }
    for what, hello in variants.items():
        assert not proof_matches(VERIFIER, message, proof(KEY, hello, CHALLENGE)), what
    other = Challenge(nonce="55" * 16, salt=CHALLENGE.salt, iterations=4096)
    assert not proof_matches(VERIFIER, message, proof(KEY, HELLO, other)), "server nonce"


def test_answer_challenge_refuses_absurd_iterations() -> None:
    for iterations in (1, 10**9):
        challenge = Challenge(nonce="22" * 16, salt="33" * 16, iterations=iterations)
        with pytest.raises(HandshakeError, match="iterations"):
            answer_challenge(KEY, HELLO, challenge)


def test_answer_challenge_error_reply_keeps_message() -> None:
    with pytest.raises(HandshakeError, match="unknown worker name w1"):
        answer_challenge(KEY, HELLO, Error(message="unknown worker name w1"))


def test_answer_challenge_wrong_reply_type() -> None:
    with pytest.raises(HandshakeError, match="welcome"):
        answer_challenge(KEY, HELLO, Welcome(digest="x", server_name="s", server_time=0.0))


def welcome_for(key: bytes, hello: Hello, challenge: Challenge) -> Welcome:
    verifier = make_verifier(key, bytes.fromhex(challenge.salt), challenge.iterations)
    digest = server_signature(verifier.server_key, auth_message(hello, challenge)).hex()
    return Welcome(digest=digest, server_name="sched", server_time=1.0)


def test_verify_welcome_accepts_right_digest() -> None:
    welcome = welcome_for(KEY, HELLO, CHALLENGE)
    assert verify_welcome(KEY, HELLO, CHALLENGE, welcome) is welcome


def test_verify_welcome_rejects_wrong_digest() -> None:
    with pytest.raises(HandshakeError, match="prove"):
        verify_welcome(KEY, HELLO, CHALLENGE, welcome_for(b"wrong key", HELLO, CHALLENGE))
    garbage = Welcome(digest="0" * 64, server_name="sched", server_time=1.0)
    with pytest.raises(HandshakeError):
        verify_welcome(KEY, HELLO, CHALLENGE, garbage)


def test_verify_welcome_rejects_reflected_peer_digest() -> None:
    peer_digest = answer_challenge(KEY, HELLO, CHALLENGE).digest
    reflected = Welcome(digest=peer_digest, server_name="sched", server_time=1.0)
    with pytest.raises(HandshakeError):
        verify_welcome(KEY, HELLO, CHALLENGE, reflected)


def test_verify_welcome_rejects_replay_from_other_handshake() -> None:
    old_hello = Hello(role="worker", version=1, name="w1", nonce="aa" * 16)
    old_challenge = Challenge(nonce="bb" * 16, salt="33" * 16, iterations=4096)
    recorded = welcome_for(KEY, old_hello, old_challenge)
    assert verify_welcome(KEY, old_hello, old_challenge, recorded) is recorded
    with pytest.raises(HandshakeError):
        verify_welcome(KEY, HELLO, CHALLENGE, recorded)
    # Same peer nonce, new server nonce: still refused.
    with pytest.raises(HandshakeError):
        verify_welcome(KEY, old_hello, CHALLENGE, recorded)


def test_verify_welcome_error_and_wrong_type() -> None:
    with pytest.raises(HandshakeError, match="bad token"):
        verify_welcome(KEY, HELLO, CHALLENGE, Error(message="bad token"))
    with pytest.raises(HandshakeError, match="ok"):
        verify_welcome(KEY, HELLO, CHALLENGE, Ok())


# ----------------------------------------------------------------------------- tokens and ids


def test_token_user() -> None:
    assert token_user("alice:xyz") == "alice"
    assert token_user("  bob.smith:abc-DEF_123\n") == "bob.smith"


@pytest.mark.parametrize("token", ["", "alice", "alice:", ":xyz", ":", "  ", "alice:  "])
def test_token_user_malformed(token: str) -> None:
    with pytest.raises(ValueError, match="malformed token"):
        token_user(token)


def test_user_key() -> None:
    key = user_key("alice:xyz")
    assert isinstance(key, bytes)
    assert len(key) == 32
    assert user_key("alice:xyz") == key
    assert user_key("alice:xyz2") != key
    assert user_key("bob:xyz") != key
    assert key != b"alice:xyz"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("42", (42, None)), ("42.3", (42, 3)), ("0.0", (0, 0)), (" 7.12 ", (7, 12))],
)
def test_parse_job_id(text: str, expected: tuple) -> None:
    assert parse_job_id(text) == expected


@pytest.mark.parametrize("text", ["abc", "", "42.", ".3", "42.3.4", "4 2", "42.x", "x.1", "4,2"])
def test_parse_job_id_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="not a job id") as info:
        parse_job_id(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize("text", ["-1", "1.-2", "+3", "4_2", "1.0_0", "\u0664\u0662", "1.2 3"])
def test_parse_job_id_rejects_signs_underscores_and_non_ascii_digits(text: str) -> None:
    with pytest.raises(ValueError, match="not a job id"):
        parse_job_id(text)


@pytest.mark.parametrize("text", [str(2**63), f"1.{2**63}", "9" * 40])
def test_parse_job_id_refuses_numbers_sqlite_cannot_hold(text: str) -> None:
    with pytest.raises(ValueError, match="out of range"):
        parse_job_id(text)


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 10**30])
def test_integers_beyond_64_bits_are_refused_on_the_wire(value: int) -> None:
    body = json.dumps({"type": "query_jobs", "id": 1, "limit": value}).encode()
    with pytest.raises(ProtocolError, match=r"query_jobs\.limit: int out of range"):
        decode(body)
    assert decode(json.dumps({"type": "query_jobs", "id": 1, "limit": 2**63 - 1}).encode())


def test_format_job_id() -> None:
    assert format_job_id(42, 0) == "42.0"
    assert format_job_id(1, 17) == "1.17"
    assert parse_job_id(format_job_id(1234, 56)) == (1234, 56)


# ----------------------------------------------------------------------------- sizes


@pytest.mark.parametrize(
    ("text", "mb"),
    [
        ("512", 512),
        ("2GB", 2048),
        ("2 gb", 2048),
        ("2g", 2048),
        ("1024M", 1024),
        ("1024MB", 1024),
        ("1.5G", 1536),
        ("100K", 1),  # rounds up
        ("1025K", 2),
        ("0.5", 1),
        ("1T", 1024 * 1024),
        (" 64 ", 64),
    ],
)
def test_parse_memory_mb(text: str, mb: int) -> None:
    assert parse_memory_mb(text) == mb


@pytest.mark.parametrize(
    ("text", "kb"),
    [
        ("512", 512),
        ("2GB", 2 * 1024 * 1024),
        ("2 gb", 2 * 1024 * 1024),
        ("1024M", 1024 * 1024),
        ("1.5G", 1536 * 1024),
        ("100K", 100),
        ("100KB", 100),
        ("0.1", 1),  # rounds up
    ],
)
def test_parse_disk_kb(text: str, kb: int) -> None:
    assert parse_disk_kb(text) == kb


@pytest.mark.parametrize("text", ["0", "-1", "abc", "2XB", "", "0.0", "0G", "1e3", "2 G B", "."])
@pytest.mark.parametrize("parse", [parse_memory_mb, parse_disk_kb])
def test_invalid_sizes(parse, text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse(text)
    assert repr(text) in str(info.value)


# ----------------------------------------------------------------------------- access record


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_access_record_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "access.json"
    record = AccessRecord(host="sched.example.org", port=7171, token="alice:secret")
    record.save(path)
    assert AccessRecord.load(path) == record
    assert json.loads(path.read_text())["token"] == "alice:secret"
    plain = AccessRecord(host="127.0.0.1", port=7070)
    plain.save(path)
    assert AccessRecord.load(path) == plain
    assert sorted(p.name for p in tmp_path.iterdir()) == ["access.json"]


def test_access_record_modes(tmp_path: Path) -> None:
    path = tmp_path / "access.json"
    AccessRecord(host="h", port=1).save(path)
    assert mode(path) == 0o644
    AccessRecord(host="h", port=1, token="alice:secret").save(path)
    assert mode(path) == 0o600
    AccessRecord(host="h", port=1).save(path)
    assert mode(path) == 0o644


def test_access_record_load_missing(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "access.json"
    with pytest.raises(ProtocolError) as info:
        AccessRecord.load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"[]",
        b'{"host": "h"}',
        b'{"host": "h", "port": "7070"}',
        b'{"host": "h", "port": 1, "extra": 2}',
        b"\xff\xfe",
        b"",
    ],
)
def test_access_record_load_corrupt(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "access.json"
    path.write_bytes(content)
    with pytest.raises(ProtocolError) as info:
        AccessRecord.load(path)
    assert str(path) in str(info.value)


def test_access_record_token_is_never_readable_by_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file holding a token is created owner-only, not chmod-ed afterwards."""
    path = tmp_path / "access.json"
    created: list[int] = []
    real_open = os.open

    def spy(file: object, flags: int, mode: int = 0o777, *args: object) -> int:
        if flags & os.O_CREAT:
            created.append(mode)
        return real_open(file, flags, mode, *args)

    monkeypatch.setattr(os, "open", spy)
    old_umask = os.umask(0o022)
    try:
        AccessRecord(host="h", port=1, token="alice:secret").save(path)
    finally:
        os.umask(old_umask)
    assert created == [0o600]
    assert mode(path) == 0o600


def test_results_with_nothing_left_for_ftp_round_trip() -> None:
    message = JobResults(download=None, jobs=[], specs={}, events={}, files={"1.0": {}})
    assert decode(body_of(message)) == message
    assert wire_dict(message)["download"] is None


def test_inline_bytes_round_trip_and_reject_bad_base64() -> None:
    from scheduler.protocol import pack_bytes, unpack_bytes

    data = bytes(range(256)) * 3
    assert unpack_bytes(pack_bytes(data)) == data
    for bad in ("not base64!", "aGk", "é"):
        with pytest.raises(ProtocolError, match="base64"):
            unpack_bytes(bad)


@pytest.mark.parametrize("fingerprint", [None, "ab" * 32])
def test_ftp_session_to_a_closed_port_raises_an_ftp_error(fingerprint: str | None) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the test connects
    grant = FtpGrant(host="127.0.0.1", port=port, user="u", password="p",
                     tls_fingerprint=fingerprint)  # fmt: skip
    with pytest.raises(FTP_ERRORS), ftp_session(grant, timeout=5):
        pass
