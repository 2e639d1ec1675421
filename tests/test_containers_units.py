"""The parts of container jobs one at a time: the submit keys (beside condor_submit's
own reading), the runtimes a worker finds and advertises, the command that runs a
job in its image, the image cache's limit, and what ``dq -analyze`` says."""

from __future__ import annotations

import hashlib
import io
import json
import stat
import tarfile
from pathlib import Path

import pytest
from conftest import write
from htcondor_oracle import HTCONDOR, condor_jobs

from control_node.submit_file import parse_submit_text
from scheduler.matching.capacity import Capacity, never_reasons
from scheduler.matching.requirements import worker_ad
from scheduler.protocol import InputFile, JobSpec, pack_bytes
from worker_node import container_runtimes, image_cache
from worker_node.container_runtimes import Runtime
from worker_node.containers import INSIDE, ContainerRequest, Containers, Prepared, request_of
from worker_node.image_cache import ImageCache, unpack_tar


def parse(folder: Path, text: str) -> tuple[str | None, dict[str, str], list[str]]:
    desc = parse_submit_text(
        "executable = job.sh\n" + text + "\nqueue\n",
        filename="job.sub", cluster=1, cwd=str(folder), environ={},
    )  # fmt: skip
    proc = desc.procs[0]
    return proc.requirements, proc.attributes, proc.transfer_input_files


#: Submit text -> the clause condor_submit 24 adds for it, and whether the image travels.
CASES = [
    ("container_image = image.tar", "TARGET.HasContainer && TARGET.HasSandboxImage", True),
    ("universe = container\ncontainer_image = image.sif", "TARGET.HasContainer && TARGET.HasSIF",
     True),
    ("universe = container\ncontainer_image = docker://busybox:1",
     "TARGET.HasContainer && TARGET.HasDockerURL", False),
    ("universe = docker\ndocker_image = busybox", "TARGET.HasDocker", False),
    ("container_image = tree", "TARGET.HasContainer && TARGET.HasSandboxImage", True),
]  # fmt: skip


@pytest.mark.parametrize(("text", "clause", "staged"), CASES)
def test_an_image_selects_a_container_as_condor_submit_reads_it(
    tmp_path: Path, text: str, clause: str, staged: bool
) -> None:
    write(tmp_path / "job.sh", "#!/bin/sh\n", executable=True)
    write(tmp_path / "image.tar", "x")
    write(tmp_path / "image.sif", "x")
    write(tmp_path / "tree" / "bin" / "sh", "x")
    requirements, attributes, inputs = parse(tmp_path, text)
    assert requirements == clause
    desc = parse_submit_text("executable = job.sh\n" + text + "\nqueue\n", filename="job.sub",
                             cluster=1, cwd=str(tmp_path), environ={})  # fmt: skip
    assert not [w for w in desc.warnings if "vanilla" in w or "container" in w], desc.warnings
    assert any(name.endswith(("image.tar", "image.sif", "tree")) for name in inputs) == staged
    if not HTCONDOR:
        return
    (ad,) = condor_jobs("executable = job.sh\n" + text + "\nqueue\n", str(tmp_path))["jobs"]
    assert clause in ad["Requirements"]
    for name in ("ContainerImage", "DockerImage", "WantContainer", "WantDocker"):
        if name in ad:
            assert attributes[name].strip('"').lower() == ad[name].lower(), name
    assert ("TransferInput" in ad) == staged


def test_a_missing_image_is_refused_on_its_line(tmp_path: Path) -> None:
    write(tmp_path / "job.sh", "#!/bin/sh\n", executable=True)
    with pytest.raises(Exception, match=r"job.sub:2: container image 'nope.tar' does not exist"):
        parse(tmp_path, "container_image = nope.tar")
    # A path on the workers (/cvmfs/...) is theirs to have: not staged.
    requirements, attributes, inputs = parse(tmp_path, '+SingularityImage = "/cvmfs/img/x:1"')
    assert requirements == "TARGET.HasContainer && TARGET.HasSandboxImage"
    assert attributes["SingularityImage"] == '"/cvmfs/img/x:1"' and inputs == []
    requirements, _, _ = parse(tmp_path, "requirements = Memory > 1 || Cpus > 2\n"
                                         "container_image = docker://busybox")  # fmt: skip
    assert requirements == (
        "(Memory > 1 || Cpus > 2) && TARGET.HasContainer && TARGET.HasDockerURL"
    )


