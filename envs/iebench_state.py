"""The 3DIEBench world: what its latents mean, the relative action SIE trains on, poses and nuisances.

3DIEBench (Garrido et al. 2023) renders each object under random latents; there is no env to
step, its views are recorded (:mod:`envs.iebench_layout` reads them). This module gives those
latents the :class:`envs.world.World` interface, so the learner trains and evaluates on them
as on a rendered world. The state is the seven latents of SIE's generator
(facebookresearch/SIE ``data/main.py``), in its order; a latent file may hold more values
(this project's writer adds its own extras, :data:`OBJECT_VIEW_EXTRAS`), which the state
leaves out.

State vector (float64, ``STATE_FIELDS`` order):

====  ============  ====================  ================================================
idx   name          range (SIE's draws)   unit / meaning
====  ============  ====================  ================================================
0-2   rotation_x..z [-pi/2, pi/2] each    rad, extrinsic x-y-z Euler angles of the object
                                          (R = Rz Ry Rx, scipy ``from_euler("xyz")``)
3     floor_hue     [0, 1]                hue of the floor, turns
4     light_theta   [0, pi/4]             rad, the spot light's angle from the vertical
5     light_phi     [0, 2 pi]             rad, the spot light's azimuth
6     light_hue     [0, 1]                hue of the spot light, turns
====  ============  ====================  ================================================

The relative action from view a to view b is SIE's (``src/dataset.py``): the rotation
``rot_a.inv() * rot_b`` (R_a^T R_b, the turn in view a's object frame) as a quaternion
(x, y, z, w), made canonical (w >= 0; SIE's loader keeps scipy's sign, w < 0 in about 4% of
pairs), then the plain differences b - a of the other latents the action set names (SIE's
``Dataset3DIEBenchRotColor`` and ``Dataset3DIEBenchAll``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from envs import iebench_layout
from envs.actions import ActionDim, max_steps, select_action_dims
from envs.quaternions import (
    euler_xyz_from_quat,
    quat_canonical,
    quat_conjugate,
    quat_from_euler_xyz,
    quat_multiply,
    quat_to_matrix,
)
from envs.scene_state import QUAT
from envs.scene_state import STATE_INDEX as OBJECT_VIEW_INDEX
from envs.view_arguments import IMAGE_SIZE_RANGE

STATE_FIELDS: tuple[str, ...] = (
    "rotation_x",
    "rotation_y",
    "rotation_z",
    "floor_hue",
    "light_theta",
    "light_phi",
    "light_hue",
)
STATE_DIM = len(STATE_FIELDS)
STATE_INDEX = {name: i for i, name in enumerate(STATE_FIELDS)}
ROTATION = slice(0, 3)

# SIE's generator: the camera at distance 2.5, polar angle pi/4, azimuth pi/2, looking at the
# object (world z up); the spot light's polar angle and azimuth are drawn per view.
CAMERA_EYE = 2.5 * np.array([0.0, np.sin(np.pi / 4), np.cos(np.pi / 4)])
LIGHT_THETA_MAX = np.pi / 4

# No env applies these: a dimension names a column of the relative action, and its max_step
# is the range of that column's latent.
ROTATION_DIMS = tuple(ActionDim(f"rotation_dq_{c}", 1.0, "quaternion component") for c in "xyzw")
FLOOR_HUE_DIM = ActionDim("floor_hue", 1.0, "hue turns, b - a")
LIGHT_THETA_DIM = ActionDim("light_theta", LIGHT_THETA_MAX, "rad, b - a")
LIGHT_PHI_DIM = ActionDim("light_phi", 2 * np.pi, "rad, b - a")
LIGHT_HUE_DIM = ActionDim("light_hue", 1.0, "hue turns, b - a")

#: The action set a run of this world has when none is given: SIE's rotation target.
DEFAULT_ACTION_SET = "rotation"
#: The targets of SIE's three loaders: rotation only, rotation + the two hues, rotation + every other latent.
ACTION_SETS: dict[str, tuple[ActionDim, ...]] = {
    "rotation": ROTATION_DIMS,
    "rotation_color": (*ROTATION_DIMS, FLOOR_HUE_DIM, LIGHT_HUE_DIM),
    "all": (*ROTATION_DIMS, FLOOR_HUE_DIM, LIGHT_THETA_DIM, LIGHT_PHI_DIM, LIGHT_HUE_DIM),
}


def action_dims(action_set: str) -> tuple[ActionDim, ...]:
    """The relative-action columns of ``action_set``; raises naming the valid sets."""
    return select_action_dims(ACTION_SETS, action_set)


def action_max_steps(action_set: str) -> np.ndarray:
    """The range of each column's latent (no env scales actions in this world)."""
    return max_steps(action_dims(action_set))


