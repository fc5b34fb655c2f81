"""Defaults that depend on another key: the learner's augmentations against the env's actions.

ImageView's action sets already crop, flip and colour the views (``geometric``: crop and
rotation; ``photometric``: brightness, contrast, saturation, hue; ``full``: all and a flip),
so the learner's augmentation of the same kind would apply the change twice and the
prediction target would describe neither. Every action set of the image world meets one of
the learner's default augmentations (``method.augment_crop`` and ``method.augment_color``
are on by default), so a default must give way: `settle_augmentations` turns off each
augmentation the env's actions already apply unless the user set it explicitly, and says so;
an explicit ``method.augment_crop=true`` with such an action set is still refused. The config
then records what runs.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from typing import Any

from omegaconf import DictConfig, open_dict

import envs
from conf.errors import UserError

log = logging.getLogger(__name__)

# The learner's augmentation keys and the env action dimensions (ImageView's) that apply the same change.
AUGMENTATION_ACTION_DIMS: dict[str, tuple[str, ...]] = {
    "augment_crop": ("crop_x", "crop_y", "crop_scale"),
    "augment_flip": ("flip",),
    "augment_color": ("brightness", "contrast", "saturation", "hue"),
}


class DoubledAugmentation(UserError, ValueError):
    """A learner augmentation and env actions that apply the same change, both asked for."""


def doubled_augmentations(method_cfg: Any, action_dim_names: Sequence[str]) -> dict[str, list[str]]:
    """``{augmentation key: the env actions that apply its change}`` for each augmentation on."""
    doubled = {}
    for key, dims in AUGMENTATION_ACTION_DIMS.items():
        both = sorted(set(dims) & set(action_dim_names))
        if both and bool(getattr(method_cfg, key)):
            doubled[key] = both
    return doubled


def doubled_message(key: str, action_set: str, actions: Sequence[str]) -> str:
    return (f"method.{key}=true and env.action_set={action_set!r} (actions {', '.join(actions)}) both apply "
            f"this change to the views: set method.{key}=false or use an action set without it")  # fmt: skip


def settle_augmentations(cfg: DictConfig, explicit: Collection[str]) -> list[str]:
    """Turn off in ``cfg.method`` each augmentation that ``cfg.env``'s actions already apply,
    unless its key is in ``explicit`` (the keys the user set); returns a note per key turned
    off. Raises `DoubledAugmentation` for an explicit one. An unknown env id or action set is
    left for `conf.validate` to name."""
    try:
        names = [d.name for d in envs.world_module(cfg.env.id).action_dims(cfg.env.action_set)]
    except (ValueError, KeyError, TypeError):
        return []
    notes = []
    for key, actions in doubled_augmentations(cfg.method, names).items():
        if f"method.{key}" in explicit:
            raise DoubledAugmentation(doubled_message(key, cfg.env.action_set, actions))
        with open_dict(cfg):
            cfg.method[key] = False
        notes.append(f"method.{key}=false: env.action_set={cfg.env.action_set!r} already applies this change "
                     f"(actions {', '.join(actions)}); the learner's own would double it (set method.{key}=true "
                     "with an action set without it to use the learner's)")  # fmt: skip
    return notes


_SAID: set[str] = set()


def log_once(notes: Sequence[str]) -> None:
    """Log each note once per process (a report composes many runs with the same note)."""
    for note in notes:
        if note not in _SAID:
            _SAID.add(note)
            log.info(note)