def test_the_runtimes_found_are_those_that_work() -> None:
    programs = {name: f"/usr/bin/{name}" for name in ("docker", "podman", "bwrap", "apptainer")}
    info = {"host": {"cgroupVersion": "v1", "ociRuntime": {"name": "runc"}}}
    answers = {
        "docker": None,  # a client without its daemon
        "podman": "podman version 4.3.1\n",
        "bwrap": "bubblewrap 0.8.0\n",
        "apptainer": "apptainer version 1.3.4\n",
    }

    def run(argv: list[str]) -> str | None:
        name = Path(argv[0]).name
        if argv[1:] == ["info", "--format", "json"]:
            return json.dumps(info)
        if name == "bwrap" and "--unshare-user" in argv:
            return None  # no user namespaces
        return answers[name]

    unused: list[str] = []
    found = container_runtimes.detect(None, programs.get, run, unused)
    assert [r.name for r in found] == ["apptainer", "podman"]
    # Why each other one is not used, as ``dfarm doctor --worker`` says it.
    assert unused == [
        "singularity: not used: not installed (no singularity on the PATH)",
        "docker: not used: /usr/bin/docker is installed but no docker daemon answers it"
        " (universe = docker jobs never match this worker)",
        "bubblewrap: not used: /usr/bin/bwrap cannot make a user namespace"
        " (unprivileged user namespaces are off)",
    ]
    podman = found[1]
    assert podman.no_cgroups and podman.oci_runtime == "runc" and podman.version == "4.3.1"
    attrs = container_runtimes.runtime_attributes(found)
    assert attrs == {
        "HasContainer": True, "HasDocker": False, "HasSingularity": True, "HasApptainer": True,
        "HasPodman": True, "HasBubblewrap": False, "HasDockerURL": True, "HasSIF": True,
        "HasSandboxImage": True, "ContainerRuntimes": "apptainer,podman",
        "SingularityVersion": "1.3.4", "PodmanVersion": "4.3.1",
    }  # fmt: skip
    assert container_runtimes.runtime_attributes([])["HasContainer"] is False
    assert [r.name for r in container_runtimes.detect(["podman"], programs.get, run)] == ["podman"]
    assert "explicit --ulimit values and --runtime runc" in container_runtimes.describe(found)[1]


def test_the_job_asks_by_its_attributes() -> None:
    def spec(attrs: dict[str, str], inputs: tuple[str, ...] = ()) -> JobSpec:
        files = [InputFile(name=n, sha256="0" * 64, size=1) for n in inputs]
        return JobSpec(executable="job.sh", attributes=attrs, inputs=files)

    assert request_of(spec({})) is None
    assert request_of(spec({"ContainerImage": '"docker://busybox"'})) == ContainerRequest(
        "docker://busybox", "registry"
    )
    assert request_of(spec({"ContainerImage": '"img.tar"'}, ("img.tar",))) == ContainerRequest(
        "img.tar", "staged"
    )
    assert request_of(spec({"SingularityImage": '"tree"'}, ("tree/bin/sh",))) == (
        ContainerRequest("tree", "staged")
    )
    assert request_of(spec({"SingularityImage": '"/cvmfs/x"'})) == ContainerRequest(
        "/cvmfs/x", "path"
    )
    docker = {"WantDocker": "true", "DockerImage": '"busybox"'}
    assert request_of(spec(docker)) == ContainerRequest("busybox", "docker")


