"""The evaluation's entry points: render the probe views once, score an encoder or a reference.

:func:`evaluate_encoder` freezes a model's encoder and scores its features of a fixed,
seeded set of probe views (:mod:`agent.probe_views`, cached per process, so every method of
a report sees the same views) with :func:`learner.evaluation.scores.evaluate_features`;
:func:`evaluate_reference` puts a reference's features through the same code, with the
shortcut diagnostic of the method's pairs. Both draw the held-out embedding as a PNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from agent.iebench_dataset import read_probe_views
from agent.probe_views import ProbeViews, render_probe_views
from conf.app_common import resolve_path
from conf.validate import ConfigError
from envs import IEBENCH_ID
from envs.world import World
from learner.evaluation import metrics
from learner.evaluation.features import extract_features
from learner.evaluation.plots import embedding_plot
from learner.evaluation.references import reference_features, untrained_model
from learner.evaluation.scores import evaluate_features, pose_columns
from learner.evaluation.shortcut import probe_pairs_shortcut


def render_probes(env_cfg: Any, eval_cfg: Any, objects_limit: int | None = None) -> tuple[ProbeViews, ProbeViews]:
    """The train-split and test-split probe views of ``eval_cfg`` (cached per process):
    rendered by the env, or for the recorded 3DIEBench world read from the split lists of its
    folder ``env_cfg.catalog`` (``test`` is SIE's ``val`` where the folder has no test list)."""
    if objects_limit is None:
        objects_limit = eval_cfg.get("objects_limit") if hasattr(eval_cfg, "get") else getattr(eval_cfg, "objects_limit", None)
    if env_cfg.id == IEBENCH_ID:
        if env_cfg.catalog is None:
            raise ConfigError(f"env.id={IEBENCH_ID} needs env.catalog=<3DIEBench folder>: its probe views come from its split lists")
        return tuple(
            read_probe_views(str(resolve_path(env_cfg.catalog)), str(split), env_cfg.image_size, eval_cfg.views_per_object,
                             eval_cfg.seed, objects_limit)  # fmt: skip
            for split in (eval_cfg.train_split, eval_cfg.test_split)
        )  # type: ignore[return-value]
    return tuple(
        render_probe_views(env_cfg, str(split), eval_cfg.views_per_object, eval_cfg.seed, objects_limit=objects_limit)
        for split in (eval_cfg.train_split, eval_cfg.test_split)
    )  # type: ignore[return-value]


def evaluate_encoder(
    model: nn.Module,
    world: World,
    env_cfg: Any,
    eval_cfg: Any,
    device: str | torch.device,
    out_dir: Path | None = None,
    objects_limit: int | None = None,
) -> dict[str, float]:
    """Evaluate ``model``'s frozen encoder on probe views of ``world`` (the world of ``env_cfg.id``).

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
    return _evaluate_and_plot(train_x, train_views, test_x, test_views, world, env_cfg, eval_cfg, out_dir)


def evaluate_reference(name: str, cfg: Any, world: World, out_dir: Path | None = None) -> dict[str, float]:
    """Score reference ``name`` (``REFERENCES``) with the code every encoder goes through,
    on the probe views of ``cfg.env`` / ``cfg.eval``, with the shortcut diagnostic of
    ``cfg.method``'s pairs."""
    train_views, test_views = render_probes(cfg.env, cfg.eval)
    encoder = untrained_model(cfg, world) if name == "random" else None
    seed = cfg.eval.seed
    features = [reference_features(name, views, world, seed + k, encoder) for k, views in enumerate((train_views, test_views))]
    results = _evaluate_and_plot(features[0], train_views, features[1], test_views, world, cfg.env, cfg.eval, out_dir)
    results["shortcut_colour_top1"] = probe_pairs_shortcut(cfg, world, train_views)
    return results


def _evaluate_and_plot(
    train_x: np.ndarray, train_views: ProbeViews, test_x: np.ndarray, test_views: ProbeViews,
    world: World, env_cfg: Any, eval_cfg: Any, out_dir: Path | None,
) -> dict[str, float]:  # fmt: skip
    results = evaluate_features(
        train_x, train_views, test_x, test_views, world, env_cfg.action_set,
        probe_epochs=eval_cfg.probe_epochs, knn_k=eval_cfg.knn_k, seed=eval_cfg.seed,
    )  # fmt: skip
    if out_dir is not None and eval_cfg.plots and test_x.shape[1] >= 2:
        plot_test_embedding(test_x, test_views, world, env_cfg.action_set,
                            Path(out_dir) / "embedding_test_objects.png", world.category_names(env_cfg.catalog))  # fmt: skip
    return results


def main_pose_latent(state: np.ndarray, episode: np.ndarray, world: World, action_set: str) -> tuple[str, np.ndarray]:
    """Name and values of the latent that best shows pose order in a plot: the viewpoint
    azimuth in the object's frame where the world defines one (3D objects: which side is
    in view), else the state field of the action set's first dimension (crop x ...) or the
    first absolute-pose column the actions move."""
    viewpoint = world.viewpoint_latent(state, action_set)
    if viewpoint is not None:
        return viewpoint
    first = world.action_dims(action_set)[0].name
    if first in world.STATE_INDEX:
        return first, np.asarray(state)[:, world.STATE_INDEX[first]].astype(np.float64)
    pose, names = pose_columns(world, state, episode)
    return names[0], pose[:, 0].astype(np.float64)


def plot_test_embedding(
    features: np.ndarray, probe: ProbeViews, world: World, action_set: str, path: Path,
    names: Sequence[str] | None = None,
) -> Path:  # fmt: skip
    """PCA of test-view features (axes labelled with the variance they explain), coloured by
    object, by category (``names`` by label index) and by the main pose latent."""
    name, values = main_pose_latent(probe.state, probe.episode, world, action_set)
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
