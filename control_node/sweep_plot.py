"""``dresults --plot``: the distribution of a sweep's results as a PNG.

Left: a histogram of the results with a Gaussian kernel density estimate (Scott's
bandwidth). Right, for a sweep over one parameter: each job's result against its
parameter value (numbers on a numeric axis, other values as categories).
Drawn with matplotlib's Agg backend, so no display is needed.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from control_node.sweep import Sweep  # noqa: E402

__all__ = ["DPI", "kde", "plot_sweep"]

DPI = 100
#: Figure size in inches: one panel, or two for a one-parameter sweep.
SINGLE = (6.4, 4.8)
DOUBLE = (12.8, 4.8)


def kde(values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """A Gaussian kernel density estimate of ``values`` on ``grid`` (Scott's rule)."""
    n = len(values)
    sd = float(np.std(values, ddof=1)) if n > 1 else 0.0
    bandwidth = sd * n ** (-1 / 5) if sd > 0 else 1.0
    z = (grid[:, None] - values[None, :]) / bandwidth
    return np.exp(-0.5 * z * z).sum(axis=1) / (n * bandwidth * math.sqrt(2 * math.pi))


def plot_sweep(sweep: Sweep, key: str, path: Path, title: str) -> tuple[int, int]:
    """Write the plot of result ``key`` to ``path``; returns its size in pixels."""
    values = np.array(sweep.values(key), dtype=float)
    param = sweep.params[0] if len(sweep.params) == 1 else None
    fig, axes = plt.subplots(1, 2 if param else 1, figsize=DOUBLE if param else SINGLE, dpi=DPI)
    try:
        ax = axes[0] if param else axes
        _density(ax, values, key)
        if param:
            _versus(axes[1], sweep, param, key)
        fig.suptitle(title)
        fig.tight_layout()
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
        pad = 0.1 * np.ptp(values)
        grid = np.linspace(values.min() - pad, values.max() + pad, 400)
        ax.plot(grid, kde(values, grid), color="tab:red", label="density (KDE)")
    ax.set_xlabel(key)
    ax.set_ylabel("density")
    ax.legend()


def _versus(ax: plt.Axes, sweep: Sweep, param: str, key: str) -> None:
    pairs = [(j.params.get(param, ""), j.result[key]) for j in sweep.done if key in j.result]
    try:
        xs: list[float] | list[int] = [float(x) for x, _ in pairs]
        ticks = None
    except ValueError:
        labels = list(dict.fromkeys(x for x, _ in pairs))
        xs, ticks = [labels.index(x) for x, _ in pairs], labels
    ax.scatter(xs, [y for _, y in pairs], s=12, alpha=0.7)
    if ticks is not None:
        ax.set_xticks(range(len(ticks)), ticks, rotation=45, ha="right")
    ax.set_xlabel(param)
    ax.set_ylabel(key)
    ax.set_title(f"{key} vs {param}")
