"""Jobs in containers, end to end: a real scheduler, real workers, real runtimes
(bubblewrap, rootless podman) over an image built here from the machine's own
busybox (Debian's busybox-static, which ``make test`` installs)."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import TestCluster, wait_until, write
from test_checkpoint import NOBODY, kill_machine, python_for, start_worker_as

from control_node import Client
from worker_node import container_runtimes

MARK = "built-by-the-test"


def static_program(name: str) -> str | None:
    """The program ``name`` on the PATH if it needs no shared libraries (no ELF
    interpreter), as a program copied alone into an image must; else None."""
    path = shutil.which(name)
    if path is None:
        return None
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:5] != b"\x7fELF\x02":  # 64-bit ELF only
            return None
        (phoff,) = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    types = [struct.unpack_from("<I", table, i * phentsize)[0] for i in range(phnum)]
    return None if 3 in types else path  # PT_INTERP: linked dynamically


BUSYBOX = static_program("busybox")


@functools.cache
def _works(name: str) -> bool:
    return any(r.name == name for r in container_runtimes.detect([name]))


needs_busybox = pytest.mark.skipif(
    BUSYBOX is None,
    reason="no static busybox on the PATH (as root: apt-get install busybox-static)",
)


def make_rootfs(folder: Path) -> Path:
    """A root file system: busybox, its applets as links, a marker in /etc."""
    assert BUSYBOX is not None
    (folder / "bin").mkdir(parents=True)
    (folder / "etc").mkdir()
    shutil.copy(BUSYBOX, folder / "bin" / "busybox")
    applets = subprocess.run(
        [BUSYBOX, "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (folder / "bin" / applet).symlink_to("busybox")
    (folder / "etc" / "image-marker").write_text(MARK + "\n")
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o755)
    return folder


def make_tar(folder: Path, tar: Path) -> Path:
    with tarfile.open(tar, "w") as out:
        for entry in sorted(folder.iterdir()):
            out.add(entry, arcname=entry.name)
    return tar


JOB = """#!/bin/sh
cat /etc/image-marker
echo "dir=$(pwd) home=$HOME job=$DFARM_JOB_ID"
tr a-z A-Z < words.txt > shout.txt
exec sleep 2.71828
"""


def host_uids_of_the_job(seconds: str = "2.71828") -> set[int]:
    """The real uids, on the host, of the processes running the job's ``sleep``."""
    uids = set()
    wanted = b"sleep\0" + seconds.encode()
    for proc in Path("/proc").iterdir():
        try:
            if (proc / "cmdline").read_bytes().rstrip(b"\0") == wanted:
                status = (proc / "status").read_text()
                uids.add(int(status.split("Uid:")[1].split()[0]))
        except (OSError, ValueError, IndexError):
            continue
    return uids


def submit_and_wait(
    cluster: TestCluster, folder: Path, image_line: str, token: str | None = None
) -> dict[str, object]:
    """Submit the job in ``image_line``'s image (as the user of ``token``, default the
    cluster's), see whose its process is on the host while it runs, wait for it and
    fetch its results; returns its record and that uid."""
    token = token or cluster.token
    env = cluster.env(DFARM_TOKEN=token)
    if not (folder / "job.sh").exists():
        write(folder / "job.sh", JOB, executable=True)
    write(folder / "words.txt", "hello from the sandbox\n")
    write(
        folder / "job.sub",
        "executable = job.sh\ntransfer_input_files = words.txt\n"
        f"{image_line}\ntransfer_output_files = shout.txt\nqueue\n",
    )
    result = cluster.run("dsub", "--quiet", "job.sub", cwd=folder, env=env)
    assert result.returncode == 0, result.stderr + result.stdout
    job_id = f"{result.stdout.strip()}.0"
    with Client(scheduler=f"127.0.0.1:{cluster.access.port}", token=token) as client:
        uids = wait_until(
            lambda: (
                host_uids_of_the_job()
                or (client.jobs([job_id])[0].state not in ("idle", "running") and {-1})
            ),
            timeout=120,
            what="the job's process",
        )
        (job,) = client.wait([job_id], timeout=120)
    fetched = cluster.run("dfetch", job_id, cwd=folder, env=env)
    assert fetched.returncode == 0, fetched.stderr
    return {"id": job_id, "state": job.state, "hold_reason": job.hold_reason, "uids": uids}