def apply_action(state: np.ndarray, action: np.ndarray, action_set: str) -> tuple[np.ndarray, np.ndarray]:
    """Never: 3DIEBench's views are recorded, so no action can change one."""
    raise ValueError(f"action_set={action_set!r}: 3DIEBench views are recorded, not rendered; no action can be applied")


def random_state(rng: np.random.Generator) -> np.ndarray:
    """Latents drawn as SIE's generator draws them (``data/main.py``)."""
    return np.array([
        *rng.uniform(-np.pi / 2, np.pi / 2, size=3),
        rng.uniform(0.0, 1.0),
        rng.uniform(0.0, LIGHT_THETA_MAX),
        rng.uniform(0.0, 2 * np.pi),
        rng.uniform(0.0, 1.0),
    ])  # fmt: skip


def object_quaternion(state: np.ndarray) -> np.ndarray:
    """The object's orientation (..., 4) (x, y, z, w), canonical, from its Euler latents."""
    return quat_from_euler_xyz(np.asarray(state, dtype=np.float64)[..., ROTATION])


def relative_quaternion(state_a: np.ndarray, state_b: np.ndarray) -> np.ndarray:
    """SIE's ``rot_a.inv() * rot_b`` (R_a^T R_b) as a canonical quaternion (x, y, z, w)."""
    return quat_canonical(quat_multiply(quat_conjugate(object_quaternion(state_a)), object_quaternion(state_b)))


def relative_change(state_a: np.ndarray, state_b: np.ndarray, action_set: str) -> np.ndarray:
    """SIE's target from view a to view b: the relative rotation quaternion, then b - a of
    each other latent ``action_set`` names. Broadcasts over leading dimensions."""
    a = np.asarray(state_a, dtype=np.float64)
    b = np.asarray(state_b, dtype=np.float64)
    columns = [relative_quaternion(a, b)]
    for dim in action_dims(action_set)[len(ROTATION_DIMS) :]:
        k = STATE_INDEX[dim.name]
        columns.append((b[..., k] - a[..., k])[..., None])
    return np.concatenate(columns, axis=-1)


def relative_action(state_a: np.ndarray, state_b: np.ndarray, action_set: str) -> np.ndarray:
    """The learning target: :func:`relative_change` as float32 (already continuous)."""
    return relative_change(state_a, state_b, action_set).astype(np.float32)


def relative_action_names(action_set: str) -> tuple[str, ...]:
    """Names of the columns of :func:`relative_action`: those of the action set's dimensions."""
    return tuple(d.name for d in action_dims(action_set))


def relative_action_discrete(action_set: str) -> np.ndarray:
    """Which columns of :func:`relative_action` are discrete targets: none."""
    return np.zeros(len(action_dims(action_set)), dtype=bool)


ABSOLUTE_POSE_NAMES: tuple[str, ...] = (
    "object_r00",
    "object_r10",
    "object_r20",
    "object_r01",
    "object_r11",
    "object_r21",
    "floor_hue_sin",
    "floor_hue_cos",
    "light_theta",
    "light_phi_sin",
    "light_phi_cos",
    "light_hue_sin",
    "light_hue_cos",
)
NUISANCE_NAMES: tuple[str, ...] = ABSOLUTE_POSE_NAMES[6:]


def absolute_pose_names() -> tuple[str, ...]:
    """Names of the columns of :func:`absolute_pose`."""
    return ABSOLUTE_POSE_NAMES


def absolute_pose(state: np.ndarray) -> np.ndarray:
    """What a view shows of its latents, continuously encoded (float32): the object's
    orientation (the first two columns of its rotation matrix; the camera is fixed, so this
    is also its orientation in the camera frame), then the scenery: floor hue, light angle
    from the vertical, light azimuth and light hue, periodic ones as sin/cos."""
    s = np.asarray(state, dtype=np.float64)
    rotation = quat_to_matrix(object_quaternion(s))
    floor, phi, light = 2 * np.pi * s[..., 3], s[..., 5], 2 * np.pi * s[..., 6]
    columns = [
        *(rotation[..., row, column] for column in (0, 1) for row in (0, 1, 2)),
        np.sin(floor),
        np.cos(floor),
        s[..., 4],
        np.sin(phi),
        np.cos(phi),
        np.sin(light),
        np.cos(light),
    ]
    return np.stack(columns, axis=-1).astype(np.float32)


def nuisance_names() -> tuple[str, ...]:
    """Names of the columns of :func:`nuisance_state`."""
    return NUISANCE_NAMES


def nuisance_state(states: np.ndarray) -> np.ndarray:
    """The scenery of states (..., STATE_DIM) as float64 (..., 7): floor hue, light angle,
    azimuth and hue (periodic ones as sin/cos). They say nothing about the object or its pose."""
    return absolute_pose(states)[..., 6:].astype(np.float64)


