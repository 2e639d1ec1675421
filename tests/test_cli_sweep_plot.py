"""``dresults --plot`` of a grid sweep: the result against both parameters, and a density
bounded to the data's range; a real cluster runs the sweep."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import TestCluster, write

from control_node.sweep import Sweep
from scheduler import protocol as p

matplotlib = pytest.importorskip("matplotlib")


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def job(proc: int, params: dict[str, str], value: float | None) -> p.JobInfo:
    return p.JobInfo(
        id=f"1.{proc}", cluster=1, proc=proc, owner="a", state="completed", executable="x",
        submit_time=0.0, params=params, result=None if value is None else {"value": value},
    )  # fmt: skip


def grid_sweep() -> Sweep:
    """value = n * damping over a 4 x 3 grid, one job failed (n=8, damping=0.5)."""
    jobs = []
    for n in ("1", "2", "4", "8"):
        for damping in ("0.05", "0.5", "1"):
            value = None if (n, damping) == ("8", "0.5") else float(n) * float(damping)
            jobs.append(job(len(jobs), {"n": n, "damping": damping}, value))
    return Sweep(jobs)


def test_a_grid_sweep_is_plotted_against_both_parameters() -> None:
    from control_node.sweep_plot import figure, plt

    fig = figure(grid_sweep(), "value", "grid")
    try:
        density, lines, heat = fig.axes[:3]
        # A line per value of the second parameter, over the first on a numeric axis.
        drawn = {line.get_label(): line for line in lines.get_lines()}
        assert sorted(drawn) == ["damping = 0.05", "damping = 0.5", "damping = 1"]
        half = drawn["damping = 0.5"]
        assert list(half.get_xdata()) == [1.0, 2.0, 4.0] and list(half.get_ydata()) == [
            0.5, 1.0, 2.0,
        ]  # fmt: skip
        assert list(drawn["damping = 1"].get_xdata()) == [1.0, 2.0, 4.0, 8.0]
        assert lines.get_xlabel() == "n" and lines.get_ylabel() == "value"
        # The heat map: damping up, n across, the failed cell blank.
        grid = heat.get_images()[0].get_array()
        assert grid.shape == (3, 4)
        assert grid[2, 3] == 8.0 and grid[0, 0] == pytest.approx(0.05)
        assert np.ma.is_masked(grid[1, 3]) or np.isnan(grid[1, 3])
        assert [t.get_text() for t in heat.get_xticklabels()] == ["1", "2", "4", "8"]
        assert [t.get_text() for t in heat.get_yticklabels()] == ["0.05", "0.5", "1"]
        assert density.get_xlabel() == "value"
    finally:
        plt.close(fig)


def test_the_density_stays_within_the_data_and_keeps_its_mass() -> None:
    from control_node.sweep_plot import figure, kde, plt

    values = [0.0, 0.01, 0.02, 0.05, 0.1, 0.3, 1.0]  # cannot be negative, piled up at 0
    sweep = Sweep([job(i, {}, v) for i, v in enumerate(values)])
    fig = figure(sweep, "value", "density")
    try:
        assert len(fig.axes) == 1  # no parameter: only the distribution
        (curve,) = [line for line in fig.axes[0].get_lines() if "density" in line.get_label()]
        xs, ys = np.asarray(curve.get_xdata()), np.asarray(curve.get_ydata())
        assert xs.min() == 0.0 and xs.max() == 1.0 and (ys >= 0).all()
    finally:
        plt.close(fig)
    grid = np.linspace(0.0, 1.0, 20001)
    data = np.array(values)
    mass = float(np.sum(kde(data, grid, 0.0, 1.0)) * (grid[1] - grid[0]))
    assert mass == pytest.approx(1.0, abs=0.01)


def test_dresults_plots_a_real_grid_sweep(cluster: TestCluster, tmp_path: Path) -> None:
    write(tmp_path / "m.sh", "#!/bin/sh\nawk -v a=$1 -v b=$2 'BEGIN { print a * b }'\n", True)
    write(tmp_path / "m.sub", "executable = m.sh\narguments = $(n) $(damping)\n"
          "queue n, damping from (\n1, 0.5\n1, 1\n2, 0.5\n2, 1\n3, 0.5\n3, 1\n)\n")  # fmt: skip
    done = cluster.run("dsub", "--wait", "m.sub", cwd=tmp_path)
    assert done.returncode == 0, done
    report = json.loads(cluster.run("dresults", "1", "--json").stdout)
    assert report["results"] == 6, report
    plotted = cluster.run("dresults", "1", "--plot", tmp_path / "grid.png")
    assert plotted.returncode == 0, plotted.stderr
    # Three panels: the distribution, value against n (a line per damping), the heat map.
    assert png_size(tmp_path / "grid.png") == (1920, 480)
    assert "plot written to" in plotted.stdout and "(1920x480)" in plotted.stdout
