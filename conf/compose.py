"""Compose the ``ciper`` config tree outside a Hydra app (tests, notebooks, other tools)."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize
from omegaconf import DictConfig, OmegaConf, open_dict

from conf.schema import register_configs


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
    return cfg
