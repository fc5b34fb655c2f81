"""Gymnasium environment: an observer views one 3D object and moves camera, object and light."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import EzPickle

from envs import scene_state
from envs.bullet_scene import BulletScene
from envs.catalog import ObjectCatalog, load_catalog
from envs.scene_state import STATE_DIM, STATE_FIELDS, random_state, redraw_nuisance
from envs.view_arguments import EPISODE_STEPS, IMAGE_SIZE, NUISANCE, RENDER_SIZE, RENDERER, SPLIT
from envs.view_env import ViewEnv

OBSERVABLES = ("rgb", "depth", "mask")


class ObjectViewEnv(ViewEnv):
    """
    ## Description
    An active observer looks at one 3D object standing above a patterned floor, lit by one
    directional light that casts shadows, through a pinhole camera (45 degree field of
    view) that sits on a sphere around the object and always looks at its centre. Each
    action moves the camera, rotates the object, moves the light or shifts the floor hue by
    a known amount, so every pair of views comes with the exact transformation between them
    (Xu & Triesch 2023, CIPER). This is an observation environment for representation
    learning: there is no task and the reward is always 0.0.

    Every action shows in the image (``tests/test_scene_validity.py``): the floor's tiles
    and a dark band along world +x fix the world frame, so a camera move differs from the
    equivalent object + light move; each object wears a grey-level cell texture fixed on
    it, so a turn about any axis shows, also for symmetric shapes; shadows show the light
    direction. Colour is a nuisance: floor, object (texture tint) and light colours are
    drawn from hues and ranges shared by every object and category, and by default redrawn
    at every step (``nuisance="per_step"``), so two views of one object share their shape,
    not their colours.

    Objects come from a catalogue (``assets/objects.csv`` by default: procedurally made
    shape families with categories, pybullet_data meshes and 1000 random meshes without
    categories). Every object is centred and scaled to a bounding radius of 0.5 scene units.
    The catalogue's ``rgba`` column is not used: the object's colour is the state's
    ``object_hue``.

    ## Action Space
    ``Box(-1, 1, (A,), float32)``; each dimension is scaled by its maximum step
    (``envs.scene_state.ACTION_SETS``). Finite values outside [-1, 1] are clipped; the
    camera elevation, camera distance and light elevation are then clamped to their ranges.
    ``info["applied_action"]`` gives the change actually applied, in physical units.

    | action_set | dims | meaning (max step for a normalised 1.0)                       |
    |------------|------|----------------------------------------------------------------|
    | camera     | 3    | azimuth (15 deg), elevation (10 deg), distance (0.25 units)    |
    | object     | 3    | object rotation vector about world x, y, z (15 deg each)       |
    | light      | 2    | light azimuth (45 deg), light elevation (15 deg)               |
    | observer   | 6    | camera (3) + object (3)                                        |
    | handheld   | 6    | camera (3) + object rotation vector about the camera's own axes |
    |            |      | (right, up, view axis; 15 deg each)                            |
    | full       | 9    | camera (3) + object (3) + light (2) + floor hue (0.05 turns)   |

    ## Observation Space
    With ``observe=("rgb",)`` (default): ``Box(0, 255, (H, W, 3), uint8)``, the camera image.
    With more observables a ``Dict`` with keys among:

    | key   | space                                  | meaning                              |
    |-------|----------------------------------------|--------------------------------------|
    | rgb   | Box(0, 255, (H, W, 3), uint8)          | colour image                         |
    | depth | Box(0, 10, (H, W), float32)            | distance along the view axis, units  |
    | mask  | Box(0, 1, (H, W), uint8)               | 1 where the object is visible        |

    The latent scene state is returned in ``info["state"]`` (float64, 14 values, order
    ``ObjectViewEnv.state_fields``):

    | idx | name             | range                  | unit                                |
    |-----|------------------|------------------------|-------------------------------------|
    | 0   | camera_azimuth   | [-pi, pi)              | rad                                 |
    | 1   | camera_elevation | [5, 75] deg            | rad                                 |
    | 2   | camera_distance  | [1.2, 2.2]             | scene units                         |
    | 3-6 | object_qx..qw    | unit quaternion, w>=0  | object-to-world rotation            |
    | 7   | light_azimuth    | [-pi, pi)              | rad                                 |
    | 8   | light_elevation  | [10, 85] deg           | rad                                 |
    | 9-11| light_r, g, b    | [0, 1]                 | light colour                        |
    | 12  | floor_hue        | [0, 1)                 | hue of the floor's tint             |
    | 13  | object_hue       | [0, 1)                 | hue of the object's tint            |

    ``info`` also holds ``applied_action`` (float64, A), ``object_index`` (row in the
    catalogue), ``object_id``, ``category`` (``""`` for none), ``category_index`` (-1 for
    none), ``step`` (steps since reset) and ``renderer`` ("tiny" or "egl").

    ## Rewards
    Always 0.0: this is an observation environment.

    ## Starting State
    ``reset`` picks an object uniformly from the chosen catalogue split and draws: camera
    azimuth U(-pi, pi), elevation U(15, 60) deg, distance U(1.35, 1.85); a uniformly random
    object orientation; light azimuth U(-pi, pi), elevation U(30, 75) deg, colour U(0.7, 1)
    per channel; floor hue and object hue U(0, 1). ``options={"object_index": i, "state":
    s}`` sets either explicitly (``object_index`` must belong to the split). With
    ``nuisance="per_step"`` every step then redraws the light colour, floor hue and object
    hue the same way (the floor hue not when the action set moves it), after the action.

    ## Episode End
    Never terminates. Truncates after ``episode_steps`` steps.

    ## Arguments
    - ``action_set``: "camera", "object", "light", "observer", "handheld" or "full".
    - ``image_size``: side of the square observation, 16..1024 (default 64).
    - ``split``: catalogue split to draw objects from: "train", "test", "extra",
      "categorised" or "all" (default "train").
    - ``catalog``: path of a catalogue CSV (default: the shipped ``assets/objects.csv``).
    - ``episode_steps``: steps before truncation (default 32).
    - ``observe``: tuple of observables among "rgb", "depth", "mask" (default ("rgb",)).
    - ``renderer``: "tiny" (TinyRenderer, CPU, deterministic; default) or "egl" (GPU; falls
      back to "tiny" with a RuntimeWarning when EGL is not available).
    - ``render_mode``: None, "rgb_array" (a ``render_size`` frame) or "human" (OpenCV window).
    - ``render_size``: side of the ``render()`` frame (default 256).
    - ``shadows``: let the light cast shadows (default True; the light azimuth shows mainly
      through them; about 1.5x slower with TinyRenderer than without).
    - ``nuisance``: "per_step" (default) redraws the nuisances (light colour, floor and
      object hue) at every step; "per_episode" draws them at reset only.

    ## Version History
    - v0: initial version.
    - v0, scene revision (issue 15; datasets record it through the state fields and
      ``env.nuisance``): patterned floor, textured objects tinted by a new state field
      ``object_hue`` (index 13), shadows on by default, per-step nuisances by default,
      camera distance step 0.1 -> 0.25 and range [1.2, 2.6] -> [1.2, 2.2], light azimuth
      step 30 -> 45 deg, 40 instances per shape family; ``absolute_pose`` gains the camera
      azimuth (sin/cos), which the floor now shows.
    - v0, action set ``observer`` added (issue 10; existing sets unchanged).
    - v0, action set ``handheld`` added (issue 19; existing sets unchanged).
    - v0, one default per key (issue 12): ``episode_steps`` defaults to 32 (was 100), the
      config's default; constructor defaults live in ``envs.view_arguments``.
    """

    state_fields = STATE_FIELDS
    world = scene_state

    def __init__(
        self,
        action_set: str = scene_state.DEFAULT_ACTION_SET,
        image_size: int = IMAGE_SIZE,
        split: str = SPLIT,
        catalog: str | None = None,
        episode_steps: int = EPISODE_STEPS,
        observe: tuple[str, ...] | list[str] = ("rgb",),
        renderer: str = RENDERER,
        render_mode: str | None = None,
        render_size: int = RENDER_SIZE,
        shadows: bool = True,
        nuisance: str = NUISANCE,
    ) -> None:
        try:
            observe = tuple(observe)
        except TypeError:  # None, a number
            raise ValueError(f"observe={observe!r}: expected a tuple containing 'rgb' and optionally 'depth', 'mask'") from None
        self._configure(action_set, image_size, render_size, episode_steps, render_mode, nuisance)
        unknown = [o for o in observe if o not in OBSERVABLES]
        if not observe or unknown or "rgb" not in observe:
            raise ValueError(f"observe={observe!r}: expected a tuple containing 'rgb' and optionally 'depth', 'mask'")
        self.catalog: ObjectCatalog = load_catalog(catalog)
        self.object_indices = self.catalog.select(split)
        if not self.object_indices:
            raise ValueError(f"split={split!r}: the catalogue has no objects in this split")
        self.observe = observe
        self.observation_space = self._observation_space()
        self._scene: BulletScene | None = BulletScene(renderer=renderer, shadows=shadows)
        self.renderer = self._scene.renderer
        self._index = self.object_indices[0]
        EzPickle.__init__(
            self, action_set=action_set, image_size=image_size, split=split, catalog=catalog,
            episode_steps=episode_steps, observe=observe, renderer=renderer, render_mode=render_mode,
            render_size=render_size, shadows=shadows, nuisance=nuisance,
        )  # fmt: skip

    def _observation_space(self) -> spaces.Space:
        rgb_space = spaces.Box(0, 255, shape=(self.image_size, self.image_size, 3), dtype=np.uint8)
        if self.observe == ("rgb",):
            return rgb_space
        components: dict[str, spaces.Space] = {"rgb": rgb_space}
        if "depth" in self.observe:
            components["depth"] = spaces.Box(0.0, 10.0, shape=(self.image_size, self.image_size), dtype=np.float32)
        if "mask" in self.observe:
            components["mask"] = spaces.Box(0, 1, shape=(self.image_size, self.image_size), dtype=np.uint8)
        return spaces.Dict(components)

    def object_mask(self) -> np.ndarray:
        """Where the object is visible in the current view (bool, image_size square)."""
        return self._scene.render(self._state, self.image_size, mask=True).mask

    # ------------------------------------------------------------------ ViewEnv hooks

    def _item_indices(self) -> list[int]:
        return self.object_indices

    def _start_state(self, options: dict[str, Any]) -> np.ndarray:
        state = random_state(self.np_random)
        if "state" in options:
            state = np.asarray(options["state"], dtype=np.float64).copy()
            if state.shape != (STATE_DIM,) or not np.all(np.isfinite(state)):
                raise ValueError(f"options['state'] shape {state.shape}: expected ({STATE_DIM},) finite values")
        return state

    def _redraw_nuisance(self) -> None:
        self._state = redraw_nuisance(self._state, self.np_random, self.action_set)

    def _show_item(self) -> None:
        self._scene.show_object(self.catalog[self._index])

    def _observe(self):
        view = self._scene.render(self._state, self.image_size, depth="depth" in self.observe, mask="mask" in self.observe)
        if self.observe == ("rgb",):
            return view.rgb
        observation = {"rgb": view.rgb}
        if view.depth is not None:
            observation["depth"] = np.clip(view.depth, 0.0, 10.0)
        if view.mask is not None:
            observation["mask"] = view.mask.astype(np.uint8)
        return observation

    def _render_frame(self) -> np.ndarray:
        return self._scene.render(self._state, self.render_size).rgb

    def _item_info(self) -> dict[str, Any]:
        entry = self.catalog[self._index]
        return {
            "object_index": self._index,
            "object_id": entry.object_id,
            "category": entry.category,
            "category_index": self.catalog.category_index(entry.category),
        }

    def _release(self) -> None:
        if getattr(self, "_scene", None) is not None:
            self._scene.close()
            self._scene = None