def check_ran_in_the_image(folder: Path, job: dict[str, object]) -> None:
    """The job saw the image's files, its sandbox as its working directory, its
    staged input; its output came back; it never ran as root on the host."""
    job_id = str(job["id"])
    out = (folder / job_id / "stdout").read_text()
    assert out.splitlines() == [MARK, f"dir=/srv home=/srv job={job_id}"], out
    assert (folder / job_id / "shout.txt").read_text() == "HELLO FROM THE SANDBOX\n"
    uids = job["uids"]
    assert isinstance(uids, set) and uids and 0 not in uids and -1 not in uids, uids


@needs_busybox
@pytest.mark.skipif(not _works("bubblewrap"), reason="bubblewrap does not work here")
def test_a_job_runs_in_a_root_file_system_with_bubblewrap(
    make_cluster: Callable[..., TestCluster], tmp_path: Path
) -> None:
    cluster = make_cluster(workers=1, worker_args=("--container-runtimes", "bubblewrap"))
    folder = tmp_path / "tar"
    folder.mkdir()
    make_tar(make_rootfs(tmp_path / "rootfs"), folder / "image.tar")
    job = submit_and_wait(cluster, folder, "container_image = image.tar")
    assert job["state"] == "completed", job
    check_ran_in_the_image(folder, job)
    with Client(scheduler=f"127.0.0.1:{cluster.access.port}", token=cluster.token) as client:
        (worker,) = client.workers()
    attrs = worker.metrics.attributes
    assert attrs["ContainerRuntimes"] == "bubblewrap" and attrs["HasSandboxImage"] is True
    assert attrs["HasContainer"] is True and attrs["HasDockerURL"] is False
    # The same image again: unpacked once, by content.
    cache = [p.name for p in (cluster.workers_dir / "w1").rglob("rootfs-*") if p.is_dir()]
    assert len(cache) == 1, cache
    again = submit_and_wait(cluster, folder, "container_image = image.tar")
    assert again["state"] == "completed"
    assert len([p for p in (cluster.workers_dir / "w1").rglob("rootfs-*") if p.is_dir()]) == 1
    # An unpacked directory, named the OSG way.
    shutil.copytree(tmp_path / "rootfs", folder / "tree", symlinks=True)
    job = submit_and_wait(cluster, folder, '+SingularityImage = "tree"')
    assert job["state"] == "completed", job
    check_ran_in_the_image(folder, job)


@needs_busybox
@pytest.mark.skipif(not _works("bubblewrap"), reason="bubblewrap does not work here")
def test_an_image_two_users_send_is_fetched_once_per_worker_and_no_job_can_change_it(
    make_cluster: Callable[..., TestCluster], tmp_path: Path
) -> None:
    # Over FTP, as to a worker on another machine (a shared spool is linked, not fetched).
    runtimes = ("--container-runtimes", "bubblewrap", "--always-ftp")
    cluster = make_cluster(workers=1, worker_args=runtimes)
    out = cluster.run("dfarm", "user", "add", "bob", "--home", str(cluster.config.home))
    assert out.returncode == 0, out.stderr
    bob = out.stdout.strip().splitlines()[-1]
    image = make_tar(make_rootfs(tmp_path / "rootfs"), tmp_path / "image.tar")
    sha = hashlib.sha256(image.read_bytes()).hexdigest()
    for user, token in (("alice", None), ("bob", bob)):
        folder = tmp_path / user
        folder.mkdir()
        shutil.copy(image, folder / "image.tar")
        # The job tries to change the image it was sent, through its sandbox's link.
        write(folder / "job.sh", "#!/bin/sh\n(echo evil >> image.tar) 2>/dev/null"
              " && echo CHANGED >&2\n" + JOB.split("\n", 1)[1], executable=True)  # fmt: skip
        job = submit_and_wait(cluster, folder, "container_image = image.tar", token)
        assert job["state"] == "completed", job
        check_ran_in_the_image(folder, job)
        assert "CHANGED" not in (folder / str(job["id"]) / "stderr").read_text()
    work = cluster.workers_dir / "w1"
    # Kept once, by content, in a folder of the worker's alone; in no owner's cache.
    (stored,) = (work / "containers" / "files").glob(f"{sha}*")
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == sha
    st = stored.stat()
    assert st.st_uid == os.geteuid() and not st.st_mode & 0o222, oct(st.st_mode)
    assert stored.parent.stat().st_mode & 0o777 == 0o700
    assert not list((work / "cache").rglob(f"{sha}*"))
    assert len([p for p in work.rglob("rootfs-*") if p.is_dir()]) == 1


