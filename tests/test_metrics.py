"""Frozen-feature metrics and plots give the known answer on synthetic data.

Each metric is checked where the right value is known by construction (features that
encode pose exactly, separated blobs, random features at chance, colours shared by the
two views of a pair) and, where a short naive reference exists (R^2 and Spearman by hand),
against it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learner.evaluation import metrics, plots, shortcut

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _blobs(n_per_class: int, n_classes: int, dim: int, spread: float, seed: int):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim)) * 10.0
    labels = np.repeat(np.arange(n_classes), n_per_class)
    x = centres[labels] + spread * rng.normal(size=(labels.size, dim))
    order = rng.permutation(labels.size)
    return x[order].astype(np.float32), labels[order]


def _pose(n: int, seed: int) -> np.ndarray:
    """Pose encoding: sin/cos of an azimuth plus an elevation, (n, 3)."""
    rng = np.random.default_rng(seed)
    azimuth = rng.uniform(0, 2 * np.pi, n)
    elevation = rng.uniform(-0.5, 0.5, n)
    return np.stack([np.sin(azimuth), np.cos(azimuth), elevation], axis=1)


# ---------------------------------------------------------------- equivariance


def test_r2_per_column_matches_hand_computation():
    true = np.array([[1.0, 0.0], [2.0, 1.0], [3.0, 0.0], [4.0, 1.0]])
    pred = np.array([[1.5, 0.5], [2.0, 0.5], [2.5, 0.5], [4.0, 0.5]])
    hand = [1 - 0.5 / 5.0, 1 - 1.0 / 1.0]
    np.testing.assert_allclose(metrics.r2_per_column(true, pred), hand)
    with pytest.raises(ValueError, match="expected equal shapes"):
        metrics.r2_per_column(true, pred[:, :1])


def test_ridge_readout_recovers_a_linear_pose_and_ignores_noise():
    rng = np.random.default_rng(3)
    pose = rng.normal(size=(600, 3))
    features = pose @ rng.normal(size=(3, 40)) + 0.05 * rng.normal(size=(600, 40))
    groups = np.repeat(np.arange(30), 20)
    exact = metrics.ridge_r2(features[:400], pose[:400], features[400:], pose[400:], train_groups=groups[:400])
    assert exact.shape == (3,) and exact.min() > 0.95
    noise = rng.normal(size=(600, 40))
    floor = metrics.ridge_r2(noise[:400], pose[:400], noise[400:], pose[400:], train_groups=groups[:400])
    assert np.abs(floor).max() < 0.1
    with pytest.raises(ValueError, match="cross-validation over groups"):
        metrics.ridge_r2(features[:400], pose[:400], features[400:], pose[400:], train_groups=np.zeros(400))


def test_mlp_readout_converges_on_a_nonlinear_target_and_scores_noise_at_zero():
    rng = np.random.default_rng(4)
    pose = _pose(1200, seed=5)
    angle = np.arctan2(pose[:, 0], pose[:, 1])[:, None]  # non-linear in the features
    groups = np.repeat(np.arange(60), 20)
    kw = {"train_groups": groups[:900], "max_epochs": 300, "patience": 15, "seed": 0}
    exact = metrics.mlp_r2(pose[:900], np.hstack([angle, pose[:, 2:]])[:900], pose[900:], np.hstack([angle, pose[:, 2:]])[900:], **kw)
    assert exact.min() > 0.9, exact
    noise = rng.normal(size=(1200, 16))
    floor = metrics.mlp_r2(noise[:900], pose[:900], noise[900:], pose[900:], **kw)
    assert np.abs(floor).max() < 0.05, floor  # the zero-initialised head starts at the mean
    again = metrics.mlp_r2(noise[:900], pose[:900], noise[900:], pose[900:], **kw)
    np.testing.assert_array_equal(floor, again)


# ---------------------------------------------------------------- invariance


def test_probes_separate_blobs_and_sit_at_chance_on_random_labels():
    x, y = _blobs(30, 4, 8, spread=0.5, seed=6)
    assert metrics.linear_probe_top1(x[:80], y[:80], x[80:], y[80:]) == 1.0
    assert metrics.knn_top1(x[:80], y[:80], x[80:], y[80:], k=5) == 1.0
    rng = np.random.default_rng(7)
    noise, labels = rng.normal(size=(2000, 8)), rng.integers(0, 4, 2000)
    assert abs(metrics.linear_probe_top1(noise[:1000], labels[:1000], noise[1000:], labels[1000:]) - 0.25) < 0.05
    assert metrics.linear_probe_top1(torch.tensor(x[:80]), y[:80], x[80:], np.where(y[80:] == 0, 9, y[80:])) < 1.0
    with pytest.raises(ValueError, match="k=500"):
        metrics.knn_top1(x[:80], y[:80], x[80:], y[80:], k=500)


# ---------------------------------------------------------------- hierarchy


def test_silhouette_and_purity_on_separated_and_random_labels():
    x, y = _blobs(20, 3, 6, spread=0.1, seed=8)
    assert metrics.silhouette_score(x, y) > 0.9 and metrics.knn_purity(x, y, k=5) == 1.0
    shuffled = np.random.default_rng(9).permutation(y)
    assert metrics.knn_purity(x, shuffled, k=5) < 0.6
    assert metrics.silhouette_score(torch.tensor(x), y) == pytest.approx(metrics.silhouette_score(x, y))


def test_within_group_correlation_ranks_pose_and_ignores_what_differs_between_groups():
    pose = _pose(120, seed=10)
    groups = np.repeat(np.arange(12), 10)
    assert metrics.within_group_pose_correlation(pose, pose, groups, metric="euclidean") == pytest.approx(1.0)
    # A per-group constant (the episode's floor and light) carries no order inside a group.
    per_group = np.random.default_rng(11).normal(size=(12, 4))[groups]
    assert metrics.within_group_pose_correlation(per_group, pose, groups) == 0.0
    noise = np.random.default_rng(12).normal(size=(120, 8))
    assert abs(metrics.within_group_pose_correlation(noise, pose, groups)) < 0.15
    # Spearman by hand on one group of three: distances ranked identically -> 1.
    x = np.array([[0.0], [1.0], [3.0]])
    assert metrics.within_group_pose_correlation(x, x**2, np.zeros(3), metric="euclidean") == pytest.approx(1.0)


# ---------------------------------------------------------------- shortcut


def test_colour_histograms_count_joint_rgb_bins():
    views = np.zeros((1, 2, 2, 3), np.uint8)
    views[0, 0, 0] = (255, 0, 0)
    hist = shortcut.colour_histograms(views, bins=2)
    assert hist.shape == (1, 8) and hist[0, 0] == 0.75 and hist[0, 4] == 0.25


def test_positive_retrieval_is_high_when_pairs_share_colours_and_at_chance_otherwise():
    rng = np.random.default_rng(13)
    colours = rng.integers(0, 256, (128, 1, 1, 3))
    shared = np.broadcast_to(colours, (128, 8, 8, 3)).astype(np.uint8)
    noise = rng.integers(-20, 21, shared.shape)
    view_b = np.clip(shared.astype(int) + noise, 0, 255).astype(np.uint8)
    hists_a, hists_b = shortcut.colour_histograms(shared), shortcut.colour_histograms(view_b)
    assert shortcut.positive_retrieval_top1(hists_a, hists_b, candidates=64) > 0.5
    unrelated = shortcut.colour_histograms(rng.integers(0, 256, (128, 8, 8, 3), dtype=np.uint8))
    assert shortcut.positive_retrieval_top1(hists_a, unrelated, candidates=64) < 0.1
    with pytest.raises(ValueError, match="candidates=200"):
        shortcut.positive_retrieval_top1(hists_a, hists_b, candidates=200)


def test_pca_2d_preserves_distances_of_planar_data():
    rng = np.random.default_rng(14)
    plane = rng.normal(size=(50, 2)) * [3.0, 1.0]
    rotation, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    x = np.hstack([plane, np.zeros((50, 3))]) @ rotation
    projected = metrics.pca_2d(x)
    distances = lambda p: np.linalg.norm(p[:, None] - p[None], axis=-1)  # noqa: E731
    np.testing.assert_allclose(distances(projected), distances(plane), atol=1e-8)


# ---------------------------------------------------------------- plots


def _is_png(path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(8) == PNG_MAGIC


def test_embedding_plot_writes_png(tmp_path):
    rng = np.random.default_rng(19)
    points = rng.normal(size=(60, 2))
    out = plots.embedding_plot(
        points,
        {"object": rng.integers(0, 5, 60), "azimuth": rng.uniform(0, 360, 60)},
        tmp_path / "sub" / "embedding.png",
        title="test",
    )
    assert out.stat().st_size > 0 and _is_png(out)


def test_loss_curves_and_metric_bars_write_png(tmp_path):
    curves = {
        "ciper": {"nt_xent": [(0, 5.0), (10, 4.0), (20, 3.5)], "action_mse": [(0, 1.0), (20, 0.5)]},
        "simclr": {"nt_xent": [(0, 5.1), (10, 4.5), (20, 4.1)]},
    }
    out = plots.loss_curves(curves, tmp_path / "losses.png")
    assert out.stat().st_size > 0 and _is_png(out)
    table = {
        "ciper": {"linear_top1": (0.8, 0.02), "relative_pose_r2": (0.6, 0.05)},
        "simclr": {"linear_top1": (0.75, 0.03)},
    }
    out = plots.metric_bars(table, tmp_path / "bars.png")
    assert out.stat().st_size > 0 and _is_png(out)
