"""The colour-shortcut diagnostic: can colour alone tell a pair's positive from the negatives?

If the two views of a positive pair share something trivial that no negative shares (the
episode's floor or light colour, the object's tint), the contrastive loss is solved without
learning shape; SimCLR's colour jitter and grayscale exist for this reason. The diagnostic
retrieves each pair's view b among the b views of 64 pairs with a 4x4x4 RGB histogram of view
a (chance 1/64): the training run measures it on the first pairs it trained on, as augmented,
and the evaluation on pairs of probe views drawn as the method draws them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from agent.probe_views import ProbeViews, pairs_within
from envs.world import World
from learner.data.augment import ViewAugmentation, augmentation_spec
from learner.data.images import to_float_images, to_uint8_views
from learner.data.pair_sources import pair_offsets
from learner.evaluation.metrics import ArrayLike, as_features

SHORTCUT_CANDIDATES = 64  # a pair's positive is retrieved among this many
SHORTCUT_PAIRS = 1024  # pairs the diagnostic looks at


def colour_histograms(views_uint8: np.ndarray, bins: int = 4) -> np.ndarray:
    """Joint RGB histograms (N, bins^3) of uint8 views (N, H, W, 3), each summing to 1."""
    views = np.asarray(views_uint8)
    if views.ndim != 4 or views.shape[-1] != 3 or views.dtype != np.uint8:
        raise ValueError(f"views of shape {views.shape} and dtype {views.dtype}: expected uint8 (N, H, W, 3)")
    level = (views.astype(np.int64) * bins) // 256  # (N, H, W, 3) in 0..bins-1
    code = (level[..., 0] * bins + level[..., 1]) * bins + level[..., 2]  # (N, H, W)
    counts = np.stack([np.bincount(c.ravel(), minlength=bins**3) for c in code]).astype(np.float64)
    return counts / counts.sum(1, keepdims=True)


def positive_retrieval_top1(features_a: ArrayLike, features_b: ArrayLike, candidates: int = 64) -> float:
    """Fraction of pairs whose view b is the nearest (cosine) to its view a among the b views
    of ``candidates`` pairs (consecutive blocks; chance 1 / candidates). Applied to colour
    histograms it measures how far colour alone solves the contrastive task."""
    a, b = as_features(features_a, "features_a"), as_features(features_b, "features_b")
    if a.shape != b.shape:
        raise ValueError(f"features_a.shape={a.shape}, features_b.shape={b.shape}: expected equal")
    if not 2 <= candidates <= len(a):
        raise ValueError(f"candidates={candidates}: expected 2 <= candidates <= pairs ({len(a)})")
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    hits = []
    for start in range(0, len(a) - candidates + 1, candidates):
        block = a[start : start + candidates] @ b[start : start + candidates].T  # (C, C)
        hits.append(block.argmax(1) == np.arange(candidates))
    return float(np.concatenate(hits).mean())


def shortcut_colour_top1(views_a: np.ndarray, views_b: np.ndarray) -> float:
    """Positive retrieval top-1 of colour histograms over pairs (uint8 views a and b, in
    training order): how much of the contrastive task colour alone solves (chance 1/64)."""
    candidates = min(SHORTCUT_CANDIDATES, len(views_a))
    return positive_retrieval_top1(colour_histograms(views_a), colour_histograms(views_b), candidates)


def probe_pairs_shortcut(cfg: Any, world: World, views: ProbeViews) -> float:
    """The shortcut diagnostic on pairs of ``views`` drawn as ``cfg.method`` trains: the
    same step offsets (``learner.data.pair_sources.pair_offsets``) and augmentations."""
    low, high = pair_offsets(cfg)
    a, b = pairs_within(views.episode, views.step, low, high)
    if a.size < 2:
        return float("nan")
    pick = np.random.default_rng(cfg.eval.seed).choice(a.size, min(SHORTCUT_PAIRS, a.size), replace=False)
    stacked = np.concatenate([views.views[a[pick]], views.views[b[pick]]])
    spec = augmentation_spec(cfg.method, [d.name for d in world.action_dims(cfg.env.action_set)], cfg.env.action_set)
    if spec is not None:
        images, _ = ViewAugmentation(spec, cfg.env.image_size, cfg.eval.seed)(to_float_images(torch.from_numpy(stacked)))
        stacked = to_uint8_views(images)
    return shortcut_colour_top1(stacked[: pick.size], stacked[pick.size :])
