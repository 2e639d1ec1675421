"""``dresults --plot``: a sweep's results against its parameters, as a PNG.

Panels, left to right:

- the distribution of the results: a histogram with a Gaussian kernel density
  estimate (Scott's bandwidth) bounded to the data's range (reflected at the smallest
  and largest result, so that it neither runs past them nor loses mass there);
- with one parameter or more: the result against the first parameter, one line per
  value of the second (numbers on a numeric axis, other values as categories);
- with two parameters or more: a heat map of the mean result over the first two.

Results of jobs that share the plotted parameters' values (other parameters differ)
are averaged in the lines and the heat map. Drawn with matplotlib's Agg backend, so
no display is needed.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import BinaryIO

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from control_node.sweep import Sweep  # noqa: E402

__all__ = ["DPI", "figure", "kde", "plot_sweep"]

DPI = 100
#: Size of one panel in inches.
PANEL = (6.4, 4.8)
#: Most lines drawn in the panel of result against the first parameter.
MAX_LINES = 12


def kde(
    values: np.ndarray, grid: np.ndarray, low: float | None = None, high: float | None = None
) -> np.ndarray:
    """A Gaussian kernel density estimate of ``values`` on ``grid`` (Scott's rule),
    reflected at ``low`` and ``high`` when given, so that it integrates to 1 between them."""
    n = len(values)
    sd = float(np.std(values, ddof=1)) if n > 1 else 0.0
    bandwidth = sd * n ** (-1 / 5) if sd > 0 else 1.0
    centres = [values]
    if low is not None:
        centres.append(2 * low - values)
    if high is not None:
        centres.append(2 * high - values)
    density = np.zeros_like(grid, dtype=float)
    for c in centres:
        z = (grid[:, None] - c[None, :]) / bandwidth
        density += np.exp(-0.5 * z * z).sum(axis=1)
    return density / (n * bandwidth * math.sqrt(2 * math.pi))


def figure(sweep: Sweep, key: str, title: str) -> Figure:
    """The figure of result ``key``: one panel, two with a parameter, three with two."""
    params = sweep.params[:2]
    panels = 1 + len(params)
    fig, axes = plt.subplots(1, panels, figsize=(PANEL[0] * panels, PANEL[1]), dpi=DPI)
    axes = np.atleast_1d(axes)
    _density(axes[0], np.array(sweep.values(key), dtype=float), key)
    if params:
        _versus(axes[1], sweep, params, key)
    if len(params) == 2:
        _heat_map(fig, axes[2], sweep, params, key)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_sweep(sweep: Sweep, key: str, path: Path | BinaryIO, title: str) -> tuple[int, int]:
    """Write the plot of result ``key`` to ``path`` (a file name or an open binary
    file); returns its size in pixels."""
    fig = figure(sweep, key, title)
    try:
        fig.savefig(path, dpi=DPI, format="png")
        width, height = fig.get_size_inches() * DPI
    finally:
        plt.close(fig)
    return round(width), round(height)


def _density(ax: plt.Axes, values: np.ndarray, key: str) -> None:
    if len(values) == 0:
        ax.text(0.5, 0.5, "no results yet", ha="center", va="center", transform=ax.transAxes)
        return
    bins = max(1, min(50, math.ceil(math.log2(len(values)) + 1)))
    ax.hist(values, bins=bins, density=True, alpha=0.5, color="tab:blue", label="histogram")
    if len(values) > 1 and np.ptp(values) > 0:
        low, high = float(values.min()), float(values.max())
        grid = np.linspace(low, high, 400)
        ax.plot(grid, kde(values, grid, low, high), color="tab:red", label="density (KDE)")
    ax.set_xlabel(key)
    ax.set_ylabel("density")
    ax.legend()


def _axis(values: list[str]) -> tuple[dict[str, float], list[str] | None]:
    """Positions of parameter values on an axis: the numbers themselves when all are
    numbers, else categories in order of appearance (then the labels are returned)."""
    distinct = list(dict.fromkeys(values))
    try:
        return {v: float(v) for v in distinct}, None
    except ValueError:
        return {v: float(i) for i, v in enumerate(distinct)}, distinct


def _ordered(values: list[str]) -> list[str]:
    """The distinct values, in numeric order when all are numbers, else as they come."""
    where, labels = _axis(values)
    return labels if labels is not None else sorted(where, key=where.__getitem__)


def _means(sweep: Sweep, params: list[str], key: str) -> dict[tuple[str, ...], float]:
    """The mean result of the jobs sharing each combination of ``params``' values."""
    cells: dict[tuple[str, ...], list[float]] = defaultdict(list)
    for job in sweep.done:
        if job.result and key in job.result:
            cells[tuple(job.params.get(name, "") for name in params)].append(job.result[key])
    return {at: float(np.mean(found)) for at, found in cells.items()}


def _versus(ax: plt.Axes, sweep: Sweep, params: list[str], key: str) -> None:
    """The result against the first parameter, a line per value of the second."""
    means = _means(sweep, params, key)
    where, labels = _axis([at[0] for at in means])
    groups = list(dict.fromkeys(at[1:] for at in means))
    for group in groups[:MAX_LINES]:
        points = sorted((where[at[0]], y) for at, y in means.items() if at[1:] == group)
        label = f"{params[1]} = {group[0]}" if group else None
        ax.plot([x for x, _ in points], [y for _, y in points], marker="o", label=label)
    if labels is not None:
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    if len(params) > 1:
        more = f" (first {MAX_LINES} of {len(groups)})" if len(groups) > MAX_LINES else ""
        ax.legend(title=f"{params[1]}{more}", fontsize="small")
    ax.set_xlabel(params[0])
    ax.set_ylabel(key)
    ax.set_title(f"{key} vs {params[0]}")


def _heat_map(fig: Figure, ax: plt.Axes, sweep: Sweep, params: list[str], key: str) -> None:
    """The mean result over the grid of the first two parameters (blank: no result)."""
    means = _means(sweep, params, key)
    xs, ys = _ordered([at[0] for at in means]), _ordered([at[1] for at in means])
    grid = np.full((len(ys), len(xs)), np.nan)
    for (x, y), value in means.items():
        grid[ys.index(y), xs.index(x)] = value
    image = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(xs)), xs, rotation=45, ha="right")
    ax.set_yticks(range(len(ys)), ys)
    ax.set_xlabel(params[0])
    ax.set_ylabel(params[1])
    ax.set_title(f"mean {key}")
    fig.colorbar(image, ax=ax, label=key)
