"""Running a job in a container: its image made ready, and the command that runs
its program in it with one of the worker's runtimes (see
:mod:`worker_node.container_runtimes`).

A job asks for a container with ``ContainerImage``/``SingularityImage`` (a registry
reference, an image file or directory staged into its sandbox, or a path on the
worker) or ``DockerImage`` (``universe = docker``); see
:mod:`control_node.submit_container`. The worker runs it with the first of its runtimes
(in the order of ``--container-runtimes``) that can run that kind of image:

- apptainer/singularity: ``.sif`` files, directories, registry references;
- podman (rootless: started as the job's account, whose uid is root inside the
  container and the owner's on the host): registry references and image tars
  (``podman save`` archives, or a root file system tar, imported once);
- docker (a reachable daemon; the job runs with ``--user`` of its account): the docker
  universe and registry references;
- bubblewrap: a root file system, as a directory or a tar unpacked once.

Inside, the job's sandbox is ``/srv`` (whatever the worker's work directory) and its
working directory; the program runs as given. The runtime is
started by the slot's launcher, as the job's account, so the job's limits, its
process cleanup and its results work as without a container.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import resource
import stat
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scheduler.matching.classad import ClassAdError, compile_expression
from scheduler.protocol import JobSpec
from worker_node.container_runtimes import KINDS, Runtime
from worker_node.identity import Account
from worker_node.image_cache import ImageCache
from worker_node.transfer import InputCache

log = logging.getLogger(__name__)

__all__ = ["INSIDE", "ContainerRequest", "Containers", "ImageProblem", "Prepared", "request_of"]

#: Where the sandbox is inside the container.
INSIDE = "/srv"
_REGISTRY = ("docker://", "oras://", "library://", "shub://", "oci://")
#: Seconds a pull or an import of an image may take.
PULL_TIMEOUT = 900.0


@dataclass(frozen=True)
class ContainerRequest:
    """The image a job asks for: ``image`` as the job names it; ``kind``: ``registry``,
    ``staged`` (a file or directory of its sandbox), ``path`` (on the worker) or
    ``docker`` (a docker universe image name)."""

    image: str
    kind: str


def _string(text: str) -> str | None:
    try:
        value = compile_expression(text).evaluate()
    except ClassAdError:
        return None
    return value if isinstance(value, str) and value else None


def request_of(spec: JobSpec) -> ContainerRequest | None:
    """The container a job's attributes ask for, None for none."""
    attrs = {k.lower(): v for k, v in spec.attributes.items()}
    if (docker := attrs.get("dockerimage")) and attrs.get("wantdocker", "").lower() == "true":
        image = _string(docker)
        return ContainerRequest(image, "docker") if image else None
    for name in ("containerimage", "singularityimage"):
        image = _string(attrs.get(name, ""))
        if image is None:
            continue
        if image.startswith(_REGISTRY):
            return ContainerRequest(image, "registry")
        staged = {item.name.split("/", 1)[0] for item in spec.inputs}
        return ContainerRequest(image, "staged" if image in staged else "path")
    return None


def _image_kind(path: Path) -> str:
    """What an image on disk is: ``sif``, ``directory``, ``archive`` (a saved image:
    ``manifest.json`` or ``oci-layout`` at its top) or ``rootfs-tar``."""
    if path.is_dir():
        return "directory"
    if path.suffix.lower() == ".sif":
        return "sif"
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                if member.name.lstrip("./") in ("manifest.json", "oci-layout"):
                    return "archive"
    except (OSError, tarfile.TarError):
        return "unknown"
    return "rootfs-tar"