def viewpoint_azimuth(state: np.ndarray) -> np.ndarray:
    """Azimuth (rad) of SIE's fixed camera seen from the object's own frame: which side of
    the object is in view (for colouring embedding plots)."""
    in_object = np.einsum("...ji,j->...i", quat_to_matrix(object_quaternion(state)), CAMERA_EYE)  # R^T eye
    return np.arctan2(in_object[..., 1], in_object[..., 0])


def viewpoint_latent(states: np.ndarray, action_set: str) -> tuple[str, np.ndarray] | None:
    """``("viewpoint_azimuth", ...)``: every action set turns the object."""
    return "viewpoint_azimuth", viewpoint_azimuth(states)


def category_names(catalog: str | None) -> tuple[str, ...]:
    """The synsets (category folders) of the 3DIEBench folder ``catalog``, by label index."""
    if catalog is None:
        raise ValueError("catalog=None: the 3DIEBench world reads its categories from a 3DIEBench folder; pass its path")
    return iebench_layout.category_names(str(Path(catalog).expanduser().resolve()))


def check_arguments(action_set: str, image_size: int, catalog: str | None, splits: Sequence[str] = ()) -> None:
    """What an env constructor checks, for this env-less world: ``ValueError`` (or
    ``FileNotFoundError``) naming the argument. ``catalog`` None is left to the caller
    (``ciper-train`` takes the folder from ``train.dataset``)."""
    action_dims(action_set)
    low, high = IMAGE_SIZE_RANGE
    if isinstance(image_size, bool) or not isinstance(image_size, int) or not low <= image_size <= high:
        raise ValueError(f"image_size={image_size!r}: expected an int in [{IMAGE_SIZE_RANGE[0]}, {IMAGE_SIZE_RANGE[1]}]")
    if catalog is None:
        return
    root = Path(catalog).expanduser().resolve()
    if not iebench_layout.is_benchmark_folder(root):
        raise ValueError(f"catalog={catalog!r}: not a folder in the 3DIEBench layout (no <split>_images.npy lists in {root})")
    for split in splits:
        try:
            iebench_layout.resolve_split(root, split)
        except FileNotFoundError as error:
            raise ValueError(str(error)) from None


# ---------------------------------------------------------------- from the ObjectView world

#: The ObjectView latents a written 3DIEBench latent carries after SIE's seven, in this order.
OBJECT_VIEW_EXTRAS: tuple[str, ...] = (
    "camera_azimuth",
    "camera_elevation",
    "camera_distance",
    "light_r",
    "light_g",
    "light_b",
    "object_hue",
)
#: Every value of a latent written from an ObjectView state, in order.
OBJECT_VIEW_LATENT_NAMES: tuple[str, ...] = (*STATE_FIELDS, *OBJECT_VIEW_EXTRAS)


def rgb_hue(rgb: np.ndarray) -> np.ndarray:
    """HSV hue in turns [0, 1) of RGB colours (..., 3) (0 for greys), as ``colorsys.rgb_to_hsv``."""
    c = np.asarray(rgb, dtype=np.float64)
    r, g, b = c[..., 0], c[..., 1], c[..., 2]
    high, low = c.max(axis=-1), c.min(axis=-1)
    span = np.where(high > low, high - low, 1.0)
    hue = np.where(high == r, (g - b) / span, np.where(high == g, 2.0 + (b - r) / span, 4.0 + (r - g) / span))
    return np.where(high > low, (hue / 6.0) % 1.0, 0.0)


def latents_from_object_view(states: np.ndarray) -> np.ndarray:
    """ObjectView states (..., 14) as 3DIEBench latents (..., 14), float64: SIE's seven
    (the object's orientation as extrinsic x-y-z Euler angles; floor hue; light angle from
    the vertical = pi/2 - elevation; light azimuth in [0, 2 pi); the light colour's hue),
    then :data:`OBJECT_VIEW_EXTRAS` unchanged (docs/3diebench.md has the table)."""
    s = np.asarray(states, dtype=np.float64)
    light_rgb = s[..., [OBJECT_VIEW_INDEX[c] for c in ("light_r", "light_g", "light_b")]]
    columns = [
        euler_xyz_from_quat(s[..., QUAT]),
        s[..., OBJECT_VIEW_INDEX["floor_hue"], None],
        np.pi / 2 - s[..., OBJECT_VIEW_INDEX["light_elevation"], None],
        (s[..., OBJECT_VIEW_INDEX["light_azimuth"], None]) % (2 * np.pi),
        rgb_hue(light_rgb)[..., None],
        s[..., [OBJECT_VIEW_INDEX[name] for name in OBJECT_VIEW_EXTRAS]],
    ]
    return np.concatenate(columns, axis=-1)
