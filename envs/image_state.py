"""Latent view state, action semantics and relative actions of the static-image world.

The image world's counterpart of :mod:`envs.scene_state`, with the same public names and
semantics so the agent (pair sampling) and the learner (targets, evaluation) can use either
world through one interface: a state vector holds the parameters of the augmentation under
which one 2D image is seen (crop, rotation, flip, colour), each action dimension changes one
parameter by a known amount, and the relative action between two views is computed from
their absolute states. Pure numpy; the renderer lives in :mod:`envs.image_view`.

State vector (float64, ``STATE_FIELDS`` order):

====  ===============  ========================  ==========================================
idx   name             range                     unit / meaning
====  ===============  ========================  ==========================================
0     crop_x           [CROP_CENTER_MIN, MAX]    crop centre, fraction of the image width
1     crop_y           [CROP_CENTER_MIN, MAX]    crop centre, fraction of the image height
2     crop_scale       [CROP_SCALE_MIN, MAX]     crop side, fraction of the shorter side
3     rotation         [-pi, pi)                 rad, crop window about its centre
4     flip             {0, 1}                    1 = view mirrored left-right
5     brightness       [BRIGHTNESS_MIN, MAX]     multiplicative factor (1 = unchanged)
6     contrast         [CONTRAST_MIN, MAX]       multiplicative factor (1 = unchanged)
7     saturation       [SATURATION_MIN, MAX]     multiplicative factor (1 = unchanged)
8     hue              [-0.5, 0.5)               hue shift in turns (0 = unchanged)
9     background       {0, .., POOL-1} or -1     background of the view: index into the
                                                 shared background pool (-1: the image's own)
====  ===============  ========================  ==========================================

Crop scale, brightness, contrast and saturation are factors, but their actions and relative
changes are in natural-log units, so a step means the same relative change anywhere in the
range and consecutive changes add up.
"""

from __future__ import annotations

import numpy as np

from envs.actions import ActionDim, max_steps, select_action_dims, wrap_angle, wrap_unit
from envs.image_sources import BACKGROUND_POOL_SIZE, load_image_set

STATE_FIELDS: tuple[str, ...] = (
    "crop_x",
    "crop_y",
    "crop_scale",
    "rotation",
    "flip",
    "brightness",
    "contrast",
    "saturation",
    "hue",
    "background",
)
STATE_DIM = len(STATE_FIELDS)
STATE_INDEX = {name: i for i, name in enumerate(STATE_FIELDS)}

# With the centre at most 0.2 from the image centre and a crop at most the full side, at
# least 80% of the (unrotated) crop window lies inside the image; the rest is reflected.
CROP_CENTER_MIN = 0.3
CROP_CENTER_MAX = 0.7
CROP_SCALE_MIN = 0.4
CROP_SCALE_MAX = 1.0
BRIGHTNESS_MIN, BRIGHTNESS_MAX = 0.6, 1.6
CONTRAST_MIN, CONTRAST_MAX = 0.6, 1.6
SATURATION_MIN, SATURATION_MAX = 0.4, 2.0
#: The ``background`` value of a view that shows the image's own pixels (sources without a
#: separate foreground, such as CIFAR-10 or an image folder).
OWN_BACKGROUND = -1.0
#: A flip action dimension toggles the flip when its (clipped) value exceeds this.
FLIP_THRESHOLD = 0.5

GEOMETRIC_DIMS = (
    ActionDim("crop_x", 0.05, "fraction of the image width"),
    ActionDim("crop_y", 0.05, "fraction of the image height"),
    ActionDim("crop_scale", 0.1, "log crop scale"),
    ActionDim("rotation", np.deg2rad(15.0), "rad"),
)
PHOTOMETRIC_DIMS = (
    ActionDim("brightness", 0.1, "log factor"),
    ActionDim("contrast", 0.1, "log factor"),
    ActionDim("saturation", 0.2, "log factor"),
    ActionDim("hue", 0.05, "hue turns"),
)
FLIP_DIMS = (ActionDim("flip", 1.0, "toggle when the value is > 0.5"),)

