"""Turns a task function into a Hydra console script that reads the ``ciper`` config tree."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import hydra
from omegaconf import DictConfig

from conf.schema import register_configs


def hydra_app(task: Callable[[DictConfig], object]) -> Callable[[], None]:
    """Wrap ``task(cfg)`` as a console-script ``main`` with struct mode on."""
    register_configs()
    # The config tree lives in the ConfigStore; an explicit directory (this one, which holds
    # no YAML) stops Hydra from probing the caller's package with importlib.resources,
    # which fails for console scripts of editable installs.
    config_dir = str(Path(__file__).resolve().parent)
    wrapped = hydra.main(version_base=None, config_path=config_dir, config_name="ciper")(task)

    def main() -> None:
        wrapped()

    main.__doc__ = task.__doc__
    return main