@dataclass
class Prepared:
    """A job's image, ready to run: how to wrap its program, and what to clean."""

    runtime: Runtime
    #: What the runtime runs: a directory, a file, or an image reference.
    image: str
    #: Environment of the runtime's own process (podman's storage).
    runtime_env: dict[str, str] = field(default_factory=dict)
    #: podman/docker: the container's name, removed when the job ends.
    name: str | None = None
    #: podman: its storage options, before the command.
    global_args: list[str] = field(default_factory=list)
    #: Called once the job is done with the image (the cache may then evict it).
    release: Callable[[], None] | None = None
    #: docker: the uid and gid the job runs as inside (its account's).
    user: tuple[int, int] | None = None
    #: podman: where it writes the pid of the container's monitor (conmon).
    monitor_pidfile: Path | None = None

    def memory_roots(self) -> Callable[[], list[int]] | None:
        """Where the job's memory is not its process tree's: a function giving the
        roots of the processes that are the job's. podman's monitor (conmon) leaves
        the command's session, and the command itself (tens of MB) is the worker's
        tool, not the job: its container is what counts, as in HTCondor."""
        pidfile = self.monitor_pidfile
        if pidfile is None:
            return None

        def roots() -> list[int]:
            try:
                return [int(pidfile.read_text().split()[0])]
            except (OSError, ValueError, IndexError):
                return []  # not started yet

        return roots

    def command(
        self,
        argv: list[str],
        sandbox: Path,
        env: Mapping[str, str],
        cpus: int,
        memory_mb: int | None,
    ) -> tuple[list[str], dict[str, str]]:
        """The argv that runs ``argv`` (paths inside the container) in the image with
        ``sandbox`` at :data:`INSIDE`, and the environment to start it with."""
        r = self.runtime
        inner = {k: (INSIDE if v == str(sandbox) else v) for k, v in env.items()}
        if r.name == "bubblewrap":
            return self._bubblewrap(argv, sandbox), inner
        if r.name in ("apptainer", "singularity"):
            cmd = [r.program, "exec", "--containall", "--no-home", "--cleanenv",
                   "--bind", f"{sandbox}:{INSIDE}", "--pwd", INSIDE]  # fmt: skip
            # Passed by the runtime's environment, never on its command line.
            prefix = "APPTAINERENV_" if r.name == "apptainer" else "SINGULARITYENV_"
            outer = {**_base_env(), **self.runtime_env}
            outer.update({prefix + key: value for key, value in inner.items()})
            return [*cmd, self.image, *argv], outer
        cmd = [r.program, *self.global_args, "run", "--rm", "--init", "--network", "host",
               "--volume", f"{sandbox}:{INSIDE}", "--workdir", INSIDE]  # fmt: skip
        if self.name:
            cmd += ["--name", self.name]
        if self.monitor_pidfile is not None:
            cmd += ["--conmon-pidfile", str(self.monitor_pidfile)]
        if r.oci_runtime:
            cmd += ["--runtime", r.oci_runtime]
        if r.name == "docker":
            uid, gid = self.user or (os.geteuid(), os.getegid())
            cmd += ["--user", f"{uid}:{gid}"]
        if r.no_cgroups:
            cmd += _ulimits()
        else:
            cmd += ["--cpus", str(cpus)]
            if memory_mb:
                cmd += ["--memory", f"{memory_mb}m"]
        # A job's variables travel in the runtime's environment (``--env NAME`` copies
        # one), never on its command line; those the runtime needs itself are given.
        outer = {**_base_env(), **self.runtime_env}
        for key, value in inner.items():
            if key in outer:
                cmd += ["--env", f"{key}={value}"]
            else:
                cmd += ["--env", key]
                outer[key] = value
        cmd += ["--entrypoint", argv[0], self.image, *argv[1:]]
        return cmd, outer

    def _bubblewrap(self, argv: list[str], sandbox: Path) -> list[str]:
        root = Path(self.image)
        cmd = [self.runtime.program, "--unshare-all", "--share-net", "--die-with-parent"]
        for entry in sorted(root.iterdir()):
            if entry.name in ("proc", "dev", "tmp", INSIDE.strip("/")):
                continue
            if entry.is_symlink():
                cmd += ["--symlink", os.readlink(entry), f"/{entry.name}"]
            else:
                cmd += ["--ro-bind", str(entry), f"/{entry.name}"]
        cmd += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
                "--bind", str(sandbox), INSIDE, "--chdir", INSIDE, "--", *argv]  # fmt: skip
        return cmd

    def cleanup(self, account: Account | None) -> None:
        """Remove the job's container if the runtime left it (its program was killed),
        and let the cache evict the image."""
        if self.release is not None:
            self.release()
            self.release = None
        if self.monitor_pidfile is not None:
            self.monitor_pidfile.unlink(missing_ok=True)
        if self.name is None:
            return
        argv = [self.runtime.program, *self.global_args, "rm", "--force", self.name]
        if self.runtime.name == "podman":
            argv[-2:-1] = ["--force", "--time", "0"]
        _as(account, argv, {**_base_env(), **self.runtime_env}, 60.0)


