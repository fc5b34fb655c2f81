"""Gymnasium environments of the active observer; importing this package registers them.

- ``ciper/ObjectView-v0``: pybullet renders one 3D object under camera, object and light
  actions (:class:`envs.object_view.ObjectViewEnv`).
- ``ciper/ImageView-v0``: a static image viewed under parameterised augmentations whose
  parameters the actions change (:class:`envs.image_view.ImageViewEnv`).

``3DIEBench`` names a world without an env: the recorded views of a folder in the 3DIEBench
layout (:mod:`envs.iebench_state`, :mod:`envs.iebench_layout`; docs/3diebench.md).
"""

import importlib
from typing import cast

from gymnasium.envs.registration import register, registry

from envs.world import World

OBJECT_VIEW_ID = "ciper/ObjectView-v0"
IMAGE_VIEW_ID = "ciper/ImageView-v0"
#: A world, not a Gymnasium id: recorded 3DIEBench views (env.catalog = the folder).
IEBENCH_ID = "3DIEBench"

if OBJECT_VIEW_ID not in registry:
    register(id=OBJECT_VIEW_ID, entry_point="envs.object_view:ObjectViewEnv")
if IMAGE_VIEW_ID not in registry:
    register(id=IMAGE_VIEW_ID, entry_point="envs.image_view:ImageViewEnv")

__all__ = ["OBJECT_VIEW_ID", "IMAGE_VIEW_ID", "IEBENCH_ID", "World", "world_module"]


def world_module(env_id: str) -> World:
    """The pure-numpy state/action module of an env id (``envs.scene_state``,
    ``envs.image_state`` or ``envs.iebench_state``), which implements :class:`envs.world.World`."""
    modules = {OBJECT_VIEW_ID: "envs.scene_state", IMAGE_VIEW_ID: "envs.image_state", IEBENCH_ID: "envs.iebench_state"}
    if env_id not in modules:
        raise ValueError(f"env id {env_id!r}: expected one of {sorted(modules)}")
    return cast(World, importlib.import_module(modules[env_id]))