def test_the_command_puts_the_sandbox_at_srv(tmp_path: Path) -> None:
    sandbox = tmp_path / "jobs" / "1.0-1"
    env = {"HOME": str(sandbox), "TMPDIR": str(sandbox), "X": "1"}
    apptainer = Prepared(Runtime("apptainer", "/usr/bin/apptainer", "1.3"), "/img.sif")
    argv, outer = apptainer.command([f"{INSIDE}/job.sh", "a"], sandbox, env, 2, 100)
    assert argv[:2] == ["/usr/bin/apptainer", "exec"]
    assert f"{sandbox}:{INSIDE}" in argv
    assert argv[-3:] == ["/img.sif", "/srv/job.sh", "a"]
    assert outer["APPTAINERENV_HOME"] == "/srv" and outer["APPTAINERENV_X"] == "1"
    podman = Prepared(Runtime("podman", "/usr/bin/podman", "5", no_cgroups=False), "img", {},
                      "dfarm-1.0-1")  # fmt: skip
    argv, outer = podman.command([f"{INSIDE}/job.sh"], sandbox, env, 2, 100)
    assert argv[argv.index("--cpus") : argv.index("--cpus") + 2] == ["--cpus", "2"]
    assert "--memory" in argv and "100m" in argv and "--ulimit" not in argv
    assert argv[-3:] == ["--entrypoint", "/srv/job.sh", "img"]
    # The job's variables are not on the command line (ps shows it to everyone).
    assert "X" in argv and not [a for a in argv if "=1" in a] and outer["X"] == "1"
    assert outer["HOME"] == "/srv" and "HOME" in argv
    old = Prepared(Runtime("podman", "/usr/bin/podman", "4", True, "runc"), "img")
    argv, _ = old.command([f"{INSIDE}/job.sh"], sandbox, env, 2, 100)
    assert "--memory" not in argv and "--ulimit" in argv and "runc" in argv
    docker = Prepared(Runtime("docker", "/usr/bin/docker", "24"), "img", {}, "dfarm-1.0-1",
                      user=(1234, 1235))  # fmt: skip
    argv, _ = docker.command([f"{INSIDE}/job.sh"], sandbox, env, 2, 100)
    assert argv[:3] == ["/usr/bin/docker", "run", "--rm"]
    assert argv[argv.index("--user") + 1] == "1234:1235" and "dfarm-1.0-1" in argv
    assert f"{sandbox}:{INSIDE}" in argv and argv[-3:] == ["--entrypoint", "/srv/job.sh", "img"]


def _tar(entries: dict[str, bytes], mode: int = 0o755) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_the_image_cache_unpacks_once_and_evicts_the_least_recently_used(tmp_path: Path) -> None:
    images = {}
    for name in ("a", "b", "c"):
        images[name] = tmp_path / f"{name}.tar"
        images[name].write_bytes(_tar({"bin/tool": name.encode() * 1000}, mode=0o4755))
    cache = ImageCache(tmp_path / "cache", limit=2500)
    a = cache.rootfs("a", images["a"])
    assert (a / "bin" / "tool").read_bytes() == b"a" * 1000
    assert not (a / "bin" / "tool").stat().st_mode & stat.S_ISUID  # no setuid from an image
    cache.release("rootfs-a")
    again = cache.rootfs("a", images["a"])
    assert again == a and len(list((tmp_path / "cache").glob("rootfs-*"))) == 1
    cache.release("rootfs-a")
    cache.rootfs("b", images["b"])  # in use until released
    cache.rootfs("c", images["c"])  # 3000 bytes > 2500: the least recently used goes
    assert sorted(cache.entries()) == ["rootfs-b", "rootfs-c"]
    assert not a.exists()
    # Kept across a restart of the worker: the index is on disk.
    reopened = ImageCache(tmp_path / "cache", limit=2500)
    assert sorted(reopened.entries()) == ["rootfs-b", "rootfs-c"]
    removed: list[dict[str, object]] = []
    cache2 = ImageCache(tmp_path / "other", limit=10, remover=removed.append)
    cache2.registered("podman-0-x", 100, lambda: None, {"argv": ["podman", "rmi", "x"]})
    assert removed == []  # in use
    cache2.release("podman-0-x")
    assert removed == [{"argv": ["podman", "rmi", "x"]}]