def _base_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")}


def _ulimits() -> list[str]:
    """The worker's own limits, given to podman explicitly: without control groups it
    cannot raise its defaults above them."""
    out = []
    for name, which in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC)):
        soft, hard = resource.getrlimit(which)
        cap = 4096 if name == "nproc" else 1 << 20
        hard = cap if hard == resource.RLIM_INFINITY else min(hard, cap)
        soft = hard if soft == resource.RLIM_INFINITY else min(soft, hard)
        out += ["--ulimit", f"{name}={soft}:{hard}"]
    return out


def _as(
    account: Account | None,
    argv: list[str],
    env: dict[str, str],
    timeout: float,
    stdin: Path | None = None,
) -> tuple[bool, str]:
    """Run ``argv`` as ``account`` (None: this worker's own), reading ``stdin`` (opened
    by the worker): (succeeded, its stderr)."""
    user = group = None
    extra: list[int] | None = None
    if account is not None and account.uid != os.geteuid():
        user, group, extra = account.uid, account.gid, []
    try:
        with contextlib.ExitStack() as stack:
            source = stack.enter_context(stdin.open("rb")) if stdin else subprocess.DEVNULL
            done = subprocess.run(
                argv, env=env, capture_output=True, text=True, timeout=timeout, check=False,
                stdin=source, user=user, group=group, extra_groups=extra,
            )  # fmt: skip
    except subprocess.TimeoutExpired:
        return False, f"{argv[0]} {argv[1]} took more than {timeout:.0f} s"
    except OSError as exc:
        return False, str(exc)
    return done.returncode == 0, (done.stdout + done.stderr).strip()


def _last_words(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:500] if lines else "no message"


class ImageProblem(Exception):
    """A job's image cannot be run here: the hold reason."""


