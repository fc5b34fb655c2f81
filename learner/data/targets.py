"""What the learner knows about a batch of pairs besides the pixels: targets and labels.

The world says what a pair's relative action is and what each view's absolute pose and
category are; the augmentation adds the relative parameters of the two views (AugSelf).
:func:`target_layout` names those columns once per run (the methods size their heads from
it); :func:`pair_targets` puts one batch of them on the device, views a then views b, in the
order of the images.
"""

from __future__ import annotations

import numpy as np
import torch

from agent.view_pairs import ViewPairs
from conf.schema import CiperConfig, EnvConfig
from envs.world import World, visible_pose, visible_pose_names
from learner.data.augment import AugmentationSpec, augmentation_spec, relative_augmentation
from learner.methods.base import Gather, PairTargets, TargetLayout


def target_layout(world: World, env_cfg: EnvConfig, augmentation: AugmentationSpec | None) -> TargetLayout:
    """The target columns of ``world``'s relative action under ``env_cfg.action_set``, then
    ``delta_<parameter>`` per augmentation parameter; each view's visible pose and categories."""
    action_names = world.relative_action_names(env_cfg.action_set)
    augmentation_names = augmentation.parameter_names if augmentation is not None else ()
    discrete = [*world.relative_action_discrete(env_cfg.action_set).tolist(), *[False] * len(augmentation_names)]
    return TargetLayout(
        names=(*action_names, *(f"delta_{n}" for n in augmentation_names)),
        discrete=tuple(bool(d) for d in discrete),
        action_dim=len(action_names),
        pose_names=visible_pose_names(world),
        categories=len(world.category_names(env_cfg.catalog)),
    )


def pair_targets(
    pairs: ViewPairs,
    parameters: torch.Tensor | None,
    world: World,
    device: torch.device,
    gather: Gather | None = None,
    offset: int = 0,
) -> PairTargets:
    """The targets of ``pairs`` on ``device``: their relative action followed by b - a of the
    augmentation ``parameters`` of views a (rows :N) and b (rows N:), None without
    augmentation; each view's visible pose and category."""
    target = torch.from_numpy(pairs.relative_action).to(device, non_blocking=True)
    if parameters is not None:
        n = len(pairs)
        target = torch.cat([target, relative_augmentation(parameters[:n], parameters[n:]).to(target.dtype)], dim=1)
    pose = visible_pose(world, np.concatenate([pairs.state_a, pairs.state_b]))
    category = np.concatenate([pairs.category, pairs.category])  # both views show the same object
    return PairTargets(
        target=target,
        pose=torch.from_numpy(pose).to(device, non_blocking=True),
        category=torch.from_numpy(np.asarray(category, dtype=np.int64)).to(device, non_blocking=True),
        gather=gather,
        offset=offset,
    )


def run_targets(cfg: CiperConfig, world: World) -> tuple[AugmentationSpec | None, TargetLayout]:
    """A run's augmentation (None: every one off) and its :func:`target_layout`, both from
    ``cfg.method`` and ``cfg.env``; refuses an augmentation the env's actions already apply."""
    action_names = [d.name for d in world.action_dims(cfg.env.action_set)]
    spec = augmentation_spec(cfg.method, action_names, cfg.env.action_set)
    return spec, target_layout(world, cfg.env, spec)