#: The action set an env of this world has when none is given.
DEFAULT_ACTION_SET = "geometric"
#: Which action dimensions each ``action_set`` exposes, in order.
ACTION_SETS: dict[str, tuple[ActionDim, ...]] = {
    "geometric": GEOMETRIC_DIMS,
    "photometric": PHOTOMETRIC_DIMS,
    "full": GEOMETRIC_DIMS + PHOTOMETRIC_DIMS + FLIP_DIMS,
}

# Bounded fields: (low, high, log_space). Log-space fields clamp and differ in log units.
_BOUNDS: dict[str, tuple[float, float, bool]] = {
    "crop_x": (CROP_CENTER_MIN, CROP_CENTER_MAX, False),
    "crop_y": (CROP_CENTER_MIN, CROP_CENTER_MAX, False),
    "crop_scale": (CROP_SCALE_MIN, CROP_SCALE_MAX, True),
    "brightness": (BRIGHTNESS_MIN, BRIGHTNESS_MAX, True),
    "contrast": (CONTRAST_MIN, CONTRAST_MAX, True),
    "saturation": (SATURATION_MIN, SATURATION_MAX, True),
}


def action_dims(action_set: str) -> tuple[ActionDim, ...]:
    """The action dimensions of ``action_set``; raises naming the valid sets."""
    return select_action_dims(ACTION_SETS, action_set)


def action_max_steps(action_set: str) -> np.ndarray:
    """Physical size of a normalised action of 1.0, per dimension of ``action_set``."""
    return max_steps(action_dims(action_set))


# ---------------------------------------------------------------- state transitions


def apply_action(state: np.ndarray, action: np.ndarray, action_set: str) -> tuple[np.ndarray, np.ndarray]:
    """Apply a normalised, already validated action to ``state``.

    ``action`` is clipped to [-1, 1] and scaled to physical units; crop centre, crop scale
    and the colour factors are then clamped to their ranges, rotation and hue wrap around.
    The flip dimension is discrete: a clipped value above ``FLIP_THRESHOLD`` (0.5) toggles
    the flip, anything else leaves it. Returns the new state and the change actually
    applied in physical units, in the action's layout (log units for the factors, 1.0/0.0
    for a toggled/untouched flip).
    """
    dims = action_dims(action_set)
    clipped = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
    requested = clipped * action_max_steps(action_set)
    new = np.array(state, dtype=np.float64, copy=True)
    applied = np.zeros(len(dims), dtype=np.float64)
    for i, (dim, step) in enumerate(zip(dims, requested, strict=True)):
        name = dim.name
        k = STATE_INDEX[name]
        if name in _BOUNDS:
            low, high, log_space = _BOUNDS[name]
            if log_space:
                current = np.log(new[k])
                target = float(np.clip(current + step, np.log(low), np.log(high)))
                applied[i] = target - current
                new[k] = np.exp(target)
            else:
                target = float(np.clip(new[k] + step, low, high))
                applied[i] = target - new[k]
                new[k] = target
        elif name == "rotation":
            new[k] = wrap_angle(new[k] + step)
            applied[i] = step
        elif name == "hue":
            new[k] = wrap_unit(new[k] + step)
            applied[i] = step
        elif name == "flip":
            if clipped[i] > FLIP_THRESHOLD:
                new[k] = 1.0 - new[k]
                applied[i] = 1.0
        else:  # pragma: no cover - ACTION_SETS and this table are edited together
            raise AssertionError(f"no transition for action dimension {name!r}")
    return new, applied


