"""Compose the ``ciper`` config tree outside a Hydra app (tests, notebooks, other tools).

Defaults that depend on another key are settled as the console scripts settle them
(``conf.settle``: a learner augmentation the env's actions already apply is turned off
unless one of ``overrides`` sets it)."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize
from omegaconf import DictConfig, OmegaConf, open_dict

from conf.schema import register_configs
from conf.settle import log_once, settle_augmentations


def compose_config(overrides: list[str] | tuple[str, ...] = (), run_dir: str | Path | None = None) -> DictConfig:
    """The resolved config with ``overrides`` (``key=value`` strings, as on the command
    line), struct mode on; ``run_dir`` replaces the Hydra-run folder interpolation."""
    register_configs()
    with initialize(version_base=None, config_path=None):
        cfg = compose("ciper", overrides=list(overrides))
    with open_dict(cfg):
        cfg.run_dir = str(run_dir) if run_dir is not None else "."
    OmegaConf.resolve(cfg)
    OmegaConf.set_struct(cfg, True)
    log_once(settle_augmentations(cfg, {o.split("=", 1)[0].lstrip("+~") for o in overrides}))
    return cfg
