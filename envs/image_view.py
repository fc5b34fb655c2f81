"""Gymnasium environment: an observer views one static image under augmentations it controls.

The static-image counterpart of :mod:`envs.object_view` (the paper's "static image tasks"):
the latent state is a set of augmentation parameters (crop, rotation, flip, colour; see
:mod:`envs.image_state`), actions change them by known amounts, and the view is rendered
with OpenCV: one ``warpAffine`` for crop, rotation, flip and resize composed into a single
matrix, then one ``transform`` for brightness, contrast, saturation and hue composed into a
single affine colour map, so a frame costs a few tens of microseconds.
"""

from __future__ import annotations

import os
from typing import Any

import cv2
import numpy as np
from gymnasium import spaces
from gymnasium.utils import EzPickle

from envs import image_state
from envs.image_sources import BACKGROUND_POOL_SIZE, ImageSet, load_image_set
from envs.image_state import (
    OWN_BACKGROUND,
    STATE_FIELDS,
    STATE_INDEX,
    random_state,
    validate_state,
)
from envs.view_arguments import EPISODE_STEPS, IMAGE_SIZE, NUISANCE, RENDER_SIZE, SPLIT
from envs.view_env import ViewEnv

# Luma weights (ITU-R 601, as torchvision's grayscale) and RGB -> YIQ; they sum to 1 and the
# I, Q rows to 0, so saturation and hue maps keep grey grey.
_LUMA = np.array([0.299, 0.587, 0.114])
_RGB_TO_YIQ = np.array([_LUMA, [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)


def view_matrix(state: np.ndarray, source_shape: tuple[int, ...], size: int) -> np.ndarray:
    """The 2x3 map from view pixel (u, v) to source pixel (x, y) (``WARP_INVERSE_MAP``).

    A view pixel's centre, in [-1/2, 1/2]^2 view units, is mirrored in x when flipped,
    rotated by ``rotation`` (x right, y down, so a positive angle turns the crop window
    clockwise on screen and the content counter-clockwise), scaled to the crop side
    (``crop_scale`` times the source's shorter side) and moved to the crop centre.
    """
    height, width = source_shape[:2]
    cx, cy, scale, rotation, flip = state[:5]
    side = scale * min(height, width)
    cos, sin = np.cos(rotation), np.sin(rotation)
    mirror = -1.0 if flip >= 0.5 else 1.0
    linear = (side / size) * np.array([[cos * mirror, -sin], [sin * mirror, cos]])
    # Pixel centres: view pixel u covers (u + 1/2) / size - 1/2; source pixel x sits at x + 1/2.
    offset = np.array([cx * width, cy * height]) - 0.5 + linear @ np.full(2, 0.5 - size / 2)
    return np.hstack([linear, offset[:, None]])


def colour_matrix(state: np.ndarray, mean_rgb: np.ndarray) -> np.ndarray:
    """The 3x4 affine colour map of brightness, contrast, saturation, then hue.

    As torchvision's ColorJitter (fixed order) with one difference: values are clipped once
    at the end, not after each operation, so the whole map is one affine transform.
    Contrast blends with the mean grey of the brightness-adjusted view; the hue shift is a
    rotation of the chroma plane in YIQ space (a linear stand-in for an HSV hue shift).
    """
    brightness, contrast, saturation, hue = state[5:9]
    saturate = saturation * np.eye(3) + (1.0 - saturation) * np.outer(np.ones(3), _LUMA)
    angle = 2.0 * np.pi * hue
    chroma = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(angle), -np.sin(angle)], [0.0, np.sin(angle), np.cos(angle)]])
    linear = (_YIQ_TO_RGB @ chroma @ _RGB_TO_YIQ) @ saturate * (contrast * brightness)
    # Saturation and hue maps fix grey, so the contrast pivot passes through unchanged.
    pivot = (1.0 - contrast) * brightness * float(_LUMA @ mean_rgb)
    return np.hstack([linear, np.full((3, 1), pivot)])


def render_view(image: np.ndarray, state: np.ndarray, size: int) -> np.ndarray:
    """The view of ``image`` (uint8 RGB) under augmentation ``state``: uint8 (size, size, 3)."""
    crop = cv2.warpAffine(
        image,
        view_matrix(state, image.shape, size),
        (size, size),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REFLECT,
    )
    if np.array_equal(state[5:9], (1.0, 1.0, 1.0, 0.0)):
        return crop  # the identity colour map: skip it, keeps the crop bit-exact
    mean_rgb = np.array(cv2.mean(crop)[:3])
    return cv2.transform(crop, colour_matrix(state, mean_rgb))