def test_a_sent_image_counts_in_the_cache_and_goes_with_its_image_when_unused(
    tmp_path: Path,
) -> None:
    bwrap = Runtime("bubblewrap", "/usr/bin/bwrap", "0.8.0")
    containers = Containers([bwrap], tmp_path / "containers", limit=15000)
    request = ContainerRequest("image.tar", "staged")

    def sent(letter: str) -> tuple[str, Path]:
        data = _tar({"bin/tool": letter.encode() * 1000})
        sha = hashlib.sha256(data).hexdigest()
        containers.files.add_inline({sha: pack_bytes(data)})
        return sha, containers.files.path(sha)

    sha_a, file_a = sent("a")
    ready = containers.prepare(request, tmp_path / "sandbox", sha_a, None, "1.0-1", file_a)
    assert (Path(ready.image) / "bin" / "tool").read_bytes() == b"a" * 1000
    entries = containers.cache.entries()
    assert entries[f"file-{sha_a}"]["size"] == file_a.stat().st_size
    assert sorted(entries) == [f"file-{sha_a}", f"rootfs-{sha_a}"]
    sha_b, file_b = sent("b")
    containers.prepare(request, tmp_path / "sandbox", sha_b, None, "2.0-1", file_b)
    assert file_a.exists()  # past the limit, but still in use by job 1.0
    ready.cleanup(None)
    # Job 1.0 is done: its image and the file it came from go; the next job that
    # sends it fetches it again.
    assert sorted(containers.cache.entries()) == [f"file-{sha_b}", f"rootfs-{sha_b}"]
    assert not file_a.exists() and containers.files.missing(
        [InputFile(name="i", sha256=sha_a, size=1)]
    )
    assert file_b.exists()


def _worker(name: str, **attrs: object) -> Capacity:
    ad = worker_ad(name=name, worker_id=1, cpus=4, memory_mb=4096, gpus=0, disk_kb=10**7,
                   extra=attrs)  # fmt: skip
    return Capacity(worker_id=1, name=name, cpus=4, memory_mb=4096, gpus=0, disk_kb=10**7, ad=ad)


def test_dq_analyze_says_which_runtime_is_missing() -> None:
    def why(requirements: str, *workers: Capacity) -> list[str]:
        job = JobSpec(executable="job.sh", requirements=requirements)
        return never_reasons(job, list(workers))[1]

    registry = "TARGET.HasContainer && TARGET.HasDockerURL"
    assert "no worker has a container runtime" in why(registry, _worker("w1"))
    bwrap = _worker("w2", HasContainer=True, HasSandboxImage=True, HasDockerURL=False)
    assert "no worker can pull a registry image (podman, docker or apptainer)" in why(
        registry, bwrap
    )
    assert never_reasons(
        JobSpec(executable="job.sh", requirements="TARGET.HasContainer && TARGET.HasSandboxImage"),
        [bwrap],
    ) == (["w2"], [])
    assert any("universe = docker" in r for r in why("TARGET.HasDocker", bwrap))


@pytest.mark.parametrize("with_filter", [True, False])
def test_an_image_tar_cannot_reach_outside_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_filter: bool
) -> None:
    """Unpacked by the worker (as root): Python's "tar" filter where it has one (3.11.4
    and later), else the same checks of its own."""
    if not with_filter:
        monkeypatch.delattr(image_cache.tarfile, "tar_filter", raising=False)
    good = tmp_path / "good.tar"
    good.write_bytes(_tar({"bin/tool": b"x"}, mode=0o6777))
    unpack_tar(good, tmp_path / "a")
    mode = (tmp_path / "a" / "bin" / "tool").stat().st_mode
    assert not mode & 0o7022 and mode & 0o700 == 0o700
    outside = tmp_path / "outside"
    outside.mkdir()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        link = tarfile.TarInfo("escape")
        link.type, link.linkname = tarfile.SYMTYPE, str(outside)
        tar.addfile(link)
        through = tarfile.TarInfo("escape/planted")
        through.size = 1
        tar.addfile(through, io.BytesIO(b"x"))
    bad = tmp_path / "bad.tar"
    bad.write_bytes(buf.getvalue())
    with pytest.raises(tarfile.TarError):
        unpack_tar(bad, tmp_path / "b")
    assert not (outside / "planted").exists()
