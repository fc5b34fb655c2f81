"""The constructor arguments every view environment shares: their defaults and their checks
(sizes, episode length, render mode), so both worlds default alike and refuse bad values with
the same messages.

The defaults are the project's one source for these keys: the env constructors and the
config schema (``conf.schema.EnvConfig``) both read them from here, and this module imports
nothing from ``conf/``, so ``envs`` stays importable alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from envs import OBJECT_VIEW_ID

IMAGE_SIZE_RANGE = (16, 1024)
IMAGE_SIZE = 64  # side of the square observation, pixels
RENDER_SIZE = 256  # side of a render() frame, pixels
SPLIT = "train"  # which objects (images) an env draws from
EPISODE_STEPS = 32  # steps before an episode truncates
NUISANCE = "per_step"  # nuisances redrawn at every step (see NUISANCE_MODES)
RENDERER = "tiny"  # ObjectView's pybullet renderer: TinyRenderer (CPU, deterministic)
#: When the nuisances are drawn: at every step, or once at reset.
NUISANCE_MODES = ("per_step", "per_episode")


def check_view_arguments(
    image_size: object, render_size: object, episode_steps: object, render_mode: object, render_modes: Sequence[str]
) -> None:
    """Raise ``ValueError`` naming the first argument outside its documented range."""
    for name, value in (("image_size", image_size), ("render_size", render_size)):
        if not isinstance(value, int | np.integer) or not IMAGE_SIZE_RANGE[0] <= value <= IMAGE_SIZE_RANGE[1]:
            raise ValueError(f"{name}={value!r}: expected an int in [{IMAGE_SIZE_RANGE[0]}, {IMAGE_SIZE_RANGE[1]}]")
    if not isinstance(episode_steps, int | np.integer) or episode_steps < 1:
        raise ValueError(f"episode_steps={episode_steps!r}: expected an int >= 1")
    if render_mode is not None and render_mode not in render_modes:
        raise ValueError(f"render_mode={render_mode!r}: expected None or one of {list(render_modes)}")


def env_kwargs(env_cfg: Any) -> dict[str, Any]:
    """Constructor arguments of the env described by a ``conf.schema.EnvConfig``-like object."""
    kwargs = dict(
        action_set=env_cfg.action_set, image_size=env_cfg.image_size, split=env_cfg.split,
        catalog=env_cfg.catalog, episode_steps=env_cfg.episode_steps, nuisance=env_cfg.nuisance,
    )  # fmt: skip
    if env_cfg.id == OBJECT_VIEW_ID:  # the image world has no 3D renderer to choose
        kwargs["renderer"] = env_cfg.renderer
    kwargs.update(dict(env_cfg.extra or {}))
    return kwargs