class ImageViewEnv(ViewEnv):
    """
    ## Description
    An active observer views one static 2D image through a parameterised augmentation: a
    square crop window (centre, size, rotation), a left-right flip and a colour adjustment
    (brightness, contrast, saturation, hue). Each action changes these parameters by a
    known amount, so every pair of views comes with the exact relative augmentation
    between them: the static-image counterpart of ``ciper/ObjectView-v0`` (Xu & Triesch
    2023, CIPER, "static image tasks"). This is an observation environment for
    representation learning: there is no task and the reward is always 0.0.

    Images come from an image source (``catalog``): a synthetic set of the digits 0-9
    generated deterministically at construction (default: 3,000 train and 750 test images
    at 64 px), an image folder ``root/<class_name>/*.png|jpg`` or CIFAR-10's binary batches
    on local disk. A default digit is shown on a background (texture, ink and halo colours)
    from a pool of 512 shared by every image and class, drawn per view (``nuisance``), so
    matching two views of one image needs the digit, not the background.

    ## Action Space
    ``Box(-1, 1, (A,), float32)``; each dimension is scaled by its maximum step
    (``envs.image_state.ACTION_SETS``). Finite values outside [-1, 1] are clipped; crop
    centre, crop scale and the colour factors are then clamped to their ranges, rotation and
    hue wrap around. ``info["applied_action"]`` gives the change actually applied, in
    physical units (log units for the factors).

    | action_set  | dims | meaning (max step for a normalised 1.0)                              |
    |-------------|------|-----------------------------------------------------------------------|
    | geometric   | 4    | crop centre x, y (0.05 of the image), log crop scale (0.1),           |
    |             |      | rotation (15 deg)                                                     |
    | photometric | 4    | log brightness (0.1), log contrast (0.1), log saturation (0.2), hue   |
    |             |      | (0.05 turns)                                                          |
    | full        | 9    | geometric (4) + photometric (4) + flip: a value > 0.5 toggles the     |
    |             |      | left-right flip, anything else leaves it (applied 1.0 or 0.0)         |

    ## Observation Space
    ``Box(0, 255, (H, W, 3), uint8)``: the augmented view, ``H = W = image_size``.

    The latent augmentation state is returned in ``info["state"]`` (float64, 10 values, order
    ``ImageViewEnv.state_fields``):

    | idx | name        | range         | unit                                                 |
    |-----|-------------|---------------|------------------------------------------------------|
    | 0   | crop_x      | [0.3, 0.7]    | crop centre, fraction of the image width             |
    | 1   | crop_y      | [0.3, 0.7]    | crop centre, fraction of the image height            |
    | 2   | crop_scale  | [0.4, 1.0]    | crop side, fraction of the image's shorter side      |
    | 3   | rotation    | [-pi, pi)     | rad; positive turns the content counter-clockwise    |
    | 4   | flip        | {0, 1}        | 1 = view mirrored left-right                         |
    | 5   | brightness  | [0.6, 1.6]    | factor                                               |
    | 6   | contrast    | [0.6, 1.6]    | factor (about the view's mean grey)                  |
    | 7   | saturation  | [0.4, 2.0]    | factor                                               |
    | 8   | hue         | [-0.5, 0.5)   | turns (chroma rotation in YIQ space)                 |
    | 9   | background  | {0..511}, -1  | pool background of the view; -1: the image's own     |

    Pixels of the crop window outside the image are mirrored (``BORDER_REFLECT``).
    ``info`` also holds ``applied_action`` (float64, A), ``object_index`` (the image's index
    in the image source), ``object_id`` (the image's id), ``category`` (class name),
    ``category_index`` (label), ``step`` (steps since reset) and ``renderer`` ("cv2"); the
    keys match ``ciper/ObjectView-v0`` so one collector serves both worlds.

    ## Rewards
    Always 0.0: this is an observation environment.

    ## Starting State
    ``reset`` picks an image uniformly from the chosen split and draws: crop centre
    U(0.4, 0.6) per axis, crop scale log-uniform in [0.55, 0.9], rotation U(-30, 30) deg,
    flip 0 or 1 with equal odds, brightness, contrast and saturation exp(U(-0.2, 0.2)), hue
    U(-0.1, 0.1) turns, background uniform over the pool (-1 for sources with their own
    backgrounds). With ``nuisance="per_step"`` every step redraws the background. ``options={"image_index": i, "state": s}`` sets either explicitly
    (``image_index``, alias ``object_index``, must belong to the split; ``s`` must lie in the
    ranges above).

    ## Episode End
    Never terminates. Truncates after ``episode_steps`` steps.

    ## Arguments
    - ``action_set``: "geometric", "photometric" or "full" (default "geometric").
    - ``image_size``: side of the square observation, 16..1024 (default 64).
    - ``split``: "train", "test" (a deterministic 80/20 split by image within each class;
      CIFAR-10 keeps its own) or "all" (default "train").
    - ``catalog``: the image source: None or "default" (synthetic digits),
      "cifar10:<folder with the binary batches>", or an image folder path.
    - ``episode_steps``: steps before truncation (default 32).
    - ``render_mode``: None, "rgb_array" (a ``render_size`` frame) or "human" (OpenCV window).
    - ``render_size``: side of the ``render()`` frame (default 256).
    - ``nuisance``: "per_step" (default) draws a new pool background at every step;
      "per_episode" keeps the one drawn at reset.

    ## Version History
    - v0: initial version.
    - v0, scene revision (issue 15): the default digits are coverage masks shown on
      per-view pool backgrounds (state field ``background``, index 9) instead of one
      background per image; 3,750 digits at 64 px instead of 600 at 96 px; saturation step
      0.1 -> 0.2.
    - v0, one default per key (issue 12): ``episode_steps`` defaults to 32 (was 100), the
      config's default; constructor defaults live in ``envs.view_arguments``.
    """

    state_fields = STATE_FIELDS
    world = image_state
    index_options = ("image_index", "object_index")

    def __init__(
        self,
        action_set: str = image_state.DEFAULT_ACTION_SET,
        image_size: int = IMAGE_SIZE,
        split: str = SPLIT,
        catalog: str | os.PathLike | None = None,
        episode_steps: int = EPISODE_STEPS,
        render_mode: str | None = None,
        render_size: int = RENDER_SIZE,
        nuisance: str = NUISANCE,
    ) -> None:
        catalog = os.fspath(catalog) if isinstance(catalog, os.PathLike) else catalog
        self._configure(action_set, image_size, render_size, episode_steps, render_mode, nuisance)
        self.image_set: ImageSet = load_image_set(catalog)
        self.image_indices = self.image_set.select(split)
        if not self.image_indices.size:
            raise ValueError(f"split={split!r}: the image source {self.image_set.source} has no images in this split")
        self.renderer = "cv2"
        self.observation_space = spaces.Box(0, 255, shape=(self.image_size, self.image_size, 3), dtype=np.uint8)
        self._index = int(self.image_indices[0])
        self._picture_key: tuple[int, int] | None = None
        self._picture: np.ndarray | None = None
        EzPickle.__init__(
            self, action_set=action_set, image_size=image_size, split=split, catalog=catalog,
            episode_steps=episode_steps, render_mode=render_mode, render_size=render_size, nuisance=nuisance,
        )  # fmt: skip

    @property
    def source_image(self) -> np.ndarray:
        """The current un-augmented picture (uint8 RGB): the image on the view's background."""
        key = (self._index, int(self._state[STATE_INDEX["background"]]))
        if key != self._picture_key:
            self._picture = self.image_set.picture(*key)
            self._picture_key = key
        return self._picture

    # ------------------------------------------------------------------ ViewEnv hooks

    def _item_indices(self) -> np.ndarray:
        return self.image_indices

    def _start_state(self, options: dict[str, Any]) -> np.ndarray:
        state = random_state(self.np_random)
        if not self.image_set.composited:
            state[STATE_INDEX["background"]] = OWN_BACKGROUND
        if "state" not in options:
            return state
        try:
            state = validate_state(options["state"])
        except ValueError as error:
            raise ValueError(f"options['state']: {error}") from None
        background = state[STATE_INDEX["background"]]
        if self.image_set.composited == (background == OWN_BACKGROUND):
            expected = f"a pool index in [0, {BACKGROUND_POOL_SIZE})" if self.image_set.composited else f"{OWN_BACKGROUND:g}"
            raise ValueError(
                f"options['state'][{STATE_INDEX['background']}] (background)={background:g}: expected {expected} "
                f"for the image source {self.image_set.source!r}"
            )
        return state

    def _redraw_nuisance(self) -> None:
        if self.image_set.composited:
            self._state[STATE_INDEX["background"]] = float(self.np_random.integers(BACKGROUND_POOL_SIZE))

    def _observe(self) -> np.ndarray:
        return render_view(self.source_image, self._state, self.image_size)

    def _render_frame(self) -> np.ndarray:
        return render_view(self.source_image, self._state, self.render_size)

    def _item_info(self) -> dict[str, Any]:
        label = int(self.image_set.labels[self._index])
        return {
            "object_index": self._index,
            "object_id": self.image_set.image_ids[self._index],
            "category": self.image_set.class_names[label],
            "category_index": label,
        }