def relative_change(state_a: np.ndarray, state_b: np.ndarray, action_set: str) -> np.ndarray:
    """Change from ``state_a`` to ``state_b`` in physical units, in ``action_set``'s layout.

    Crop centre deltas are plain differences, the factors (crop scale, brightness,
    contrast, saturation) log ratios, rotation a wrapped delta in [-pi, pi), hue a wrapped
    delta in turns, and flip 1.0 where the flips differ, else 0.0. Broadcasts over leading
    dimensions. For one step it equals ``info["applied_action"]`` (modulo wrapping).
    """
    a = np.asarray(state_a, dtype=np.float64)
    b = np.asarray(state_b, dtype=np.float64)
    columns = []
    for dim in action_dims(action_set):
        name = dim.name
        k = STATE_INDEX[name]
        if name in _BOUNDS and _BOUNDS[name][2]:
            columns.append(np.log(b[..., k]) - np.log(a[..., k]))
        elif name in _BOUNDS:
            columns.append(b[..., k] - a[..., k])
        elif name == "rotation":
            columns.append(wrap_angle(b[..., k] - a[..., k]))
        elif name == "hue":
            columns.append(wrap_unit(b[..., k] - a[..., k]))
        elif name == "flip":
            columns.append((np.round(a[..., k]) != np.round(b[..., k])).astype(np.float64))
    return np.stack(columns, axis=-1)


def relative_action_names(action_set: str) -> tuple[str, ...]:
    """Names of the columns of :func:`relative_action` for ``action_set``."""
    names: list[str] = []
    dims = [d.name for d in action_dims(action_set)]
    if "crop_x" in dims:
        names += ["crop_dx", "crop_dy", "crop_log_scale", "rotation_sin", "rotation_cos"]
    if "brightness" in dims:
        names += ["log_brightness", "log_contrast", "log_saturation", "hue_sin", "hue_cos"]
    if "flip" in dims:
        names += ["flip"]
    return tuple(names)


def relative_action(state_a: np.ndarray, state_b: np.ndarray, action_set: str) -> np.ndarray:
    """The learning target: the relative action from view a to view b, encoded (float32).

    Encoding (columns named by :func:`relative_action_names`): crop centre deltas and the
    log ratios of the factors as they are, the rotation delta as sin/cos, the hue delta as
    sin/cos of 2 pi times the delta, and flip as 1.0 where the two views' flips differ, else
    0.0 (a discrete column, see :func:`relative_action_discrete`). Broadcasts over leading
    dimensions.
    """
    change = relative_change(state_a, state_b, action_set)
    dims = [d.name for d in action_dims(action_set)]
    columns = []
    if "crop_x" in dims:
        c = dims.index("crop_x")
        rotation = change[..., c + 3]
        columns += [change[..., c], change[..., c + 1], change[..., c + 2], np.sin(rotation), np.cos(rotation)]
    if "brightness" in dims:
        c = dims.index("brightness")
        hue = 2 * np.pi * change[..., c + 3]
        columns += [change[..., c], change[..., c + 1], change[..., c + 2], np.sin(hue), np.cos(hue)]
    if "flip" in dims:
        columns.append(change[..., dims.index("flip")])
    return np.stack(columns, axis=-1).astype(np.float32)


def relative_action_discrete(action_set: str) -> np.ndarray:
    """Which columns of :func:`relative_action` are discrete targets: only ``flip``."""
    return np.array([name == "flip" for name in relative_action_names(action_set)], dtype=bool)


ABSOLUTE_POSE_NAMES: tuple[str, ...] = (
    "crop_x",
    "crop_y",
    "crop_log_scale",
    "rotation_sin",
    "rotation_cos",
    "flip",
    "log_brightness",
    "log_contrast",
    "log_saturation",
    "hue_sin",
    "hue_cos",
)


def absolute_pose_names() -> tuple[str, ...]:
    """Names of the columns of :func:`absolute_pose`."""
    return ABSOLUTE_POSE_NAMES


