"""Plots a reader can use: one scale per metric with its chance line, named PCA axes, and
legends beside the points rather than over them."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from learner.evaluation import plots


def saved_figure(monkeypatch) -> list[Figure]:
    figures: list[Figure] = []
    original = Figure.savefig

    def record(self, *args, **kwargs):
        figures.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", record)
    return figures


def test_metric_bars_give_every_metric_its_own_scale_and_chance_line(tmp_path, monkeypatch):
    figures = saved_figure(monkeypatch)
    table = {"ciper": {"top1": (0.4, 0.02), "pose_r2": (0.1, 0.05), "loss": (120.0, 3.0)},
             "simclr": {"top1": (0.5, 0.01), "pose_r2": (-0.2, 0.1), "loss": (90.0, 5.0)}}  # fmt: skip
    plots.metric_bars(table, tmp_path / "bars.png", chance={"top1": 1 / 12})
    axes = [ax for ax in figures[-1].axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["top1", "pose_r2", "loss"]
    assert axes[0].get_ylim()[1] < 1 < axes[2].get_ylim()[1]  # the loss does not flatten the scores
    chance_lines = [line for line in axes[0].get_lines() if line.get_label() == "chance"]
    assert len(chance_lines) == 1 and np.allclose(chance_lines[0].get_ydata(), 1 / 12)
    assert [tick.get_text() for tick in axes[0].get_xticklabels()] == ["ciper", "simclr"]


def test_embedding_plot_names_its_axes_and_keeps_the_legend_off_the_points(tmp_path, monkeypatch):
    figures = saved_figure(monkeypatch)
    points = np.random.default_rng(0).normal(size=(30, 2))
    names = np.array(["mug", "chair", "cone"])[np.arange(30) % 3]
    plots.embedding_plot(points, {"category": names}, tmp_path / "emb.png",
                         axis_labels=("PC1 (40% of variance)", "PC2 (20%)"))  # fmt: skip
    ax = figures[-1].axes[0]
    assert ax.get_xlabel() == "PC1 (40% of variance)" and ax.get_ylabel() == "PC2 (20%)"
    legend = ax.get_legend()
    assert sorted(text.get_text() for text in legend.get_texts()) == ["chair", "cone", "mug"]
    assert legend.get_bbox_to_anchor().x0 >= ax.get_window_extent().x1 - 1  # anchored right of the panel


def test_pca_axes_report_the_variance_they_explain_and_categories_have_names(make_config):
    from envs import scene_state
    from learner.evaluation.metrics import pca_2d_explained

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 3)) * np.array([3.0, 1.0, 0.0])
    points, explained = pca_2d_explained(x)
    assert points.shape == (2000, 2)
    np.testing.assert_allclose(explained, [0.9, 0.1], atol=0.02)
    names = scene_state.category_names(make_config().env.catalog)
    assert "mug" in names and list(names) == sorted(names)
    from envs import image_state

    assert image_state.category_names(None) == tuple(str(d) for d in range(10))  # the digits' classes
