"""PNG figures for reports: embeddings, loss curves, metric bars and image grids.

Each function takes plain arrays / dicts, writes one PNG to the given path (creating
parent folders) and returns that path. Figures are built with matplotlib's
object-oriented ``Figure`` API and rendered by Agg, so no display is needed and no
global pyplot state leaks between calls (safe in loops and worker threads). Image grids
are composed in numpy and written with OpenCV, which is fast and keeps one output pixel
per input pixel.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

PathLike = str | Path

# Continuous colourings whose values wrap around (angles); a cyclic colormap keeps
# 359 degrees next to 0 degrees in colour as it is in pose.
DEFAULT_CYCLIC = ("azimuth", "yaw", "roll", "hue")


def _prepare(path: PathLike) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _is_categorical(values: np.ndarray) -> bool:
    return values.dtype.kind in "biuOSU"


def embedding_plot(
    points_2d: np.ndarray,
    colour_by: Mapping[str, np.ndarray],
    path: PathLike,
    title: str = "",
    cyclic: Iterable[str] = DEFAULT_CYCLIC,
    point_size: float = 6.0,
    axis_labels: tuple[str, str] | None = None,
) -> Path:
    """Side-by-side scatter panels of the same 2-D embedding, one per colouring.

    ``axis_labels`` names the two axes (e.g. ``("PC1 (23% of variance)", "PC2 (11%)")``).

    Integer, bool and string arrays are categorical (tab20 colours, a legend when there
    are at most 12 categories); float arrays are continuous with a colourbar, using the
    cyclic "twilight" colormap when the colouring's name is in ``cyclic`` and "viridis"
    otherwise.
    """
    points = np.asarray(points_2d, dtype=np.float64)
    _check_embedding(points, colour_by)
    cyclic_names = set(cyclic)
    n_panels = len(colour_by)
    fig = Figure(figsize=(4.5 * n_panels, 4.2), layout="constrained")
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    for ax, (name, raw) in zip(axes, colour_by.items(), strict=True):
        values = np.asarray(raw)
        if _is_categorical(values):
            _scatter_categories(ax, points, values, point_size)
        else:
            cmap = "twilight" if name in cyclic_names else "viridis"
            artist = ax.scatter(
                points[:, 0],
                points[:, 1],
                c=values.astype(np.float64),
                cmap=cmap,
                s=point_size,
                linewidths=0,
            )
            fig.colorbar(artist, ax=ax, shrink=0.8)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
        if axis_labels is not None:
            ax.set_xlabel(axis_labels[0])
            ax.set_ylabel(axis_labels[1])
    return _save(fig, path, title)


def _check_embedding(points: np.ndarray, colour_by: Mapping[str, np.ndarray]) -> None:
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points_2d.shape={points.shape}: expected (N, 2)")
    if not colour_by:
        raise ValueError("colour_by={}: expected at least one colouring")
    for name, values in colour_by.items():
        if np.asarray(values).shape != (points.shape[0],):
            raise ValueError(
                f"colour_by[{name!r}].shape={np.asarray(values).shape}: expected ({points.shape[0]},)"
            )


def _scatter_categories(ax: Axes, points: np.ndarray, values: np.ndarray, point_size: float) -> None:
    """tab20 colours per category, and a legend beside the panel for at most 12 of them."""
    categories, codes = np.unique(values, return_inverse=True)
    palette = matplotlib.colormaps["tab20"]
    colours = palette(codes.reshape(-1) % palette.N)
    ax.scatter(points[:, 0], points[:, 1], c=colours, s=point_size, linewidths=0)
    if len(categories) <= 12:
        for code, category in enumerate(categories):
            ax.scatter([], [], color=palette(code % palette.N), label=str(category), s=20)
        # Beside the panel, never over the points.
        ax.legend(fontsize=7, markerscale=1.0, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)


def loss_curves(
    curves: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]],
    path: PathLike,
    title: str = "",
) -> Path:
    """One panel per loss name (step vs value), every method overlaid in its own colour.

    ``curves[method][loss_name]`` is a list of (step, value); a method that lacks a loss
    is simply absent from that panel.
    """
    if not curves:
        raise ValueError("curves={}: expected at least one method")
    loss_names: list[str] = []
    for per_loss in curves.values():
        loss_names += [name for name in per_loss if name not in loss_names]
    if not loss_names:
        raise ValueError(
            "curves has no loss series: expected curves[method][loss] = [(step, value), ...]"
        )
    fig = Figure(figsize=(4.5 * len(loss_names), 3.6), layout="constrained")
    axes = fig.subplots(1, len(loss_names), squeeze=False)[0]
    palette = matplotlib.colormaps["tab10"]
    for ax, loss_name in zip(axes, loss_names, strict=True):
        for index, (method, per_loss) in enumerate(curves.items()):
            series = per_loss.get(loss_name)
            if not series:
                continue
            steps, values = zip(*series, strict=True)
            ax.plot(steps, values, color=palette(index % palette.N), label=method, linewidth=1.2)
        ax.set_title(loss_name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False)
    return _save(fig, path, title)


def metric_bars(
    table: Mapping[str, Mapping[str, tuple[float, float]]],
    path: PathLike,
    title: str = "",
    chance: Mapping[str, float] | None = None,
) -> Path:
    """One panel per metric (each with its own scale), one bar per method, error bar = std.

    ``table[method][metric] = (mean, std)``; a missing entry leaves a gap. ``chance[metric]``
    draws a dashed line at the chance level of that metric.
    """
    if not table:
        raise ValueError("table={}: expected at least one method")
    metrics: list[str] = []
    for per_metric in table.values():
        metrics += [name for name in per_metric if name not in metrics]
    if not metrics:
        raise ValueError("table has no metrics: expected table[method][metric] = (mean, std)")
    methods = list(table)
    palette = matplotlib.colormaps["tab10"]
    columns = min(4, len(metrics))
    rows = -(-len(metrics) // columns)
    fig = Figure(figsize=(max(3.0, 0.45 * len(methods) + 1.2) * columns, 2.8 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).reshape(-1)
    positions = np.arange(len(methods))
    for ax, metric in zip(axes, metrics, strict=False):
        cells = [table[method].get(metric, (np.nan, np.nan)) for method in methods]
        means = np.array([cell[0] for cell in cells], dtype=np.float64)
        stds = np.array([cell[1] for cell in cells], dtype=np.float64)
        ax.bar(positions, means, 0.8, yerr=stds, capsize=3, color=[palette(i % palette.N) for i in positions])
        if chance is not None and metric in chance:
            ax.axhline(chance[metric], color="0.3", linestyle="--", linewidth=1, label="chance")
            ax.legend(fontsize=7, frameon=False)
        ax.set_xticks(positions, methods, rotation=30, ha="right", fontsize=8)
        ax.set_title(metric, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    return _save(fig, path, title)


def score_curves(
    curves: Mapping[str, Mapping[str, Sequence[tuple[float, float, float]]]],
    path: PathLike,
    x_label: str = "",
    log_x: bool = True,
) -> Path:
    """One panel per metric, one line per method: ``curves[metric][method]`` = points
    (x, mean, std), drawn with a band of ± std (e.g. scores against training steps)."""
    if not curves or not any(curves.values()):
        raise ValueError("curves={}: expected curves[metric][method] = [(x, mean, std), ...]")
    palette = matplotlib.colormaps["tab10"]
    methods = list(dict.fromkeys(m for per_method in curves.values() for m in per_method))
    fig = Figure(figsize=(4.2 * len(curves), 3.4), layout="constrained")
    axes = fig.subplots(1, len(curves), squeeze=False)[0]
    for ax, (metric, per_method) in zip(axes, curves.items(), strict=True):
        for method, points in per_method.items():
            x, mean, std = (np.asarray(column, dtype=np.float64) for column in zip(*sorted(points), strict=True))
            colour = palette(methods.index(method) % palette.N)
            ax.plot(x, mean, marker="o", color=colour, label=method)
            ax.fill_between(x, mean - std, mean + std, color=colour, alpha=0.2)
        if log_x:
            ax.set_xscale("log", base=2)
        ax.set_xlabel(x_label)
        ax.set_title(metric, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, frameon=False)
    return _save(fig, path)


def _action_axis(ax: Axes, name: str) -> None:
    """A panel over one normalised action column, [-1, 1]."""
    ax.set_title(name, fontsize=9)
    ax.set_xlabel("normalised action", fontsize=8)
    ax.grid(alpha=0.3)


def _save(fig: Figure, path: PathLike, title: str = "") -> Path:
    """Every figure's one way to disk: the optional suptitle, the folder made, 110 dpi."""
    if title:
        fig.suptitle(title)
    out = _prepare(path)
    fig.savefig(out, dpi=110)
    return out


