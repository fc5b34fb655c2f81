"""Frozen-encoder evaluation: invariant, equivariant and hierarchical quality of features.

The encoder is frozen and probed on a fixed, seeded set of views (:mod:`agent.probe_views`)
of the training objects (the probes learn there) and of held-out test objects (by-object
split: they are scored there). Invariance is category top-1 of a linear probe and of a
kNN classifier on unseen objects, plus object identity top-1 with a split by episode
within the training objects. Equivariance follows 3DIEBench / SIE: an MLP on the
concatenated features of two views of one episode regresses their relative action
(``relative_pose_r2``, the change in physical units), and a cross-validated linear ridge
readout of one view's features regresses its visible absolute pose restricted to what the
action set moves (``absolute_pose_r2``), both trained on training objects and scored
(R^2) on test objects. The hierarchy CIPER reports (views cluster by object and are
ordered by pose inside a cluster) is scored on test views with silhouette, kNN purity and
the within-object Spearman correlation of feature and pose distances.
:func:`evaluate_features` is the pure core on given features, so raw pixels or an
untrained encoder are scored by the same code; :func:`evaluate_encoder` renders (once per
process) the views, extracts features and calls it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import envs
from agent.probe_views import ProbeViews, render_probe_views
from learner import metrics
from learner.augment import to_float_images
from learner.normalization import IMAGE_MEAN, IMAGE_STD
from learner.plots import embedding_plot

METRIC_NAMES: tuple[str, ...] = (
    "category_top1_linear",
    "category_top1_knn",
    "identity_top1_linear",
    "relative_pose_r2",
    "absolute_pose_r2",
    "object_silhouette",
    "object_knn_purity",
    "within_object_pose_spearman",
)

# Pose regressors: one hidden layer, narrower than SIE's 1024, trained on at most
# POSE_PROBE_ROWS rows (a seeded subset of the views or pairs), so that probe_epochs (200)
# passes fit in a CPU minute and do not grow with the catalogue; the ranking of encoders,
# not the absolute R^2, is what the comparison needs. Without weight decay these probes
# overfit a few thousand rows and score held-out objects below zero (measured: R^2 -0.24
# for raw pixels and a random encoder alike); 0.1 lifts those to ~0.1 but caps exact pose
# features at ~0.1 too, 0.01 keeps both sensible (~0 and ~0.6-0.7).
POSE_PROBE_HIDDEN = (256,)
POSE_PROBE_BATCH = 512
POSE_PROBE_ROWS = 4096
POSE_PROBE_WEIGHT_DECAY = 0.01
# Neighbours of the kNN purity: fewer than the views of one object, so 1.0 is reachable.
PURITY_K = 10


def extract_features(
    model: nn.Module,
    views_uint8: np.ndarray,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Frozen features (float32 (N, D) numpy) of uint8 views (N, H, W, 3).

    ``model`` is a :class:`learner.model.CiperModel` (its ``encode`` is used) or a bare
    encoder. Images are scaled and standardised exactly as the training loop does
    (``learner.normalization``). Runs in eval mode (BatchNorm uses its running statistics)
    under ``torch.inference_mode`` on ``device`` (default: where the model's parameters
    are); the model's train/eval mode is restored afterwards.
    """
    views = np.asarray(views_uint8)
    if views.ndim != 4 or views.shape[-1] != 3 or views.dtype != np.uint8:
        raise ValueError(f"views of shape {views.shape} and dtype {views.dtype}: expected uint8 (N, H, W, 3)")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: expected >= 1")
    if device is None:
        device = next(model.parameters()).device
    encode = model.encode if hasattr(model, "encode") else model
    was_training = model.training
    model.eval()
    chunks = []
    try:
        with torch.inference_mode():
            for start in range(0, views.shape[0], batch_size):
                # A copy: probe views are read-only arrays, which torch cannot wrap.
                batch = torch.from_numpy(np.array(views[start : start + batch_size])).to(device)
                images = to_float_images(batch, IMAGE_MEAN, IMAGE_STD)
                chunks.append(encode(images).float().cpu().numpy())
    finally:
        model.train(was_training)
    if not chunks:
        raise ValueError("views has 0 rows: expected at least one view")
    return np.concatenate(chunks)


