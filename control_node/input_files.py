"""``transfer_input_files`` as condor_submit reads it: names, directories and URLs.

HTCondor splits the list at commas only: ``a.txt b.txt`` is one name with a space
in it. A directory named with a trailing slash (``dir_a/``) sends its contents into
the job's sandbox; named without one (``dir_a``), it sends the directory itself. A
URL (``https://host/path/data.tar.gz``) is not read at submit: the worker fetches it
into the sandbox as the last part of its path, if it can fetch that scheme, and
condor_submit's requirement clause keeps the job off workers that cannot.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

#: ``scheme://``: an input HTCondor hands to a file-transfer plugin.
URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
#: Files in one directory input, at most: a runaway tree is refused, not uploaded.
MAX_TREE_FILES = 100_000
#: Folder levels below a directory input, at most.
MAX_TREE_DEPTH = 32


class InputError(ValueError):
    """An input that cannot be sent; the message says which and why."""


def split_inputs(value: str) -> list[str]:
    """The entries of a ``transfer_input_files`` value: split at commas only, each
    stripped of surrounding white space, empty ones dropped (as condor_submit does)."""
    return [item.strip() for item in value.split(",") if item.strip()]


def is_url(item: str) -> bool:
    return URL.match(item) is not None


def url_scheme(url: str) -> str:
    return url.split("://", 1)[0]


def url_file_name(url: str) -> str:
    """The sandbox name a URL input gets: the last part of its path (decoded)."""
    return unquote(urlsplit(url).path.rsplit("/", 1)[-1])


def check_url(url: str) -> None:
    """Refuse a URL input that names no file a sandbox could hold."""
    name = url_file_name(url)
    if name in ("", ".", "..") or "/" in name or not name.isprintable():
        raise InputError(f"URL input '{url}' names no file: its path must end in a file name")


def url_requirements(urls: list[str]) -> str | None:
    """condor_submit's clause for URL inputs: the worker transfers files and has a
    plugin for each scheme (``HasFileTransferPluginMethods``), in their order."""
    schemes = list(dict.fromkeys(url_scheme(u) for u in urls))
    if not schemes:
        return None
    members = [f'stringListIMember("{s}",TARGET.HasFileTransferPluginMethods)' for s in schemes]
    return " && ".join(["TARGET.HasFileTransfer", *members])


def with_url_requirements(requirements: str | None, urls: list[str]) -> str | None:
    """The job's ``requirements`` with the URL clause added, as HTCondor's job ad has it."""
    clause = url_requirements(urls)
    if clause is None:
        return requirements
    return f"({clause})" if requirements is None else f"({requirements}) && ({clause})"


def missing_hint(value: str) -> str:
    """What to add to "does not exist" for a name with white space in it."""
    if any(c.isspace() for c in value.strip()):
        return " (HTCondor separates the names of transfer_input_files with commas only)"
    return ""


@dataclass
class InputTrees:
    """What each input entry stages in the sandbox, directories walked once each."""

    _walked: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    _folder: dict[str, bool] = field(default_factory=dict)

    def staged(self, entries: list[str]) -> list[tuple[str, str]]:
        """(local file, sandbox name) for each file of the local ``entries`` (absolute
        paths; a directory's ends in ``/`` when its contents go, not itself)."""
        out: list[tuple[str, str]] = []
        for entry in entries:
            if is_url(entry):
                continue
            folder = self._folder.get(entry)
            if folder is None:
                folder = self._folder[entry] = os.path.isdir(entry)
            if not folder:
                out.append((entry, os.path.basename(entry)))
                continue
            top = os.path.normpath(entry)
            prefix = "" if entry.endswith("/") else os.path.basename(top) + "/"
            out += [(path, prefix + rel) for path, rel in self.tree(top)]
        return out

    def tree(self, top: str) -> list[tuple[str, str]]:
        """(file, name relative to ``top``) for every plain file below ``top``; a link
        is followed only to a file inside ``top``."""
        if top not in self._walked:
            self._walked[top] = walk_tree(top)
        return self._walked[top]


def walk_tree(top: str) -> list[tuple[str, str]]:
    """The plain files below the directory ``top``, sorted by relative name. Raises
    InputError for a link leading out of ``top`` or to a directory, for anything
    that is neither file nor directory, and for a tree too large or too deep."""
    real_top = os.path.realpath(top)
    found: list[tuple[str, str]] = []
    pending = [("", top)]
    while pending:
        rel_dir, folder = pending.pop()
        if rel_dir.count("/") >= MAX_TREE_DEPTH:
            raise InputError(f"'{top}/' is more than {MAX_TREE_DEPTH} folders deep")
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            raise InputError(f"cannot read directory '{folder}': {exc.strerror}") from None
        for entry in entries:
            rel = rel_dir + entry.name
            mode = entry.stat(follow_symlinks=False).st_mode
            if stat.S_ISLNK(mode):
                found.append((_link_target(top, real_top, entry.path, rel), rel))
            elif stat.S_ISDIR(mode):
                pending.append((rel + "/", entry.path))
            elif stat.S_ISREG(mode):
                found.append((entry.path, rel))
            else:
                raise InputError(f"'{entry.path}' in input directory '{top}' is not a plain file")
            if len(found) > MAX_TREE_FILES:
                raise InputError(f"input directory '{top}' has more than {MAX_TREE_FILES} files")
    return sorted(found, key=lambda pair: pair[1])


def _link_target(top: str, real_top: str, path: str, rel: str) -> str:
    """The file a link in a directory input stands for: a plain file inside it."""
    target = os.path.realpath(path)
    if os.path.commonpath([real_top, target]) != real_top:
        raise InputError(
            f"'{rel}' in input directory '{top}' is a link out of the directory ({target})"
        )
    if not os.path.isfile(target):
        raise InputError(
            f"'{rel}' in input directory '{top}' is a link to something not a plain file"
        )
    return target


#: The URL schemes dfarm's workers fetch themselves (see ``worker_node.url_inputs``).
FETCHED_SCHEMES = ("http", "https")


def unfetched_scheme(url: str) -> str | None:
    """A warning for a URL input no dfarm worker fetches, else None."""
    scheme = url_scheme(url).lower()
    if scheme in FETCHED_SCHEMES:
        return None
    return (
        f"'{url}': dfarm workers fetch only http:// and https:// inputs; the job waits"
        f" for a worker whose HasFileTransferPluginMethods lists '{scheme}'"
    )