def action_histograms(
    histograms: Mapping[str, Mapping[str, Sequence[float]]],
    edges: Sequence[float],
    path: PathLike,
    title: str = "",
) -> Path:
    """One panel per action column, one step line per row: ``histograms[row][column]`` =
    counts in the bins ``edges`` (shared by every row), drawn as the share of that row's
    actions per bin so rows with different numbers of actions compare."""
    if not histograms or not any(histograms.values()):
        raise ValueError("histograms={}: expected histograms[row][column] = counts per bin")
    columns = list(dict.fromkeys(c for per_column in histograms.values() for c in per_column))
    edges = np.asarray(edges, dtype=np.float64)
    palette = matplotlib.colormaps["tab10"]
    width = min(4, len(columns))
    rows = -(-len(columns) // width)
    fig = Figure(figsize=(3.6 * width, 2.6 * rows), layout="constrained")
    axes = fig.subplots(rows, width, squeeze=False).reshape(-1)
    for ax, column in zip(axes, columns, strict=False):
        for index, (row, per_column) in enumerate(histograms.items()):
            counts = np.asarray(per_column.get(column, []), dtype=np.float64)
            if counts.size != edges.size - 1 or counts.sum() <= 0:
                continue
            ax.stairs(counts / counts.sum(), edges, color=palette(index % palette.N), label=row, linewidth=1.2)
        _action_axis(ax, column)
    for ax in axes[len(columns):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7, frameon=False)
    return _save(fig, path, title)


def error_model_history(history: Sequence[Mapping], path: PathLike, title: str = "") -> Path:
    """How a curious observer's error model changed: its mean predicted error and noise
    against the learner step, then per action axis the predicted error along that axis
    (``entry["landscape"][axis]`` at evenly spaced normalised actions from -1 to 1) at the
    first, middle and last publication."""
    if not history:
        raise ValueError("history=[]: expected the entries of a curious run's history.json")
    steps = np.asarray([entry["learner_step"] for entry in history], dtype=np.float64)
    axes_names = list(history[0]["landscape"])
    fig = Figure(figsize=(3.4 * (1 + len(axes_names)), 2.8), layout="constrained")
    axes = fig.subplots(1, 1 + len(axes_names), squeeze=False)[0]
    axes[0].plot(steps, [entry["mean_error"] for entry in history], label="mean error")
    axes[0].plot(steps, [entry["noise_std"] for entry in history], label="noise sd")
    axes[0].set_xlabel("learner step")
    axes[0].legend(fontsize=7, frameon=False)
    axes[0].grid(alpha=0.3)
    picks = sorted({0, len(history) // 2, len(history) - 1})
    palette = matplotlib.colormaps["viridis"]
    for ax, name in zip(axes[1:], axes_names, strict=True):
        for rank, index in enumerate(picks):
            values = np.asarray(history[index]["landscape"][name], dtype=np.float64)
            ax.plot(np.linspace(-1.0, 1.0, values.size), values, marker="o", markersize=3,
                    color=palette(rank / max(1, len(picks) - 1)), label=f"step {int(steps[index])}")  # fmt: skip
        _action_axis(ax, name)
    if len(axes) > 1:
        axes[1].legend(fontsize=7, frameon=False)
    return _save(fig, path, title)
