"""The composed config as the schema's dataclasses, and back as plain containers.

Hydra composes a ``DictConfig``; a program works on the `conf.schema.CiperConfig` it stands
for, converted once with `typed_config` where a composed config enters it: at the top of
``train``, ``rollout``, ``render_views`` and of every console script's task. Below that
boundary each value has its schema type (``cfg.train.steps`` is an int, ``cfg.method.jitter``
a list), so nothing casts. Code below the boundary only reads attributes, which a
``DictConfig`` composed by a test or the report offers too.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from omegaconf import DictConfig, OmegaConf

from conf.schema import CiperConfig


def typed_config(cfg: CiperConfig | DictConfig) -> CiperConfig:
    """``cfg`` as a `CiperConfig` (a composed, resolved ``DictConfig`` is converted)."""
    if isinstance(cfg, CiperConfig):
        return cfg
    typed = OmegaConf.to_object(cfg)
    if not isinstance(typed, CiperConfig):
        raise TypeError(
            f"cfg of type {type(typed).__name__}: expected a config composed from the ciper schema"
        )
    return typed


def plain_config(node: Any) -> dict[str, Any]:
    """A config or one of its sections, typed or not, as resolved plain dicts and lists (what
    checkpoints, dataset headers and metrics.json store)."""
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return dataclasses.asdict(node)
    return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]