# ---------------------------------------------------------------- targets from probe views


def episode_pairs(episode: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (a, b) of every ordered pair of views of one episode, a earlier than b.

    Assumes rows of an episode are contiguous and in step order (as rendered), so every
    temporal offset 1..length-1 appears.
    """
    firsts, seconds = [], []
    for value in np.unique(episode):
        rows = np.flatnonzero(episode == value)
        i, j = np.triu_indices(rows.size, 1)
        firsts.append(rows[i])
        seconds.append(rows[j])
    return np.concatenate(firsts), np.concatenate(seconds)


def moved_pose_columns(pose: np.ndarray, episode: np.ndarray) -> np.ndarray:
    """Boolean mask of the absolute-pose columns that change within some episode.

    Those are the latents the action set moves (camera columns for ``camera``, the rotation
    columns for ``object``, all for ``full``); the others are fixed per episode, so the
    actions carry no information about them and regressing them would measure something else.
    """
    moved = np.zeros(pose.shape[1], dtype=bool)
    for value in np.unique(episode):
        rows = pose[episode == value]
        moved |= np.ptp(rows, axis=0) > 1e-6
    if not moved.any():
        raise ValueError("no absolute-pose column changes within an episode: the actions moved nothing")
    return moved


def identity_split(probe: ProbeViews) -> np.ndarray:
    """True for views that train the identity probe, False for those that test it.

    Within each object, alternate episodes go to each side, so the test views are new
    poses of known objects; an object with a single episode alternates by step instead.
    """
    train = np.zeros(len(probe), dtype=bool)
    for obj in np.unique(probe.object_index):
        rows = np.flatnonzero(probe.object_index == obj)
        episodes = np.unique(probe.episode[rows])
        if episodes.size >= 2:
            rank = np.searchsorted(episodes, probe.episode[rows])
            train[rows] = rank % 2 == 0
        else:
            train[rows] = probe.step[rows] % 2 == 0
    return train


# ---------------------------------------------------------------- the pure core


def evaluate_features(
    train_features: np.ndarray,
    train_views: ProbeViews,
    test_features: np.ndarray,
    test_views: ProbeViews,
    env_id: str,
    action_set: str,
    *,
    probe_epochs: int,
    knn_k: int,
    seed: int,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Every metric of ``METRIC_NAMES`` for given features of the train and test views.

    ``train_features`` (N_train, D) are features of ``train_views`` (training objects:
    the probes learn on them), ``test_features`` (N_test, D) of ``test_views`` (held-out
    objects: the probes are scored on them); the features can come from any source (an
    encoder, raw pixels). ``env_id`` and ``action_set`` pick the relative-action and pose
    encodings (:func:`envs.world_module`). Probes are seeded by ``seed``; ``probe_epochs``
    sets L-BFGS iterations of the linear probes and epochs of the pose MLPs. A metric that
    is undefined for these views (e.g. no categories) is nan.
    """
    train_x = _checked(train_features, train_views, "train")
    test_x = _checked(test_features, test_views, "test")
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"test_features has {test_x.shape[1]} columns but train_features has {train_x.shape[1]}")
    world = envs.world_module(env_id)
    probe_kw: dict[str, Any] = {"seed": seed, "device": device}
    regressor_kw = {
        **probe_kw, "epochs": probe_epochs, "hidden": POSE_PROBE_HIDDEN,
        "batch_size": POSE_PROBE_BATCH, "weight_decay": POSE_PROBE_WEIGHT_DECAY,
    }  # fmt: skip
    results: dict[str, float] = dict.fromkeys(METRIC_NAMES, float("nan"))

    # Invariance: category of unseen objects; identity of seen objects in unseen episodes.
    train_labelled = train_views.category >= 0
    test_labelled = test_views.category >= 0
    if np.unique(train_views.category[train_labelled]).size >= 2 and test_labelled.any():
        xtr, ytr = train_x[train_labelled], train_views.category[train_labelled]
        xte, yte = test_x[test_labelled], test_views.category[test_labelled]
        results["category_top1_linear"] = metrics.linear_probe_top1(xtr, ytr, xte, yte, epochs=probe_epochs, **probe_kw)
        k = min(knn_k, xtr.shape[0])
        results["category_top1_knn"] = metrics.knn_top1(xtr, ytr, xte, yte, k=k, device=device)
    side = identity_split(train_views)
    if np.unique(train_views.object_index[side]).size >= 2 and (~side).any():
        results["identity_top1_linear"] = metrics.linear_probe_top1(
            train_x[side], train_views.object_index[side], train_x[~side], train_views.object_index[~side],
            epochs=probe_epochs, **probe_kw,
        )  # fmt: skip

    # Equivariance: relative action of two views of one episode; absolute pose of one view.
    # The relative target is the change in physical units (wrapped angle deltas, rotation
    # vector), not the sin/cos learning encoding: over a few steps cos(d azimuth) barely
    # varies, and averaging R^2 over columns would score that column near 0 even for exact
    # features.
    train_a, train_b = episode_pairs(train_views.episode)
    keep = _subset(train_a.size, POSE_PROBE_ROWS, seed)
    train_a, train_b = train_a[keep], train_b[keep]
    test_a, test_b = episode_pairs(test_views.episode)
    results["relative_pose_r2"] = metrics.relative_pose_r2(
        train_x[train_a], train_x[train_b],
        world.relative_change(train_views.state[train_a], train_views.state[train_b], action_set),
        test_x[test_a], test_x[test_b],
        world.relative_change(test_views.state[test_a], test_views.state[test_b], action_set),
        **regressor_kw,
    )  # fmt: skip
    moved = moved_pose_columns(world.absolute_pose(train_views.state), train_views.episode)
    train_pose = world.absolute_pose(train_views.state)[:, moved]
    test_pose = world.absolute_pose(test_views.state)[:, moved]
    # A linear readout (penalty cross-validated over training objects): an MLP on a few
    # thousand views memorises the training objects' poses and scores below 0 on new ones.
    results["absolute_pose_r2"] = metrics.ridge_regression_r2(
        train_x, train_pose, test_x, test_pose, train_groups=train_views.object_index
    )

    # Hierarchy on held-out objects: clusters by object, ordered by pose inside a cluster.
    objects = test_views.object_index
    if 2 <= np.unique(objects).size <= len(objects) - 1:
        results["object_silhouette"] = metrics.silhouette_score(test_x, objects, metric="cosine", device=device)
        k = min(PURITY_K, int(np.bincount(np.unique(objects, return_inverse=True)[1]).min()) - 1)
        if k >= 1:
            results["object_knn_purity"] = metrics.knn_purity(test_x, objects, k=k, metric="cosine", device=device)
    try:
        results["within_object_pose_spearman"] = metrics.within_group_pose_correlation(
            test_x, test_pose, objects, seed=seed, metric="cosine"
        )
    except ValueError:
        pass  # no object with >= 3 views of varying pose: stays nan
    return results