@needs_busybox
@pytest.mark.skipif(not _works("podman"), reason="podman does not work here")
def test_a_job_runs_in_an_imported_image_with_rootless_podman(
    make_cluster: Callable[..., TestCluster], tmp_path: Path
) -> None:
    cluster = make_cluster(workers=1, worker_args=("--container-runtimes", "podman"))
    make_tar(make_rootfs(tmp_path / "rootfs"), tmp_path / "image.tar")
    # podman's own command (two processes of about 35 MB) is not the job's memory; its
    # container is (conmon, runc while it starts, the job: about 25 MB at most).
    image = "universe = container\ncontainer_image = image.tar\nrequest_memory = 48"
    job = submit_and_wait(cluster, tmp_path, image)
    assert job["state"] == "completed", job
    check_ran_in_the_image(tmp_path, job)


def podman_containers(work: Path) -> list[str]:
    """The names of the containers in the podman storage of every account of the
    worker whose work directory is ``work``, asked as each account."""
    names = []
    for home in (work / "containers" / "storage").glob("podman-*"):
        uid, gid = home.stat().st_uid, home.stat().st_gid
        run = Path(tempfile.gettempdir()) / f"dfarm-podman-{uid}"
        env = {"PATH": os.environ["PATH"], "HOME": str(home), "XDG_RUNTIME_DIR": str(run),
               "TMPDIR": str(home / "tmp")}  # fmt: skip
        listing = subprocess.run(
            ["podman", "--root", str(home / "storage"), "--runroot", str(run), "ps", "--all",
             "--format", "{{.Names}}"],
            user=uid, group=gid, extra_groups=[], env=env, capture_output=True, text=True,
            check=True, timeout=120,
        )  # fmt: skip
        names += listing.stdout.split()
    return names


@needs_busybox
@pytest.mark.skipif(not _works("podman"), reason="podman does not work here")
def test_a_container_left_by_a_killed_worker_is_removed_when_it_runs_again(
    make_cluster: Callable[..., TestCluster], tmp_path: Path
) -> None:
    args = ("--container-runtimes", "podman")
    cluster = make_cluster(workers=1, worker_args=args, scheduler_args=("--worker-timeout", "1"))
    make_tar(make_rootfs(tmp_path / "rootfs"), tmp_path / "image.tar")
    write(tmp_path / "job.sh", "#!/bin/sh\nexec sleep 271.828\n", executable=True)
    write(tmp_path / "job.sub", "executable = job.sh\ncontainer_image = image.tar\nqueue\n")
    assert cluster.run("dsub", "--quiet", "job.sub", cwd=tmp_path).returncode == 0
    work = cluster.workers_dir / "w1"
    wait_until(lambda: "dfarm-1.0-1" in podman_containers(work), timeout=60, what="the container")
    kill_machine(cluster, "w1")
    assert "dfarm-1.0-1" in podman_containers(work)  # podman run --rm died before it could
    cluster.add_worker("w1", *args)
    # The job runs again on the worker, which first clears what its last run left.
    wait_until(
        lambda: podman_containers(work) == ["dfarm-1.0-2"],
        timeout=60,
        what="the stale container removed and the new one running",
    )
    assert "removing containers left by a previous run" in cluster.log("w1")
    assert "WARNING worker_node.containers" not in cluster.log("w1")
    assert cluster.run("drm", "1.0").returncode == 0
    wait_until(lambda: not podman_containers(work), timeout=60, what="no container left")


