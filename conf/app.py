"""Turns a task function into a Hydra console script that reads the ``ciper`` config tree."""

from __future__ import annotations

from collections.abc import Callable

import hydra
from omegaconf import DictConfig

from conf.schema import register_configs


def hydra_app(task: Callable[[DictConfig], object]) -> Callable[[], None]:
    """Wrap ``task(cfg)`` as a console-script ``main`` with struct mode on."""
    register_configs()
    wrapped = hydra.main(version_base=None, config_path=None, config_name="ciper")(task)

    def main() -> None:
        wrapped()

    main.__doc__ = task.__doc__
    return main