def absolute_pose(state: np.ndarray) -> np.ndarray:
    """A continuous encoding of an absolute state for pose regression (float32).

    Angles (rotation, hue) as sin/cos, the factors as logs, flip as 0/1. Columns are named
    by ``ABSOLUTE_POSE_NAMES``.
    """
    s = np.asarray(state, dtype=np.float64)
    hue = 2 * np.pi * s[..., 8]
    columns = [
        s[..., 0],
        s[..., 1],
        np.log(s[..., 2]),
        np.sin(s[..., 3]),
        np.cos(s[..., 3]),
        s[..., 4],
        np.log(s[..., 5]),
        np.log(s[..., 6]),
        np.log(s[..., 7]),
        np.sin(hue),
        np.cos(hue),
    ]
    return np.stack(columns, axis=-1).astype(np.float32)


def identity_state(background: float = 0.0) -> np.ndarray:
    """The un-augmented view: the whole image, upright, unflipped, colours unchanged, on
    pool background ``background`` (``OWN_BACKGROUND`` for the image's own pixels)."""
    return np.array([0.5, 0.5, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, background])


NUISANCE_NAMES: tuple[str, ...] = ("background",)


def nuisance_names() -> tuple[str, ...]:
    """Names of the columns of :func:`nuisance_state`."""
    return NUISANCE_NAMES


def nuisance_state(states: np.ndarray) -> np.ndarray:
    """The nuisance variables of states (..., STATE_DIM) as float64 (..., k): the view's
    background (pool index; ``OWN_BACKGROUND`` = -1 for the image's own pixels). It says
    nothing about the image's class or the augmentation. Columns: :func:`nuisance_names`."""
    s = np.asarray(states, dtype=np.float64)
    return s[..., STATE_INDEX["background"]][..., None].copy()


def viewpoint_latent(states: np.ndarray, action_set: str) -> tuple[str, np.ndarray] | None:
    """None: a flat image has one side in view whatever the augmentation."""
    return None


def category_names(catalog: str | None) -> tuple[str, ...]:
    """The classes of the image source ``catalog`` (None: the built-in digits)."""
    return load_image_set(catalog).class_names


def random_state(rng: np.random.Generator) -> np.ndarray:
    """A random start state drawn from ``rng`` (documented in ImageViewEnv).

    Drawn well inside the ranges so the first steps rarely hit a clamp.
    """
    state = np.empty(STATE_DIM, dtype=np.float64)
    state[0:2] = rng.uniform(0.4, 0.6, size=2)
    state[2] = np.exp(rng.uniform(np.log(0.55), np.log(0.9)))
    state[3] = rng.uniform(-np.deg2rad(30.0), np.deg2rad(30.0))
    state[4] = float(rng.integers(2))
    state[5:8] = np.exp(rng.uniform(-0.2, 0.2, size=3))
    state[8] = rng.uniform(-0.1, 0.1)
    state[9] = float(rng.integers(BACKGROUND_POOL_SIZE))
    return state


def validate_state(state: np.ndarray) -> np.ndarray:
    """``state`` as a float64 copy if it is a valid state; raises naming the bad field."""
    s = np.array(state, dtype=np.float64, copy=True)
    if s.shape != (STATE_DIM,):
        raise ValueError(f"state shape {s.shape}: expected ({STATE_DIM},)")
    for k, name in enumerate(STATE_FIELDS):
        value = s[k]
        if not np.isfinite(value):
            raise ValueError(f"state[{k}] ({name})={value}: must be finite")
        if name in _BOUNDS:
            low, high, _ = _BOUNDS[name]
            if not low - 1e-9 <= value <= high + 1e-9:
                raise ValueError(f"state[{k}] ({name})={value}: expected a value in [{low}, {high}]")
        elif name == "flip" and value not in (0.0, 1.0):
            raise ValueError(f"state[{k}] (flip)={value}: expected 0 or 1")
        elif name == "background" and not (value == OWN_BACKGROUND or (value == int(value) and 0 <= value < BACKGROUND_POOL_SIZE)):
            raise ValueError(
                f"state[{k}] (background)={value}: expected an integer in [0, {BACKGROUND_POOL_SIZE}) "
                f"or {OWN_BACKGROUND:g} (the image's own background)"
            )
    s[3] = wrap_angle(s[3])
    s[8] = wrap_unit(s[8])
    return s
