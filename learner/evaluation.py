"""Frozen-encoder evaluation: invariant, equivariant and hierarchical quality of features.

The encoder is frozen and probed on a fixed, seeded set of views (:mod:`agent.probe_views`)
of the training objects (the probes learn there) and of held-out test objects (by-object
split: they are scored there). Invariance is category top-1 of a linear probe and of a
kNN classifier on unseen objects, plus object identity top-1 with a split by episode
within the training objects. Equivariance follows 3DIEBench / SIE: an MLP on the
concatenated features of two views of one episode regresses their relative change
(``relative_pose_r2``, physical units, early-stopped on held-out training objects), and a
ridge readout cross-validated over training objects regresses one view's visible absolute
pose (``absolute_pose_r2``); both are scored per column on test objects, and the
headlines are the means over the columns the action set moves. The hierarchy CIPER
reports (views cluster by object and are ordered by pose inside a cluster) is scored with
silhouette, kNN purity and the Spearman correlation of feature and pose distances among
views of one episode (so that the episode's floor and light cannot score). The shortcut
diagnostic is colour-histogram retrieval of each pair's positive among 64 pairs.

:func:`evaluate_features` is the pure core on given features, so every reference
(``REFERENCES``: the latent state, noise, nuisances, pixels, an untrained encoder) is
scored by the same code as a trained encoder: :func:`evaluate_reference`,
:func:`evaluate_encoder`.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
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
    "shortcut_colour_top1",
)
# Per-column scores sit beside the means as "relative_pose_r2/<column>" and
# "absolute_pose_r2/<column>" (see ``per_column_names``).

# Features the evaluation scores beside every encoder, by the same code (``reference_features``).
REFERENCES: tuple[str, ...] = ("oracle", "noise", "nuisance", "pixels", "random")
NOISE_DIM = 64
RAW_PIXEL_SIDE = 16  # raw pixels are area-downsampled to this side (64x64x3 inputs would dominate the probes)
REFERENCE_MEANING = {
    "oracle": "the true visible latent state (each view's absolute pose, scenery excluded): the ceiling",
    "noise": f"{NOISE_DIM} standard-normal values per view: the floor",
    "nuisance": "the scene's nuisance values only (floor, light; the world's nuisance_state): no structure",
    "pixels": f"raw pixels, {RAW_PIXEL_SIDE}x{RAW_PIXEL_SIDE} area-downsampled",
    "random": "the untrained encoder of train.seed",
}
# Relative-pose probe: one hidden layer, at most POSE_PROBE_ROWS pairs (a seeded subset),
# early-stopped on held-out training objects (``metrics.mlp_r2``). On ObjectView's observer
# actions the oracle's mean R² rises with the pairs and objects it sees: 0.76 from 120 objects
# x 8 views (3,360 pairs), 0.94 from 10,000 pairs of 360 objects x 16 views, 0.96 from all
# 20,160 (which takes ~6x longer to fit); hence this cap and report=objects' probe views.
POSE_PROBE_HIDDEN = (256,)
POSE_PROBE_ROWS = 10_000
POSE_PROBE_PATIENCE = 10
# Neighbours of the kNN purity: fewer than the views of one object, so 1.0 is reachable.
PURITY_K = 10
# Shortcut diagnostic: colour-histogram retrieval of a pair's positive among this many.
SHORTCUT_CANDIDATES = 64
SHORTCUT_PAIRS = 1024


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


def moved_pose_columns(pose: np.ndarray, episode: np.ndarray, names: Sequence[str] = (), nuisances: Sequence[str] = ()) -> np.ndarray:
    """Boolean mask of the absolute-pose columns the actions move: those that change within
    some episode, except columns named in ``nuisances`` (``names`` are the pose columns').

    Those are the latents the action set moves (camera columns for ``camera``, the rotation
    columns for ``object``, all for ``full``); the others are fixed per episode, so the
    actions carry no information about them. A nuisance redrawn at every view (the floor's
    hue) changes within episodes too, but it is scenery, not pose.
    """
    moved = np.zeros(pose.shape[1], dtype=bool)
    for value in np.unique(episode):
        rows = pose[episode == value]
        moved |= np.ptp(rows, axis=0) > 1e-6
    moved &= ~np.isin(np.asarray(list(names) or [""] * pose.shape[1]), list(nuisances))
    if not moved.any():
        raise ValueError("no absolute-pose column changes within an episode: the actions moved nothing")
    return moved


def pose_columns(world: Any, state: np.ndarray, episode: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """The visible pose of each view (N, P) restricted to what the actions move, and its names."""
    pose, names = world.absolute_pose(state), list(world.absolute_pose_names())
    moved = moved_pose_columns(pose, episode, names, world.nuisance_names())
    return pose[:, moved], [n for n, m in zip(names, moved, strict=True) if m]


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
) -> dict[str, float]:
    """Every score of ``METRIC_NAMES`` (but the shortcut, which is about pairs, not features)
    and the per-column pose R^2, for given features of the train and test views.

    ``train_features`` (N_train, D) are features of ``train_views`` (training objects: the
    probes learn there), ``test_features`` (N_test, D) of ``test_views`` (held-out objects:
    the probes are scored there); they can come from anything (an encoder, pixels, the
    latent state). ``env_id`` and ``action_set`` pick the pose encodings; ``probe_epochs``
    caps the early-stopped pose MLP. A score undefined for these views is nan.
    """
    train_x = _checked(train_features, train_views, "train")
    test_x = _checked(test_features, test_views, "test")
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"test_features has {test_x.shape[1]} columns but train_features has {train_x.shape[1]}")
    results: dict[str, float] = dict.fromkeys(METRIC_NAMES, float("nan"))
    results.update(_invariance(train_x, train_views, test_x, test_views, knn_k))
    results.update(_equivariance(train_x, train_views, test_x, test_views, env_id, action_set, probe_epochs, seed))
    results.update(_hierarchy(test_x, test_views, env_id))
    return results


def _invariance(train_x: np.ndarray, train_views: ProbeViews, test_x: np.ndarray, test_views: ProbeViews, knn_k: int) -> dict[str, float]:
    """Category of unseen objects (linear probe, kNN); identity of seen objects in unseen episodes."""
    results = {}
    train_labelled, test_labelled = train_views.category >= 0, test_views.category >= 0
    if np.unique(train_views.category[train_labelled]).size >= 2 and test_labelled.any():
        xtr, ytr = train_x[train_labelled], train_views.category[train_labelled]
        xte, yte = test_x[test_labelled], test_views.category[test_labelled]
        results["category_top1_linear"] = metrics.linear_probe_top1(xtr, ytr, xte, yte)
        results["category_top1_knn"] = metrics.knn_top1(xtr, ytr, xte, yte, k=min(knn_k, len(xtr)))
    side = identity_split(train_views)
    if np.unique(train_views.object_index[side]).size >= 2 and (~side).any():
        results["identity_top1_linear"] = metrics.linear_probe_top1(
            train_x[side], train_views.object_index[side], train_x[~side], train_views.object_index[~side]
        )
    return results


def _equivariance(
    train_x: np.ndarray, train_views: ProbeViews, test_x: np.ndarray, test_views: ProbeViews,
    env_id: str, action_set: str, probe_epochs: int, seed: int,
) -> dict[str, float]:  # fmt: skip
    """Per-column R^2 of the relative change between two views of an episode (3DIEBench /
    SIE: an MLP on both views' features, physical units) and of one view's absolute pose
    (a ridge readout); the headline is the mean over the columns the actions move."""
    world = envs.world_module(env_id)
    train_a, train_b = episode_pairs(train_views.episode)
    keep = _subset(train_a.size, POSE_PROBE_ROWS, seed)
    train_a, train_b = train_a[keep], train_b[keep]
    test_a, test_b = episode_pairs(test_views.episode)
    relative = metrics.mlp_r2(
        np.hstack([train_x[train_a], train_x[train_b]]),
        world.relative_change(train_views.state[train_a], train_views.state[train_b], action_set),
        np.hstack([test_x[test_a], test_x[test_b]]),
        world.relative_change(test_views.state[test_a], test_views.state[test_b], action_set),
        train_groups=train_views.object_index[train_a], hidden=POSE_PROBE_HIDDEN,
        max_epochs=probe_epochs, patience=POSE_PROBE_PATIENCE, seed=seed,
    )  # fmt: skip
    train_pose, absolute_names = pose_columns(world, train_views.state, train_views.episode)
    moved = np.isin(list(world.absolute_pose_names()), absolute_names)
    # A linear readout (penalty cross-validated over training objects), in closed form.
    absolute = metrics.ridge_r2(
        train_x, train_pose, test_x, world.absolute_pose(test_views.state)[:, moved],
        train_groups=train_views.object_index,
    )  # fmt: skip
    relative_names = [d.name for d in world.action_dims(action_set)]
    return {
        "relative_pose_r2": float(np.mean(relative)),
        "absolute_pose_r2": float(np.mean(absolute)),
        **{f"relative_pose_r2/{n}": float(v) for n, v in zip(relative_names, relative, strict=True)},
        **{f"absolute_pose_r2/{n}": float(v) for n, v in zip(absolute_names, absolute, strict=True)},
    }


def _hierarchy(test_x: np.ndarray, test_views: ProbeViews, env_id: str) -> dict[str, float]:
    """Held-out views cluster by object (silhouette, kNN purity) and, inside one episode
    (so the episode's floor and light cannot score), are ordered by pose."""
    results = {}
    objects = test_views.object_index
    if 2 <= np.unique(objects).size <= len(objects) - 1:
        results["object_silhouette"] = metrics.silhouette_score(test_x, objects, metric="cosine")
        k = min(PURITY_K, int(np.unique(objects, return_counts=True)[1].min()) - 1)
        if k >= 1:
            results["object_knn_purity"] = metrics.knn_purity(test_x, objects, k=k, metric="cosine")
    pose, _ = pose_columns(envs.world_module(env_id), test_views.state, test_views.episode)
    try:
        results["within_object_pose_spearman"] = metrics.within_group_pose_correlation(
            test_x, pose, test_views.episode, metric="cosine"
        )
    except ValueError:
        pass  # no episode with >= 3 views of varying pose: stays nan
    return results


def per_column_names(results: dict[str, float]) -> list[str]:
    """The per-column keys ("relative_pose_r2/<column>" ...) of an evaluation's results."""
    return [key for key in results if "/" in key]


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


# ---------------------------------------------------------------- references and shortcut


def pixel_features(views: np.ndarray, side: int = RAW_PIXEL_SIDE) -> np.ndarray:
    """Raw-pixel features: each uint8 view area-downsampled to side x side, in [0, 1], flattened."""
    small = [cv2.resize(v, (side, side), interpolation=cv2.INTER_AREA) for v in views]
    return np.stack(small).reshape(len(views), -1).astype(np.float32) / 255.0


def reference_features(name: str, views: ProbeViews, env_id: str, seed: int, encoder: nn.Module | None = None) -> np.ndarray:
    """Features of ``views`` for the reference ``name`` (see ``REFERENCE_MEANING``);
    ``random`` needs the untrained ``encoder``, ``noise`` draws from ``seed``."""
    world = envs.world_module(env_id)
    if name == "oracle":  # the visible pose, without the scenery's columns (floor hue)
        visible = ~np.isin(list(world.absolute_pose_names()), list(world.nuisance_names()))
        return world.absolute_pose(views.state)[:, visible].astype(np.float32)
    if name == "noise":
        return np.random.default_rng(seed).standard_normal((len(views), NOISE_DIM)).astype(np.float32)
    if name == "nuisance":
        return np.asarray(world.nuisance_state(views.state), dtype=np.float32)
    if name == "pixels":
        return pixel_features(views.views)
    if name == "random":
        if encoder is None:
            raise ValueError("reference 'random' needs the untrained encoder: pass encoder=")
        return extract_features(encoder, views.views)
    raise ValueError(f"reference={name!r}: expected one of {list(REFERENCES)}")


def untrained_model(cfg: Any) -> nn.Module:
    """The model a run of ``cfg`` starts from: seeded as ``learner.train`` seeds it."""
    from learner.checkpoint import architecture_of, model_from_architecture
    from learner.pair_sources import relative_action_dim

    torch.manual_seed(cfg.train.seed)
    return model_from_architecture(architecture_of(cfg, relative_action_dim(cfg.env)))


def shortcut_colour_top1(views_a: np.ndarray, views_b: np.ndarray) -> float:
    """Positive retrieval top-1 of colour histograms over pairs (uint8 views a and b, in
    training order): how much of the contrastive task colour alone solves (chance 1/64)."""
    candidates = min(SHORTCUT_CANDIDATES, len(views_a))
    return metrics.positive_retrieval_top1(metrics.colour_histograms(views_a), metrics.colour_histograms(views_b), candidates)


def probe_pairs_shortcut(cfg: Any, views: ProbeViews) -> float:
    """The shortcut diagnostic on pairs of ``views`` drawn as ``cfg.method`` trains: the
    same step offsets (``learner.pair_sources.pair_offsets``) and augmentations."""
    from learner.augment import ViewAugmentation, augmentation_spec, to_float_images
    from learner.pair_sources import pair_offsets

    low, high = pair_offsets(cfg)
    a, b = pairs_within(views.episode, views.step, low, high)
    if a.size < 2:
        return float("nan")
    pick = np.random.default_rng(cfg.eval.seed).choice(a.size, min(SHORTCUT_PAIRS, a.size), replace=False)
    stacked = np.concatenate([views.views[a[pick]], views.views[b[pick]]])
    world = envs.world_module(cfg.env.id)
    spec = augmentation_spec(cfg.method, [d.name for d in world.action_dims(cfg.env.action_set)], cfg.env.action_set)
    if spec is not None:
        images, _ = ViewAugmentation(spec, cfg.env.image_size, cfg.eval.seed)(to_float_images(torch.from_numpy(stacked)))
        stacked = (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    return shortcut_colour_top1(stacked[: pick.size], stacked[pick.size :])


def pairs_within(episode: np.ndarray, step: np.ndarray, low: int, high: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows (a, b) of views of one episode with ``low <= step[b] - step[a] <= high``."""
    a, b = episode_pairs(episode)
    if low == 0:  # a view paired with itself (SimCLR's two copies of one view)
        rows = np.arange(len(episode))
        a, b = np.concatenate([rows, a]), np.concatenate([rows, b])
    offset = step[b] - step[a]
    keep = (offset >= low) & (offset <= high)
    return a[keep], b[keep]


# ---------------------------------------------------------------- the entry points


def render_probes(env_cfg: Any, eval_cfg: Any, objects_limit: int | None = None) -> tuple[ProbeViews, ProbeViews]:
    """The train-split and test-split probe views of ``eval_cfg`` (cached per process)."""
    if objects_limit is None:
        objects_limit = eval_cfg.get("objects_limit") if hasattr(eval_cfg, "get") else getattr(eval_cfg, "objects_limit", None)
    return tuple(
        render_probe_views(env_cfg, str(split), eval_cfg.views_per_object, eval_cfg.seed, objects_limit=objects_limit)
        for split in (eval_cfg.train_split, eval_cfg.test_split)
    )  # type: ignore[return-value]


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
    (default ``eval_cfg.objects_limit``) evaluates on at most that many objects per split.
    With ``out_dir`` and ``eval_cfg.plots`` the test-view embedding is drawn to
    ``out_dir/embedding_test_objects.png``. Returns the scores of ``evaluate_features``.
    """
    train_views, test_views = render_probes(env_cfg, eval_cfg, objects_limit)
    train_x = extract_features(model, train_views.views, device=torch.device(device))
    test_x = extract_features(model, test_views.views, device=torch.device(device))
    return _evaluate_and_plot(train_x, train_views, test_x, test_views, env_cfg, eval_cfg, out_dir)


def evaluate_reference(name: str, cfg: Any, out_dir: Path | None = None) -> dict[str, float]:
    """Score reference ``name`` (``REFERENCES``) with the code every encoder goes through,
    on the probe views of ``cfg.env`` / ``cfg.eval``, with the shortcut diagnostic of
    ``cfg.method``'s pairs."""
    train_views, test_views = render_probes(cfg.env, cfg.eval)
    encoder = untrained_model(cfg) if name == "random" else None
    seed = cfg.eval.seed
    features = [reference_features(name, views, cfg.env.id, seed + k, encoder) for k, views in enumerate((train_views, test_views))]
    results = _evaluate_and_plot(features[0], train_views, features[1], test_views, cfg.env, cfg.eval, out_dir)
    results["shortcut_colour_top1"] = probe_pairs_shortcut(cfg, train_views)
    return results


def _evaluate_and_plot(train_x, train_views, test_x, test_views, env_cfg: Any, eval_cfg: Any, out_dir: Path | None) -> dict[str, float]:
    results = evaluate_features(
        train_x, train_views, test_x, test_views, env_cfg.id, env_cfg.action_set,
        probe_epochs=eval_cfg.probe_epochs, knn_k=eval_cfg.knn_k, seed=eval_cfg.seed,
    )  # fmt: skip
    if out_dir is not None and eval_cfg.plots and test_x.shape[1] >= 2:
        plot_test_embedding(test_x, test_views, env_cfg.id, env_cfg.action_set,
                            Path(out_dir) / "embedding_test_objects.png", category_names(env_cfg))  # fmt: skip
    return results


def main_pose_latent(state: np.ndarray, episode: np.ndarray, env_id: str, action_set: str) -> tuple[str, np.ndarray]:
    """Name and values of the latent that best shows pose order in a plot: the viewpoint
    azimuth in the object's frame where the world defines one (3D objects: which side is
    in view), else the state field of the action set's first dimension (crop x ...) or the
    first absolute-pose column the actions move."""
    world = envs.world_module(env_id)
    viewpoint = world.viewpoint_latent(state, action_set)
    if viewpoint is not None:
        return viewpoint
    first = world.action_dims(action_set)[0].name
    if first in world.STATE_INDEX:
        return first, np.asarray(state)[:, world.STATE_INDEX[first]].astype(np.float64)
    pose, names = pose_columns(world, state, episode)
    return names[0], pose[:, 0].astype(np.float64)


def category_names(env_cfg: Any) -> tuple[str, ...] | None:
    """The catalogue's category names by label index (ObjectView), None elsewhere."""
    if env_cfg.id != envs.OBJECT_VIEW_ID:
        return None
    from envs.catalog import load_catalog

    return load_catalog(env_cfg.catalog).categories


def plot_test_embedding(
    features: np.ndarray, probe: ProbeViews, env_id: str, action_set: str, path: Path,
    names: Sequence[str] | None = None,
) -> Path:  # fmt: skip
    """PCA of test-view features (axes labelled with the variance they explain), coloured by
    object, by category (``names`` by label index) and by the main pose latent."""
    name, values = main_pose_latent(probe.state, probe.episode, env_id, action_set)
    # Wrapping angles get a cyclic colormap, so -pi and pi share a colour.
    cyclic = [name] if any(word in name for word in ("azimuth", "rotation", "hue")) else []
    categories = probe.category if names is None else np.array([names[c] if c >= 0 else "(none)" for c in probe.category])
    points, explained = metrics.pca_2d_explained(features)
    return embedding_plot(
        points,
        {"object": probe.object_index, "category": categories, name: values},
        path,
        title="test objects (held out)",
        cyclic=cyclic,
        axis_labels=(f"PC1 ({explained[0]:.0%} of variance)", f"PC2 ({explained[1]:.0%})"),
    )