@pytest.mark.skipif(not _works("podman"), reason="podman does not work here")
def test_an_image_the_worker_cannot_pull_holds_the_job_with_the_runtime_error(
    make_cluster: Callable[..., TestCluster], tmp_path: Path
) -> None:
    cluster = make_cluster(workers=1, worker_args=("--container-runtimes", "podman"))
    write(tmp_path / "job.sh", "#!/bin/sh\necho never\n", executable=True)
    write(
        tmp_path / "job.sub",
        "executable = job.sh\ncontainer_image = docker://registry.invalid/none/such:1\nqueue\n",
    )
    result = cluster.run("dsub", "--quiet", "job.sub", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with Client(scheduler=f"127.0.0.1:{cluster.access.port}", token=cluster.token) as client:
        wait_until(lambda: client.jobs(["1.0"])[0].state == "held", what="the job held")
        (job,) = client.jobs(["1.0"])
    assert "podman cannot pull it" in (job.hold_reason or ""), job.hold_reason
    assert "registry.invalid" in (job.hold_reason or "")


def test_a_container_job_on_workers_without_a_runtime_is_explained(
    make_cluster: Callable[..., TestCluster], tmp_path: Path
) -> None:
    cluster = make_cluster(workers=1, worker_args=("--container-runtimes", "none"))
    write(tmp_path / "job.sh", "#!/bin/sh\necho hi\n", executable=True)
    write(tmp_path / "job.sub", "executable = job.sh\ncontainer_image = docker://busybox\nqueue\n")
    result = cluster.run("dsub", "job.sub", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "will stay idle until such a worker connects: no worker has a container runtime" in (
        result.stderr
    )
    analysis = cluster.run("dq", "-analyze", "1.0")
    assert "no worker has a container runtime" in analysis.stdout, analysis.stdout
    assert json.loads(cluster.run("dq", "--json").stdout)[0]["state"] == "idle"


@needs_busybox
@pytest.mark.parametrize("runtime", ["bubblewrap", "podman"])
def test_a_removed_container_job_leaves_no_process(
    make_cluster: Callable[..., TestCluster], tmp_path: Path, runtime: str
) -> None:
    if not _works(runtime):
        pytest.skip(f"{runtime} does not work here")
    cluster = make_cluster(workers=1, worker_args=("--container-runtimes", runtime))
    make_tar(make_rootfs(tmp_path / "rootfs"), tmp_path / "image.tar")
    write(tmp_path / "job.sh", "#!/bin/sh\nsleep 314.159 &\nexec sleep 314.159\n", True)
    write(tmp_path / "job.sub", "executable = job.sh\ncontainer_image = image.tar\nqueue\n")
    assert cluster.run("dsub", "--quiet", "job.sub", cwd=tmp_path).returncode == 0
    wait_until(lambda: len(host_uids_of_the_job("314.159")) > 0, what="the job's processes")
    removed = cluster.run("drm", "1.0")
    assert removed.returncode == 0, removed.stderr
    wait_until(lambda: not host_uids_of_the_job("314.159"), what="the job's processes ended")


@needs_busybox
@pytest.mark.parametrize("runtime", ["bubblewrap", "podman"])
def test_a_container_job_over_its_memory_is_held(
    make_cluster: Callable[..., TestCluster], tmp_path: Path, runtime: str
) -> None:
    if not _works(runtime):
        pytest.skip(f"{runtime} does not work here")
    cluster = make_cluster(workers=1, worker_args=("--container-runtimes", runtime))
    make_tar(make_rootfs(tmp_path / "rootfs"), tmp_path / "image.tar")
    # dd holds a 64 MiB buffer for as long as it copies, which is until it is killed.
    write(tmp_path / "job.sh", "#!/bin/sh\nexec dd if=/dev/zero of=/dev/null bs=64M\n", True)
    write(
        tmp_path / "job.sub",
        "executable = job.sh\ncontainer_image = image.tar\nrequest_memory = 32\nqueue\n",
    )
    assert cluster.run("dsub", "--quiet", "job.sub", cwd=tmp_path).returncode == 0
    with Client(scheduler=f"127.0.0.1:{cluster.access.port}", token=cluster.token) as client:
        wait_until(lambda: client.jobs(["1.0"])[0].state == "held", what="the job held")
        (job,) = client.jobs(["1.0"])
    assert "memory limit exceeded" in (job.hold_reason or ""), job.hold_reason


@pytest.mark.skipif(not _works("bubblewrap"), reason="bubblewrap does not work here")
def test_doctor_lists_the_runtimes_a_worker_would_use(
    make_cluster: Callable[..., TestCluster], tmp_path: Path
) -> None:
    cluster = make_cluster(workers=0)

    def doctor(runtimes: str) -> str:
        toml = write(tmp_path / "worker.toml", f'container_runtimes = "{runtimes}"\n')
        done = subprocess.run(
            [sys.executable, "-m", "control_node.cli.dfarm", "doctor", "--worker", "--config",
             str(toml), "--scheduler", f"127.0.0.1:{cluster.access.port}", "--secret-file",
             str(cluster.config.secret_path)],
            capture_output=True, text=True, timeout=60, env=cluster.env(),
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    out = doctor("bubblewrap")
    assert "[INFO] containers: bubblewrap " in out and "runs directory, rootfs-tar images" in out
    # The runtimes that cannot run here say why (this machine: docker's client without
    # its daemon; no apptainer, which Debian 12 does not package).
    out = doctor("apptainer,docker,bubblewrap")
    if shutil.which("apptainer") is None:
        assert "[INFO] containers: apptainer: not used: not installed" in out, out
    docker = shutil.which("docker")
    if docker is not None and not _works("docker"):
        assert (
            f"[INFO] containers: docker: not used: {docker} is installed but no docker daemon"
            " answers it" in out
        ), out
    assert "podman" not in out
    assert "[INFO] containers: no container runtime works here" in doctor("none")


@needs_busybox
@pytest.mark.skipif(os.geteuid() != 0, reason="starts a worker as nobody: needs root")
@pytest.mark.parametrize("runtime", ["bubblewrap", "podman"])
def test_a_worker_that_is_not_root_runs_container_jobs_as_itself(
    make_cluster: Callable[..., TestCluster], tmp_path: Path, runtime: str
) -> None:
    if not _works(runtime):
        pytest.skip(f"{runtime} does not work here")
    python = python_for(NOBODY)
    if python is None:
        pytest.skip("no Python of this version that nobody can run")
    cluster = make_cluster(workers=0)
    args = ("--container-runtimes", runtime)
    worker = start_worker_as(cluster, tmp_path / "w9", "w9", NOBODY, python, *args)
    work = tmp_path / "w9"
    try:
        folder = tmp_path / "jobs"
        folder.mkdir()
        make_tar(make_rootfs(tmp_path / "rootfs"), folder / "image.tar")
        job = submit_and_wait(cluster, folder, "container_image = image.tar")
        assert job["state"] == "completed", (job, (work / "worker.log").read_text()[-3000:])
        check_ran_in_the_image(folder, job)
        assert job["uids"] == {NOBODY}  # the worker's own account, as without a container
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    assert "Traceback" not in (work / "worker.log").read_text()
