"""Keys whose value is one of a fixed set: the universe and the file-transfer choices,
checked as condor_submit 24 checks them (refused, or run here with a warning).

Mixed into the parser of :mod:`control_node.submit_file`.
"""

from __future__ import annotations

from collections.abc import Callable

from control_node.submit_errors import SubmitFileError
from control_node.submit_macros import MacroContext

__all__ = ["RETIRED_UNIVERSES", "UNIVERSES", "UNIVERSE_NEEDS", "ChoiceChecks"]

#: HTCondor's universes; each other than vanilla runs as vanilla here, for this reason.
UNIVERSES = {
    "vanilla": "",
    "scheduler": "dfarm runs every job on a worker, never on the submit machine",
    "local": "dfarm runs every job on a worker, never on the submit machine",
    "grid": "dfarm does not forward jobs to other batch systems",
    "java": "the executable is run as given, not by a Java VM",
    "vm": "dfarm does not start virtual machines",
    "parallel": "dfarm runs each job on one worker",
    "mpi": "dfarm runs each job on one worker",
    "docker": "workers run jobs without a container",
    "container": "workers run jobs without a container",
}
#: Universes condor_submit 24 names and refuses (the name as its message spells it).
RETIRED_UNIVERSES = {"standard": "Standard", "pipe": "Pipe", "pvm": "PVM"}
#: What condor_submit 24 requires in a universe: universe -> (any of these keys, why).
UNIVERSE_NEEDS = {
    "vm": (("vm_memory",), "the vm universe needs vm_memory"),
    "grid": (("grid_resource",), "the grid universe needs grid_resource"),
    "java": (("arguments",), "the java universe needs the class to run as its arguments"),
    "parallel": (("machine_count",), "the parallel universe needs machine_count"),
    "mpi": (("machine_count",), "the mpi universe needs machine_count"),
    "docker": (("docker_image",), "docker jobs need a docker_image"),
    "container": (
        ("container_image", "docker_image"),
        "container jobs need a container_image or docker_image",
    ),
}


class ChoiceChecks:
    """The checks of the universe and the transfer choices of one proc."""

    # Provided by the parser.
    lines: dict[str, int]
    get: Callable[[MacroContext, str], str | None]
    error: Callable[[str, str], SubmitFileError]
    warn: Callable[[int | None, str], None]

    def check_fixed_choices(self, ctx: MacroContext) -> None:
        self.check_universe(ctx)
        transfer = self.get(ctx, "should_transfer_files")
        if transfer and transfer.upper() not in ("YES", "IF_NEEDED", "NO"):
            raise self.error("should_transfer_files", f"invalid should_transfer_files {transfer!r}")
        when = self.get(ctx, "when_to_transfer_output")
        if when and when.upper() not in ("ON_EXIT", "ON_EXIT_OR_EVICT", "ON_SUCCESS"):
            raise self.error("when_to_transfer_output", f"invalid when_to_transfer_output {when!r}")
        if transfer and when and transfer.upper() == "NO":
            raise self.error(
                "when_to_transfer_output",
                f"when_to_transfer_output = {when} contradicts should_transfer_files = NO"
                " (condor_submit refuses the pair)",
            )
        if (
            transfer
            and when
            and (transfer.upper(), when.upper())
            == (
                "IF_NEEDED",
                "ON_EXIT_OR_EVICT",
            )
        ):
            raise self.error(
                "when_to_transfer_output",
                "when_to_transfer_output = ON_EXIT_OR_EVICT and should_transfer_files ="
                " IF_NEEDED are incompatible (condor_submit refuses the pair): set"
                " should_transfer_files = YES, or when_to_transfer_output = ON_EXIT",
            )
        if transfer and transfer.upper() == "NO":
            self.warn(
                self.lines.get("should_transfer_files"),
                "should_transfer_files = NO has no effect here: dfarm always transfers files"
                " (workers share no file system with the submit machine)",
            )
        if when and when.upper() != "ON_EXIT":
            self.warn(
                self.lines.get("when_to_transfer_output"),
                f"when_to_transfer_output = {when} runs here as ON_EXIT: outputs come back"
                " when the job ends",
            )

    def check_universe(self, ctx: MacroContext) -> None:
        """Refuse a universe condor_submit refuses; warn how another runs here."""
        universe = self.get(ctx, "universe")
        if not universe:
            return
        low = universe.lower()
        if low in RETIRED_UNIVERSES:
            raise self.error("universe", f"'{RETIRED_UNIVERSES[low]}' is not a supported universe")
        if low not in UNIVERSES:
            raise self.error("universe", f"unknown universe '{universe}'")
        needs = UNIVERSE_NEEDS.get(low)
        if needs and not any(self.get(ctx, key) for key in needs[0]):
            raise self.error("universe", needs[1])
        if low == "vm" and self.get(ctx, "vm_type") and not self.get(ctx, "vm_disk"):
            raise self.error("universe", "a vm universe job with a vm_type needs vm_disk")
        if low != "vanilla":
            self.warn(
                self.lines.get("universe"),
                f"universe '{universe}' runs here as vanilla: {UNIVERSES[low]}",
            )