def _subset(n: int, limit: int, seed: int) -> np.ndarray:
    """Sorted row indices of a seeded random subset of at most ``limit`` of ``n`` rows."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def _checked(features: np.ndarray, probe: ProbeViews, name: str) -> np.ndarray:
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] != len(probe):
        raise ValueError(f"{name}_features.shape={x.shape}: expected ({len(probe)}, D), one row per {name} view")
    return x


# ---------------------------------------------------------------- the encoder entry point


def evaluate_encoder(
    model: nn.Module,
    env_cfg: Any,
    eval_cfg: Any,
    device: str | torch.device,
    out_dir: Path | None = None,
    objects_limit: int | None = None,
) -> dict[str, float]:
    """Evaluate ``model``'s frozen encoder on probe views of ``env_cfg``'s world.

    ``env_cfg`` and ``eval_cfg`` are ``conf.schema.EnvConfig`` / ``EvalConfig``-like: the
    views are ``eval_cfg.views_per_object`` per object of ``eval_cfg.train_split`` and
    ``eval_cfg.test_split`` at ``env_cfg.image_size``, rendered with ``eval_cfg.seed`` (and
    cached per process, so every method of a report sees the same views). ``objects_limit``
    (default ``eval_cfg.objects_limit``) evaluates on at most that many objects per split. With ``out_dir``
    and ``eval_cfg.plots`` the test-view embedding is drawn to
    ``out_dir/embedding_test_objects.png``. Returns ``METRIC_NAMES`` -> float.
    """
    device = torch.device(device)
    if objects_limit is None:
        objects_limit = eval_cfg.get("objects_limit") if hasattr(eval_cfg, "get") else getattr(eval_cfg, "objects_limit", None)
    probes = {
        split: render_probe_views(env_cfg, split, int(eval_cfg.views_per_object), int(eval_cfg.seed), objects_limit=objects_limit)
        for split in (str(eval_cfg.train_split), str(eval_cfg.test_split))
    }
    train_views, test_views = probes[str(eval_cfg.train_split)], probes[str(eval_cfg.test_split)]
    train_x = extract_features(model, train_views.views, device=device)
    test_x = extract_features(model, test_views.views, device=device)
    results = evaluate_features(
        train_x, train_views, test_x, test_views, str(env_cfg.id), str(env_cfg.action_set),
        probe_epochs=int(eval_cfg.probe_epochs), knn_k=int(eval_cfg.knn_k), seed=int(eval_cfg.seed), device=device,
    )  # fmt: skip
    if out_dir is not None and eval_cfg.plots:
        plot_test_embedding(test_x, test_views, str(env_cfg.id), str(env_cfg.action_set), Path(out_dir) / "embedding_test_objects.png")
    return results


def main_pose_latent(state: np.ndarray, episode: np.ndarray, env_id: str, action_set: str) -> tuple[str, np.ndarray]:
    """Name and values of the latent that best shows pose order in a plot: the viewpoint
    azimuth in the object's frame where the world defines one (3D objects: which side is
    in view), else the state field of the action set's first dimension (crop x ...) or the
    first absolute-pose column the actions move."""
    world = envs.world_module(env_id)
    if hasattr(world, "viewpoint_azimuth") and action_set in ("camera", "object", "full"):
        return "viewpoint_azimuth", world.viewpoint_azimuth(state)
    first = world.action_dims(action_set)[0].name
    if first in world.STATE_INDEX:
        return first, np.asarray(state)[:, world.STATE_INDEX[first]].astype(np.float64)
    pose = world.absolute_pose(state)
    column = int(np.flatnonzero(moved_pose_columns(pose, episode))[0])
    return world.ABSOLUTE_POSE_NAMES[column], pose[:, column].astype(np.float64)


def plot_test_embedding(features: np.ndarray, probe: ProbeViews, env_id: str, action_set: str, path: Path) -> Path:
    """PCA of test-view features, coloured by object, by category and by the main pose latent."""
    name, values = main_pose_latent(probe.state, probe.episode, env_id, action_set)
    # Wrapping angles get a cyclic colormap, so -pi and pi share a colour.
    cyclic = [name] if any(word in name for word in ("azimuth", "rotation", "hue")) else []
    return embedding_plot(
        metrics.pca_2d(features),
        {"object": probe.object_index, "category": probe.category, name: values},
        path,
        title="test objects (held out)",
        cyclic=cyclic,
    )
