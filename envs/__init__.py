"""Gymnasium environments of the active observer; importing this package registers them.

- ``ciper/ObjectView-v0``: pybullet renders one 3D object under camera, object and light
  actions (:class:`envs.object_view.ObjectViewEnv`).
- ``ciper/ImageView-v0``: a static image viewed under parameterised augmentations whose
  parameters the actions change (:class:`envs.image_view.ImageViewEnv`).
"""

import importlib
from typing import cast

from gymnasium.envs.registration import register, registry

from envs.world import World

OBJECT_VIEW_ID = "ciper/ObjectView-v0"
IMAGE_VIEW_ID = "ciper/ImageView-v0"

if OBJECT_VIEW_ID not in registry:
    register(id=OBJECT_VIEW_ID, entry_point="envs.object_view:ObjectViewEnv")
if IMAGE_VIEW_ID not in registry:
    register(id=IMAGE_VIEW_ID, entry_point="envs.image_view:ImageViewEnv")

__all__ = ["OBJECT_VIEW_ID", "IMAGE_VIEW_ID", "World", "world_module"]


def world_module(env_id: str) -> World:
    """The pure-numpy state/action module of an env id (``envs.scene_state`` or
    ``envs.image_state``), which implements :class:`envs.world.World`."""
    modules = {OBJECT_VIEW_ID: "envs.scene_state", IMAGE_VIEW_ID: "envs.image_state"}
    if env_id not in modules:
        raise ValueError(f"env id {env_id!r}: expected one of {sorted(modules)}")
    return cast(World, importlib.import_module(modules[env_id]))
