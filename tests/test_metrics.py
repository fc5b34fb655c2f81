"""Frozen-feature metrics and plots give the known answer on synthetic data.

Each metric is checked where the right value is known by construction (features that
encode pose exactly, separated blobs, random features at chance) and, where a short
naive reference exists (R^2 by hand, silhouette by loops, Spearman with ties), against it.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from learner import metrics, plots

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


# ---------------------------------------------------------------- r2_score


def test_r2_score_matches_hand_computation_single_output():
    y_true = np.array([3.0, -0.5, 2.0, 7.0])
    y_pred = np.array([2.5, 0.0, 2.0, 8.0])
    # SS_res = 0.25 + 0.25 + 0 + 1 = 1.5; mean 2.875, SS_tot = 29.1875.
    assert metrics.r2_score(y_true, y_pred) == pytest.approx(1 - 1.5 / 29.1875)


def test_r2_score_multi_output_is_uniform_average_of_columns():
    y_true = np.array([[0.5, 1.0], [-1.0, 1.0], [7.0, -6.0]])
    y_pred = np.array([[0.0, 2.0], [-1.0, 2.0], [8.0, -5.0]])
    # Column 0: SS_res = 0.25 + 0 + 1 = 1.25, mean 6.5/3, SS_tot = 32.1666...
    # Column 1: SS_res = 3, mean -4/3, SS_tot = 49.0 - 16/3 = 43.6666...
    col0 = 1 - 1.25 / (0.25 + 1 + 49 - 6.5**2 / 3)
    col1 = 1 - 3.0 / (1 + 1 + 36 - 16 / 3)
    assert metrics.r2_score(y_true, y_pred) == pytest.approx((col0 + col1) / 2)
    assert metrics.r2_score(torch.tensor(y_true), torch.tensor(y_pred)) == pytest.approx(
        (col0 + col1) / 2
    )


def test_r2_score_constant_column_follows_sklearn():
    y_true = np.array([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0]])
    exact = y_true.copy()
    assert metrics.r2_score(exact, exact) == 1.0
    off = exact.copy()
    off[0, 1] = 4.0  # constant column predicted wrongly scores 0, the other column 1
    assert metrics.r2_score(y_true, off) == pytest.approx(0.5)
    assert metrics.r2_score([1.0, 2.0, 3.0], [2.0, 2.0, 2.0]) == pytest.approx(0.0)


def test_r2_score_rejects_bad_shapes():
    with pytest.raises(ValueError, match="y_pred.shape"):
        metrics.r2_score(np.zeros((4, 2)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="at least 2"):
        metrics.r2_score(np.zeros(1), np.zeros(1))


# ---------------------------------------------------------------- pose regression


def test_pose_regression_linear_features_linear_regressor():
    pose = _pose(1200, seed=0)
    mixing = np.random.default_rng(1).normal(size=(3, 16))
    feats = pose @ mixing
    # Rank-3 features in 16-D are ill-conditioned for Adam; a larger step converges in few epochs.
    r2 = metrics.pose_regression_r2(
        feats[:800], pose[:800], feats[800:], pose[800:], hidden=(), epochs=60, lr=1e-2
    )
    assert r2 > 0.95


def test_pose_regression_nonlinear_features_mlp():
    pose = _pose(1200, seed=2)
    mixing = np.random.default_rng(3).normal(size=(3, 32))
    feats = np.tanh(pose @ mixing) + 0.1 * (pose @ mixing) ** 2
    r2 = metrics.pose_regression_r2(
        feats[:800], pose[:800], feats[800:], pose[800:], hidden=(256,), epochs=60
    )
    assert r2 > 0.95


def test_pose_regression_random_features_score_near_zero():
    pose = _pose(1000, seed=4)
    feats = np.random.default_rng(5).normal(size=(1000, 32))
    r2 = metrics.pose_regression_r2(
        feats[:700], pose[:700], feats[700:], pose[700:], hidden=(128,), epochs=20
    )
    assert r2 < 0.1


def test_pose_regression_is_deterministic_given_seed():
    pose = _pose(300, seed=6)
    feats = np.random.default_rng(7).normal(size=(300, 8)) + pose[:, :1]
    kw = dict(hidden=(32,), epochs=5, seed=3)
    first = metrics.pose_regression_r2(feats[:200], pose[:200], feats[200:], pose[200:], **kw)
    second = metrics.pose_regression_r2(feats[:200], pose[:200], feats[200:], pose[200:], **kw)
    assert first == second


def test_relative_pose_r2_recovers_difference_of_encoded_views():
    rng = np.random.default_rng(8)
    angle_a = rng.uniform(-1, 1, (1000, 2))
    angle_b = rng.uniform(-1, 1, (1000, 2))
    mixing = rng.normal(size=(2, 12))
    feat_a, feat_b = angle_a @ mixing, angle_b @ mixing
    relative = angle_b - angle_a  # exactly linear in the concatenated features
    r2 = metrics.relative_pose_r2(
        feat_a[:700],
        feat_b[:700],
        relative[:700],
        feat_a[700:],
        feat_b[700:],
        relative[700:],
        hidden=(),
        epochs=60,
    )
    assert r2 > 0.95
    with pytest.raises(ValueError, match="train_feat_b has 699 rows"):
        metrics.relative_pose_r2(
            feat_a[:700], feat_b[:699], relative[:700], feat_a, feat_b, relative
        )


def test_pose_regression_rejects_mismatched_rows():
    with pytest.raises(ValueError, match="train_y has 5 rows"):
        metrics.pose_regression_r2(
            np.zeros((6, 3)), np.zeros((5, 2)), np.zeros((4, 3)), np.zeros((4, 2))
        )


# ---------------------------------------------------------------- classification probes


def test_probes_separate_blobs_perfectly():
    x, y = _blobs(60, 4, 16, spread=0.5, seed=9)
    assert metrics.linear_probe_top1(
        x[:160], y[:160], x[160:], y[160:], epochs=50
    ) == pytest.approx(1.0)
    assert metrics.knn_top1(x[:160], y[:160], x[160:], y[160:], k=10) == pytest.approx(1.0)
    assert metrics.knn_top1(
        x[:160], y[:160], x[160:], y[160:], k=10, vote="majority"
    ) == pytest.approx(1.0)


def test_probes_on_random_labels_are_near_chance():
    rng = np.random.default_rng(10)
    x = rng.normal(size=(2000, 16)).astype(np.float32)
    y = rng.integers(0, 4, 2000)
    linear = metrics.linear_probe_top1(x[:1000], y[:1000], x[1000:], y[1000:], epochs=30)
    knn = metrics.knn_top1(x[:1000], y[:1000], x[1000:], y[1000:], k=20)
    assert abs(linear - 0.25) < 0.06
    assert abs(knn - 0.25) < 0.06


def test_linear_probe_accepts_tensors_and_string_labels():
    x, y = _blobs(30, 3, 8, spread=0.5, seed=11)
    names = np.array(["mug", "car", "duck"])[y]
    acc = metrics.linear_probe_top1(
        torch.tensor(x[:60]), names[:60], torch.tensor(x[60:]), names[60:], epochs=30
    )
    assert acc == pytest.approx(1.0)


def test_probes_validate_inputs():
    x, y = _blobs(10, 2, 4, spread=0.5, seed=12)
    with pytest.raises(ValueError, match="at least 2 classes"):
        metrics.linear_probe_top1(x, np.zeros(20, int), x, y)
    with pytest.raises(ValueError, match="k=50"):
        metrics.knn_top1(x, y, x, y, k=50)
    with pytest.raises(ValueError, match="test_x has 3 columns"):
        metrics.knn_top1(x, y, x[:, :3], y)
    with pytest.raises(ValueError, match="non-finite"):
        bad = x.copy()
        bad[0, 0] = np.nan
        metrics.linear_probe_top1(bad, y, x, y)


# ---------------------------------------------------------------- hierarchy


def _naive_silhouette(x: np.ndarray, labels: np.ndarray, distance) -> float:
    scores = []
    for i in range(len(x)):
        own = [j for j in range(len(x)) if labels[j] == labels[i] and j != i]
        if not own:
            scores.append(0.0)
            continue
        a = sum(distance(x[i], x[j]) for j in own) / len(own)
        b = min(
            np.mean([distance(x[i], x[j]) for j in range(len(x)) if labels[j] == other])
            for other in set(labels.tolist()) - {labels[i]}
        )
        scores.append((b - a) / max(a, b))
    return float(np.mean(scores))


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_silhouette_matches_naive_reference(metric):
    rng = np.random.default_rng(13)
    x = rng.normal(size=(25, 5))
    labels = rng.integers(0, 3, 25)
    labels[0] = 7  # a singleton cluster scores 0

    def distance(u, v):
        if metric == "euclidean":
            return float(np.linalg.norm(u - v))
        return 1.0 - float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))

    expected = _naive_silhouette(x, labels, distance)
    assert metrics.silhouette_score(x, labels, metric=metric) == pytest.approx(expected, abs=1e-9)


def test_silhouette_high_for_separated_clusters():
    x, y = _blobs(50, 5, 16, spread=0.3, seed=14)
    assert metrics.silhouette_score(x, y, metric="euclidean") > 0.8
    assert metrics.silhouette_score(x, y, metric="cosine") > 0.8
    with pytest.raises(ValueError, match="1 distinct values"):
        metrics.silhouette_score(x, np.zeros(len(x)))


def test_knn_purity_on_separated_and_random_labels():
    x, y = _blobs(40, 3, 8, spread=0.3, seed=15)
    assert metrics.knn_purity(x, y, k=10) == pytest.approx(1.0)
    shuffled = np.random.default_rng(16).permutation(y)
    assert metrics.knn_purity(x, shuffled, k=10) < 0.5


def test_spearman_hand_example_with_ties():
    # Ranks of [1, 2, 2, 3] are [1, 2.5, 2.5, 4]; Pearson with [1, 3, 2, 4] = 4.5 / sqrt(4.5 * 5).
    assert metrics.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(3 / math.sqrt(10))
    assert metrics.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert metrics.spearman([1, 2, 3, 4], np.exp([4.0, 3.0, 2.0, 1.0])) == pytest.approx(-1.0)
    assert math.isnan(metrics.spearman([1, 1, 1], [1, 2, 3]))


def test_pair_from_index_matches_triu_order():
    for n in (3, 4, 7, 50):
        i, j = np.triu_indices(n, 1)
        got_i, got_j = metrics._pair_from_index(np.arange(n * (n - 1) // 2), n)
        np.testing.assert_array_equal(got_i, i)
        np.testing.assert_array_equal(got_j, j)


def test_within_group_pose_correlation_pose_features_vs_random():
    rng = np.random.default_rng(17)
    groups = np.repeat(np.arange(4), 80)  # 80 points -> 3160 pairs, so pairs get sampled
    pose = np.concatenate([_pose(80, seed=s) for s in range(4)])
    offsets = rng.normal(size=(4, 3)) * 5.0
    feats = pose + offsets[groups]  # each object its own cluster, ordered by pose inside
    assert metrics.within_group_pose_correlation(feats, pose, groups) == pytest.approx(1.0)
    random_feats = rng.normal(size=(320, 16))
    assert abs(metrics.within_group_pose_correlation(random_feats, pose, groups)) < 0.1
    singleton_groups = np.arange(320)
    with pytest.raises(ValueError, match=">= 3 points"):
        metrics.within_group_pose_correlation(feats, pose, singleton_groups)


def test_pca_2d_preserves_distances_of_planar_data():
    rng = np.random.default_rng(18)
    plane = rng.normal(size=(100, 2)) * np.array([3.0, 1.0])
    basis, _ = np.linalg.qr(rng.normal(size=(10, 2)))  # orthonormal (10, 2)
    x = plane @ basis.T + rng.normal(size=10)
    projected = metrics.pca_2d(x)
    assert projected.shape == (100, 2)

    def pairwise(points):
        return np.linalg.norm(points[:, None] - points[None], axis=-1)

    np.testing.assert_allclose(pairwise(projected), pairwise(x), atol=1e-8)
    np.testing.assert_array_equal(metrics.pca_2d(x), projected)


def test_standardise_uses_train_statistics_only():
    train = np.array([[0.0, 1.0], [2.0, 1.0]])
    test = np.array([[4.0, 3.0]])
    train_z, test_z = metrics.standardise(train, test)
    np.testing.assert_allclose(train_z.numpy(), [[-1.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(test_z.numpy(), [[3.0, 2.0]])  # constant column: std taken as 1


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


@pytest.mark.parametrize("labelled", [False, True])
def test_image_grid_writes_expected_shape(tmp_path, labelled):
    rng = np.random.default_rng(20)
    images = rng.integers(0, 256, size=(2, 3, 16, 20, 3), dtype=np.uint8)
    kw = dict(row_labels=["a", "bb"], col_labels=["t0", "t1", "t2"]) if labelled else {}
    out = plots.image_grid(images, tmp_path / "grid.png", pad=2, **kw)
    assert _is_png(out)
    read = cv2.imread(str(out))
    if labelled:
        assert read.shape[0] > 2 * 16 + 2 and read.shape[1] > 3 * 20 + 2 * 2
        rgb = read[-16:, -20:, ::-1]  # bottom-right tile is unaffected by label margins
    else:
        assert read.shape == (2 * 16 + 2, 3 * 20 + 2 * 2, 3)
        rgb = read[-16:, -20:, ::-1]
    np.testing.assert_array_equal(rgb, images[1, 2])


def test_image_grid_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="images.dtype"):
        plots.image_grid(np.zeros((1, 1, 4, 4, 3), np.float32), tmp_path / "x.png")
    with pytest.raises(ValueError, match="row_labels has 1"):
        plots.image_grid(np.zeros((2, 1, 4, 4, 3), np.uint8), tmp_path / "x.png", row_labels=["a"])


def test_metric_functions_agree_between_numpy_and_torch():
    x, y = _blobs(20, 3, 6, spread=1.0, seed=21)
    for fn in (
        lambda a: metrics.silhouette_score(a, y),
        lambda a: metrics.knn_purity(a, y, k=5),
    ):
        assert fn(x) == pytest.approx(fn(torch.tensor(x)))
    np.testing.assert_allclose(metrics.pca_2d(torch.tensor(x)), metrics.pca_2d(x))


def test_ridge_readout_recovers_a_linear_pose_and_ignores_noise():
    from learner.metrics import ridge_regression_r2

    rng = np.random.default_rng(3)
    pose = rng.normal(size=(600, 3))
    mixing = rng.normal(size=(3, 40))
    features = pose @ mixing + 0.05 * rng.normal(size=(600, 40))
    groups = np.repeat(np.arange(30), 20)
    score = ridge_regression_r2(features[:400], pose[:400], features[400:], pose[400:], train_groups=groups[:400])
    assert score > 0.95
    noise = rng.normal(size=(600, 40))
    assert ridge_regression_r2(noise[:400], pose[:400], noise[400:], pose[400:], train_groups=groups[:400]) < 0.1
    with pytest.raises(ValueError, match="alphas"):
        ridge_regression_r2(features[:400], pose[:400], features[400:], pose[400:], alphas=(0.0,))
