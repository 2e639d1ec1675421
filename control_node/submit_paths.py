"""The files of a proc: its initial directory, executable, inputs and outputs, each
checked on the submit machine as condor_submit checks them.

Mixed into the parser of :mod:`control_node.submit_file`.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from control_node import input_files as transfer_inputs
from control_node.submit_errors import SubmitFileError
from control_node.submit_macros import MacroContext
from control_node.submit_quoting import split_list

__all__ = ["PathReaders"]


class PathReaders:
    """Readers of the keys that name files; each returns paths or raises the parser's
    error."""

    # Provided by the parser.
    filename: str
    cwd: str
    lines: dict[str, int]
    files: dict[str, str]
    executable: str | None
    #: (key, path, line) -> how many procs write there.
    outputs: dict[tuple[str, str, int], int]
    _stat: dict[str, int]
    get: Callable[[MacroContext, str], str | None]
    error: Callable[[str, str], SubmitFileError]
    warn: Callable[..., None]

    def kind(self, path: str) -> int:
        """0: missing, 1: regular file, 2: directory, 3: something else."""
        if path not in self._stat:
            isfile, isdir = os.path.isfile(path), os.path.isdir(path)
            exists = isfile or isdir or os.path.exists(path)
            self._stat[path] = 1 if isfile else 2 if isdir else 3 if exists else 0
        return self._stat[path]

    def initialdir(self, ctx: MacroContext) -> str:
        value = self.get(ctx, "initialdir")
        if not value:
            return self.cwd
        path = os.path.normpath(os.path.join(self.cwd, value))
        kind = self.kind(path)
        if kind != 2:
            why = "No such directory" if kind == 0 else "not a directory"
            raise self.error("initialdir", f"initialdir '{value}': {why} ({path})")
        return path

    def existing_file_path(self, value: str, base: str, key: str, what: str) -> str:
        path = os.path.normpath(os.path.join(base, value))
        where = "" if os.path.isabs(value) else f" (looked for {path})"
        kind = self.kind(path)
        if kind == 0:
            hint = transfer_inputs.missing_hint(value) if key == "transfer_input_files" else ""
            raise self.error(key, f"{what} '{value}' does not exist{where}{hint}")
        if kind == 2 and key == "transfer_input_files":
            return path + "/" if value.endswith("/") else path
        if kind != 1:
            raise self.error(key, f"{what} '{value}' is not a regular file{where}")
        return path

    def existing_file(self, ctx: MacroContext, key: str, base: str, what: str) -> str | None:
        value = self.get(ctx, key)
        return self.existing_file_path(value, base, key, what) if value else None

    def the_executable(self, ctx: MacroContext, qline: int | None) -> str:
        value = self.get(ctx, "executable")
        if not value:
            raise SubmitFileError(self.filename, qline, "missing 'executable'")
        path = self.existing_file_path(value, self.cwd, "executable", "executable")
        if self.executable is None:
            self.executable = path
        elif path != self.executable:
            raise self.error(
                "executable",
                "a second executable in one submit file would start a second cluster"
                " in HTCondor; dfarm submits one cluster per file",
            )
        return path

    def input_files(self, ctx: MacroContext, base: str) -> list[str]:
        """Local inputs as absolute paths (a directory's ending in ``/`` when its
        contents go, not itself) and URL inputs as written (see :mod:`.input_files`)."""
        out = []
        for item in transfer_inputs.split_inputs(self.get(ctx, "transfer_input_files") or ""):
            if transfer_inputs.is_url(item):
                try:
                    transfer_inputs.check_url(item)
                except transfer_inputs.InputError as exc:
                    raise self.error("transfer_input_files", str(exc)) from None
                if (why := transfer_inputs.unfetched_scheme(item)) is not None:
                    self.warn(self.lines.get("transfer_input_files"), why)
                out.append(item)
            else:
                out.append(
                    self.existing_file_path(item, base, "transfer_input_files", "input file")
                )
        return out

    def check_collisions(
        self, executable: str, stdin: str | None, inputs: list[str], data: str | None
    ) -> None:
        named = [(executable, "executable"), (stdin, "input")]
        named += [(p, "data" if p == data else "transfer_input_files") for p in inputs]
        seen: dict[str, str] = {}
        for path, key in named:
            if path is None or path.endswith("/"):  # a folder's contents: see InputTrees
                continue
            name = (
                transfer_inputs.url_file_name(path)
                if transfer_inputs.is_url(path)
                else os.path.basename(path)
            )
            other = seen.setdefault(name, path)
            if other != path:
                raise self.error(
                    key,
                    f"'{path}' and '{other}' have the same name '{name}'"
                    " and would collide in the job's sandbox",
                )

    def output_path(self, ctx: MacroContext, key: str, base: str) -> str | None:
        value = self.get(ctx, key)
        if not value:
            return None
        path = os.path.normpath(os.path.join(base, value))
        if self.kind(path) == 2:
            raise self.error(key, f"{key} file '{value}' is a directory")
        if self.kind(os.path.dirname(path)) != 2:
            if key != "log":
                raise self.error(key, f"directory of {key} file '{value}' does not exist ({path})")
            # condor_submit accepts it; dfetch creates the folder when it writes the log.
            self.warn(
                self.lines.get(key),
                f"the folder of log file '{value}' does not exist ({path}): it is created"
                " when the job's results are fetched, which fails if it cannot be",
                self.files.get(key),
            )
        if key != "log":
            slot = (key, path, self.lines.get(key, 0))
            self.outputs[slot] = self.outputs.get(slot, 0) + 1
        return path

    def shared_output_warnings(self) -> None:
        for (key, path, line), count in self.outputs.items():
            if count > 1:
                self.warn(line, f"{count} procs write their {key} to the same file '{path}'")

    def output_files(self, ctx: MacroContext) -> list[str] | None:
        value = self.get(ctx, "transfer_output_files")
        if value is None:
            return None
        names = [] if value == '""' else split_list(value)
        for name in names:
            parts = name.replace("\\", "/").split("/")
            if os.path.isabs(name) or name.startswith("/") or ".." in parts:
                raise self.error(
                    "transfer_output_files",
                    f"transfer_output_files entry '{name}' must be a relative path inside"
                    " the job's sandbox (no absolute path, no '..')",
                )
            if all(p in ("", ".") for p in parts):
                raise self.error(
                    "transfer_output_files", f"invalid transfer_output_files entry '{name}'"
                )
        return names
