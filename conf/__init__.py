"""The one config tree shared by every console script (Hydra structured configs).

Every key has exactly one default, the dataclass field default in :mod:`conf.schema`.
Config groups (``method=``, ``policy=``, ``collector=``, ``report=``) are registered in
Hydra's ConfigStore from the same dataclasses. Struct mode is on, so a misspelt key or an
unknown group option is an error naming it.
"""

from conf.schema import CiperConfig, register_configs

__all__ = ["CiperConfig", "register_configs"]
