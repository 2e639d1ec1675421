"""The container a job asks for, read as condor_submit 24 reads it.

``container_image`` (any universe, or ``universe = container``), ``docker_image``
(``universe = docker``, or ``universe = container`` without a ``container_image``) and
the OSG convention ``+SingularityImage`` select an image. As condor_submit does, an
image that is a file or directory on the submit machine travels with the job's inputs
(unless ``transfer_container = false``), its sandbox name becomes ``ContainerImage``,
and the requirements gain the clause that picks workers able to run it:
``TARGET.HasDocker`` (docker universe), ``TARGET.HasContainer`` and
``TARGET.HasDockerURL`` (a registry reference), ``TARGET.HasSIF`` (a ``.sif`` file) or
``TARGET.HasSandboxImage`` (an unpacked directory or a root file system tar).
``+SingularityImage``, which HTCondor leaves to the pool's own policy, gets the same
clauses here, so that such a job only matches a worker that can run it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

__all__ = ["REGISTRY_SCHEMES", "ContainerChoice", "ContainerImageError", "choose", "image_kind"]

#: Prefixes of an image in a registry, pulled by the worker's runtime.
REGISTRY_SCHEMES = ("docker://", "oras://", "library://", "shub://", "oci://")


class ContainerImageError(Exception):
    """An image setting dsub refuses: the key and the message."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(key, message)
        self.key, self.message = key, message


@dataclass
class ContainerChoice:
    """What a job's image adds: a local image to stage, a requirements clause, attributes."""

    stage: str | None = None
    clause: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)


def image_kind(image: str) -> str:
    """``registry``, ``sif`` or ``sandbox`` (a directory or a root file system tar)."""
    if image.startswith(REGISTRY_SCHEMES):
        return "registry"
    return "sif" if image.lower().endswith(".sif") else "sandbox"


_CLAUSES = {
    "registry": "TARGET.HasContainer && TARGET.HasDockerURL",
    "sif": "TARGET.HasContainer && TARGET.HasSIF",
    "sandbox": "TARGET.HasContainer && TARGET.HasSandboxImage",
}


def _string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def choose(
    universe: str | None,
    container_image: str | None,
    docker_image: str | None,
    singularity_image: str | None,
    transfer_container: bool,
    base: str,
) -> ContainerChoice:
    """The container of one proc (the keys' expanded values; ``base``: its initialdir).
    Raises :class:`ContainerImageError` for an image that cannot be found."""
    low = (universe or "vanilla").lower()
    if low == "docker":
        if not docker_image:
            return ContainerChoice()
        return ContainerChoice(
            clause="TARGET.HasDocker",
            attributes={"WantDocker": "true", "DockerImage": _string(docker_image)},
        )
    key, image = "container_image", container_image
    if not image and low == "container" and docker_image:
        key, image = "docker_image", "docker://" + docker_image.removeprefix("docker://")
    if not image and singularity_image:
        key, image = "my.singularityimage", singularity_image
    if not image:
        return ContainerChoice()
    kind = image_kind(image)
    out = ContainerChoice(clause=_CLAUSES[kind])
    attr = "SingularityImage" if key == "my.singularityimage" else "ContainerImage"
    if attr == "ContainerImage":  # as condor_submit; +SingularityImage stays as written
        out.attributes["WantContainer"] = "true"
    if kind == "registry":
        out.attributes[attr] = _string(image)
        return out
    path = os.path.normpath(os.path.join(base, image))
    if transfer_container and os.path.exists(path):
        out.stage = path
        out.attributes[attr] = _string(os.path.basename(path))
        out.attributes["ContainerImageFullPath"] = _string(path)
        return out
    if not os.path.isabs(image):
        raise ContainerImageError(
            key,
            f"container image '{image}' does not exist (looked for {path}); name a file or"
            " directory here, an absolute path on the workers, or a registry reference"
            " such as docker://busybox",
        )
    out.attributes[attr] = _string(image)  # a path on the workers (/cvmfs/...)
    return out
