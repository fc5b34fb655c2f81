"""References: features scored beside every encoder by the same evaluation code.

Every probe score is only worth reading beside what the true latent state scores (the
ceiling) and what features without information score (the floor): ``oracle`` is each view's
visible absolute pose, ``noise`` standard-normal numbers, ``nuisance`` the scene's nuisance
values only, ``pixels`` downsampled raw pixels and ``random`` the untrained encoder a run
starts from.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from agent.probe_views import ProbeViews
from conf.schema import CiperConfig
from conf.typed import typed_config
from envs.world import World, visible_pose
from learner.data.targets import run_targets
from learner.evaluation.features import extract_features
from learner.methods.registry import architecture_of, build_model

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


def pixel_features(views: np.ndarray, side: int = RAW_PIXEL_SIDE) -> np.ndarray:
    """Raw-pixel features: each uint8 view area-downsampled to side x side, in [0, 1], flattened."""
    small = [cv2.resize(v, (side, side), interpolation=cv2.INTER_AREA) for v in views]
    return np.stack(small).reshape(len(views), -1).astype(np.float32) / 255.0


def reference_features(name: str, views: ProbeViews, world: World, seed: int, encoder: nn.Module | None = None) -> np.ndarray:
    """Features of ``views`` for the reference ``name`` (see ``REFERENCE_MEANING``);
    ``random`` needs the untrained ``encoder``, ``noise`` draws from ``seed``."""
    if name == "oracle":  # the visible pose, without the scenery's columns (floor hue)
        return visible_pose(world, views.state)
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


def untrained_model(cfg: CiperConfig | DictConfig, world: World) -> nn.Module:
    """The model a run of ``cfg`` starts from, seeded as the training loop seeds it."""
    cfg = typed_config(cfg)
    _, layout = run_targets(cfg, world)
    torch.manual_seed(cfg.train.seed)
    return build_model(architecture_of(cfg, layout), cfg.method)