class Containers:
    """A worker's runtimes and image cache."""

    def __init__(self, runtimes: Sequence[Runtime], root: Path, limit: int):
        self.runtimes = list(runtimes)
        #: The image files jobs send, by content, shared by all owners: fetched once
        #: per worker, in a folder of the worker's alone; a job's sandbox gets a
        #: read-only link, and the image is made ready from this copy only. Each
        #: counts in the cache's size limit, and is evicted as the images are.
        self.files = InputCache(root / "files")
        self.cache = ImageCache(root / "images", limit, self._remove)
        #: Folders of rootless podman storage, one per uid.
        self.home = root / "storage"
        #: The kind of each image file seen, by content.
        self._kinds: dict[str, str] = {}
        #: The uids whose podman storage was cleared of containers this worker left
        #: when it was killed, and the lock that makes the first job wait for it.
        self._swept: set[int] = set()
        self._sweep_lock = threading.Lock()

    def prepare(
        self, request: ContainerRequest, sandbox: Path, sha256: str | None,
        account: Account | None, job: str, image_file: Path | None = None,
    ) -> Prepared:  # fmt: skip
        """Ready the image of ``request`` (``sha256``: a staged file's content hash;
        ``image_file``: the worker's own copy of it, which no job can write) for the
        job ``job``; raises :class:`ImageProblem` with the hold reason."""
        held = self._hold_file(image_file, sha256)
        try:
            prepared = self._prepare(request, sandbox, sha256, account, job, image_file)
        except BaseException:
            if held is not None:
                held()
            raise
        if held is not None:
            prepared.release = _both(prepared.release, held)
        return prepared

    def _hold_file(self, image_file: Path | None, sha256: str | None) -> Callable[[], None] | None:
        """Count the worker's copy of a sent image in the cache, in use by the job
        until it is done (a copy in the shared spool is the scheduler's: not counted)."""
        if image_file is None or sha256 is None or image_file.parent != self.files.root:
            return None
        key = f"file-{sha256}"
        with contextlib.suppress(FileNotFoundError):
            size = image_file.stat().st_size
            self.cache.registered(key, size, lambda: None, {"file": sha256}, image_file)
            return lambda: self.cache.release(key)
        return None

    def _remove(self, how: dict[str, Any]) -> None:
        """Remove what the cache evicts: a sent image's file, or an imported image."""
        if "file" in how:
            self.files.forget(str(how["file"]))
        else:
            _remove(how)

    def _prepare(
        self, request: ContainerRequest, sandbox: Path, sha256: str | None,
        account: Account | None, job: str, image_file: Path | None,
    ) -> Prepared:  # fmt: skip
        if not self.runtimes:
            raise ImageProblem("this worker has no container runtime")
        path: Path | None = None
        kind = request.kind
        if request.kind not in ("registry", "docker"):
            path = sandbox / request.image if request.kind == "staged" else Path(request.image)
            kind = self._kind_of(request.image, image_file or path, sha256)
        runtime = next((r for r in self.runtimes if kind in KINDS[r.name]), None)
        if runtime is None:
            have = ", ".join(r.name for r in self.runtimes)
            raise ImageProblem(
                f"no container runtime of this worker ({have}) runs a {kind} image"
                f" ({request.image})"
            )
        name = "dfarm-" + re.sub(r"[^A-Za-z0-9_.-]", "_", job)
        if runtime.name == "bubblewrap":
            if kind == "directory":
                assert path is not None
                return Prepared(runtime, str(path))
            assert path is not None
            key = sha256 or _file_key(path)
            root = self.cache.rootfs(key, image_file or path)
            return Prepared(runtime, str(root), release=lambda: self.cache.release(f"rootfs-{key}"))
        if runtime.name in ("apptainer", "singularity"):
            if path is not None:
                return Prepared(runtime, str(path))
            return self._pull_sif(runtime, request.image, account)
        if runtime.name == "docker":
            return self._docker(runtime, request, image_file or path, sha256, account, name)
        global_args, env = self._podman_storage(account)
        self._sweep(runtime, account, global_args, env)
        if path is None:
            image = request.image.removeprefix("docker://")
            ok, err = _as(account, [runtime.program, *global_args, "pull", "--quiet", image],
                          {**_base_env(), **env}, PULL_TIMEOUT)  # fmt: skip
            if not ok:
                raise ImageProblem(
                    f"container image {request.image}: podman cannot pull it: {_last_words(err)}"
                )
            release = None
        else:
            source = image_file or path
            image, release = self._load(runtime, global_args, env, source, sha256, account)
        pidfile = Path(env["TMPDIR"]) / f"{name}.conmon.pid"
        pidfile.unlink(missing_ok=True)
        return Prepared(runtime, image, env, name, global_args, release, monitor_pidfile=pidfile)

    def _kind_of(self, image: str, path: Path, sha256: str | None) -> str:
        """What the image file or folder is (a tar is read through once to tell:
        kept by content); raises :class:`ImageProblem` when it is none of them."""
        if not path.exists():
            raise ImageProblem(f"container image {image!r} is not on this worker")
        kind = self._kinds.get(sha256) if sha256 else None
        if kind is None:
            kind = _image_kind(path)
            if sha256:
                self._kinds[sha256] = kind
        if kind == "unknown":
            raise ImageProblem(
                f"container image {image!r} is neither a directory, a .sif file"
                " nor a tar of an image or a root file system"
            )
        return kind

    def _docker(
        self, runtime: Runtime, request: ContainerRequest, path: Path | None,
        sha256: str | None, account: Account | None, name: str,
    ) -> Prepared:  # fmt: skip
        """docker's image: pulled, or loaded once from the job's file."""
        image = request.image.removeprefix("docker://")
        prepared = Prepared(runtime, image, {}, name)
        if account is not None:
            prepared.user = (account.uid, account.gid)
        if path is None:
            ok, _ = _as(None, [runtime.program, "image", "inspect", image], _base_env(), 60.0)
            if not ok:  # not on the daemon yet
                ok, err = _as(None, [runtime.program, "pull", "--quiet", image], _base_env(),
                              PULL_TIMEOUT)  # fmt: skip
            if not ok:
                raise ImageProblem(
                    f"container image {request.image}: docker cannot pull it: {_last_words(err)}"
                )
        else:
            prepared.image, prepared.release = self._load(
                runtime, [], {}, path, sha256, account, docker=True
            )
        return prepared

    def _pull_sif(self, runtime: Runtime, ref: str, account: Account | None) -> Prepared:
        """A registry image pulled into a .sif file of the account's, once."""
        uid = os.geteuid() if account is None else account.uid
        gid = os.getegid() if account is None else account.gid
        folder = self.home / f"{runtime.name}-{uid}"
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(folder, uid, gid)
        key = hashlib.sha256(ref.encode()).hexdigest()
        sif = folder / f"{key[:32]}.sif"
        env = {"HOME": str(folder)}

        def pull() -> None:
            ok, err = _as(account, [runtime.program, "pull", "--force", str(sif), ref],
                          {**_base_env(), **env}, PULL_TIMEOUT)  # fmt: skip
            if not ok:
                raise ImageProblem(
                    f"container image {ref}: {runtime.name} cannot pull it: {_last_words(err)}"
                )

        who = {"uid": None, "gid": None} if account is None else {"uid": uid, "gid": gid}
        entry = f"{runtime.name}-{uid}-{key}"
        self.cache.registered(
            entry,
            lambda _folder: sif.stat().st_size,
            pull,
            {"argv": ["rm", "-f", str(sif)], "env": {}, **who},
            sif,
        )
        return Prepared(runtime, str(sif), env, release=lambda: self.cache.release(entry))

    def _sweep(
        self, runtime: Runtime, account: Account | None, global_args: list[str],
        env: dict[str, str],
    ) -> None:  # fmt: skip
        """Remove the containers a previous run of this worker left in the account's
        podman storage (it was killed while they ran, before it could remove them):
        once per account, before the first container this run makes there."""
        uid = os.geteuid() if account is None else account.uid
        with self._sweep_lock:
            if uid in self._swept:
                return
            full = {**_base_env(), **env}
            listing = [runtime.program, *global_args, "ps", "--all", "--format", "{{.Names}}"]
            ok, out = _as(account, listing, full, 60.0)
            stale = [name for name in out.split() if name.startswith("dfarm-")] if ok else []
            if stale:
                log.info("podman storage of uid %d: removing containers left by a previous"
                         " run of this worker: %s", uid, ", ".join(stale))  # fmt: skip
                remove = [runtime.program, *global_args, "rm", "--force", "--ignore", "--time", "0"]
                remove += stale
                # A container whose monitor was killed is still "running" to podman: its
                # first removal fails ("container state improper"), having found it
                # stopped; the next one removes it.
                for _ in range(3):
                    ok, err = _as(account, remove, full, 120.0)
                    if ok:
                        break
                else:
                    log.warning("podman storage of uid %d: %s", uid, _last_words(err))
            for pidfile in Path(env["TMPDIR"]).glob("dfarm-*.conmon.pid"):
                pidfile.unlink(missing_ok=True)
            self._swept.add(uid)

    def _podman_storage(self, account: Account | None) -> tuple[list[str], dict[str, str]]:
        """Rootless podman's storage for ``account``: a folder of its own in the work
        directory, and a short run folder in /tmp (podman takes 50 characters at most)."""
        uid = os.geteuid() if account is None else account.uid
        gid = os.getegid() if account is None else account.gid
        home = self.home / f"podman-{uid}"
        run = Path(tempfile.gettempdir()) / f"dfarm-podman-{uid}"
        for folder in (home, home / "storage", home / "tmp", run):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            if os.geteuid() == 0 and folder != home.parent:
                os.chown(folder, uid, gid)
            st = os.lstat(folder)
            if st.st_uid != uid or st.st_mode & 0o077 or not stat.S_ISDIR(st.st_mode):
                raise ImageProblem(f"{folder} is not a private folder of uid {uid}")
        env = {"HOME": str(home), "XDG_RUNTIME_DIR": str(run), "TMPDIR": str(home / "tmp")}
        return ["--root", str(home / "storage"), "--runroot", str(run)], env

    def _load(
        self, runtime: Runtime, global_args: list[str], env: dict[str, str], path: Path,
        sha256: str | None, account: Account | None, docker: bool = False,
    ) -> tuple[str, Callable[[], None]]:  # fmt: skip
        """Import an image tar once per account (the cache remembers it by content);
        the runtime reads it from its standard input, opened by the worker."""
        key = sha256 or _file_key(path)
        uid = os.geteuid() if account is None or docker else account.uid
        ref = f"localhost/dfarm-image:{key[:24]}"

        def load() -> None:
            archive = _image_kind(path) == "archive"
            verb = ["load"] if archive else ["import", "-", ref]
            ok, err = _as(account if not docker else None,
                          [runtime.program, *global_args, *verb], {**_base_env(), **env},
                          PULL_TIMEOUT, stdin=path)  # fmt: skip
            if not ok:
                raise ImageProblem(f"{runtime.name} cannot load the image: {_last_words(err)}")
            if archive:
                loaded = _loaded_name(err)
                if loaded is None:
                    raise ImageProblem(f"{runtime.name} loaded the image but named no image")
                ok, err = _as(account if not docker else None,
                              [runtime.program, *global_args, "tag", loaded, ref],
                              {**_base_env(), **env}, 60.0)  # fmt: skip
                if not ok:
                    raise ImageProblem(f"{runtime.name} cannot tag the image: {_last_words(err)}")

        who = account if not docker else None
        remove = {"argv": [runtime.program, *global_args, "rmi", "--force", ref], "env": env,
                  "uid": None if who is None else who.uid,
                  "gid": None if who is None else who.gid}  # fmt: skip
        entry = f"{runtime.name}-{uid}-{key}"
        self.cache.registered(entry, path.stat().st_size, load, remove)
        return ref, lambda: self.cache.release(entry)


def _both(first: Callable[[], None] | None, second: Callable[[], None]) -> Callable[[], None]:
    def both() -> None:
        if first is not None:
            first()
        second()

    return both


def _remove(how: dict[str, object]) -> None:
    """Remove an image the cache evicts, as the account that imported it."""
    argv, env, uid, gid = how["argv"], how["env"], how.get("uid"), how.get("gid")
    assert isinstance(argv, list) and isinstance(env, dict)
    account = None
    if isinstance(uid, int) and isinstance(gid, int):
        account = Account(name=str(uid), uid=uid, gid=gid, groups=())
    ok, err = _as(account, [str(a) for a in argv], {**_base_env(), **env}, 60.0)
    if not ok:
        log.warning("image cache: %s", _last_words(err))


def _loaded_name(output: str) -> str | None:
    m = re.search(r"Loaded image(?:\(s\))?:\s*(\S+)", output)
    return m[1].split(",")[0] if m else None


def _file_key(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
