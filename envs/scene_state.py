"""Latent scene state, action semantics and relative actions of the object-view world.

This module is the single source of truth for what a scene state vector holds, what each
action dimension does in physical units, and how the relative action between two views is
computed from their absolute states (the way 3DIEBench derives it from its latents). It is
pure numpy so the agent (pair sampling) and the learner (targets, evaluation) can share it
without touching pybullet. The rules every world's actions follow (checks, wrapping) live
in :mod:`envs.actions`, the rotation maths in :mod:`envs.quaternions`.

State vector (float64, ``STATE_FIELDS`` order):

====  ==================  ======================  =====================================
idx   name                range                   unit / meaning
====  ==================  ======================  =====================================
0     camera_azimuth      [-pi, pi)               rad, about the world z axis
1     camera_elevation    [ELEVATION_MIN, MAX]    rad above the horizontal plane
2     camera_distance     [DISTANCE_MIN, MAX]     scene units (object radius is 0.5)
3-6   object_qx..qw       unit quaternion, w>=0   object-to-world rotation (x, y, z, w)
7     light_azimuth       [-pi, pi)               rad
8     light_elevation     [LIGHT_ELEV_MIN, MAX]   rad
9-11  light_r, g, b       [0, 1]                  light colour
12    floor_hue           [0, 1)                  hue of the floor's tint
13    object_hue          [0, 1)                  hue of the object's tint
====  ==================  ======================  =====================================
"""

from __future__ import annotations

import numpy as np

from envs.actions import ActionDim, max_steps, select_action_dims, wrap_angle, wrap_unit
from envs.catalog import load_catalog
from envs.quaternions import (
    quat_canonical,
    quat_conjugate,
    quat_from_rotvec,
    quat_multiply,
    quat_to_matrix,
    random_quaternion,
    rotvec_from_quat,
)

STATE_FIELDS: tuple[str, ...] = (
    "camera_azimuth",
    "camera_elevation",
    "camera_distance",
    "object_qx",
    "object_qy",
    "object_qz",
    "object_qw",
    "light_azimuth",
    "light_elevation",
    "light_r",
    "light_g",
    "light_b",
    "floor_hue",
    "object_hue",
)
STATE_DIM = len(STATE_FIELDS)
STATE_INDEX = {name: i for i, name in enumerate(STATE_FIELDS)}
QUAT = slice(3, 7)

ELEVATION_MIN = np.deg2rad(5.0)
ELEVATION_MAX = np.deg2rad(75.0)
DISTANCE_MIN = 1.2
DISTANCE_MAX = 2.2
LIGHT_ELEVATION_MIN = np.deg2rad(10.0)
LIGHT_ELEVATION_MAX = np.deg2rad(85.0)


CAMERA_DIMS = (
    ActionDim("camera_azimuth", np.deg2rad(15.0), "rad"),
    ActionDim("camera_elevation", np.deg2rad(10.0), "rad"),
    ActionDim("camera_distance", 0.25, "scene units"),
)
OBJECT_DIMS = (
    ActionDim("object_rot_x", np.deg2rad(15.0), "rad (world x, rotation vector)"),
    ActionDim("object_rot_y", np.deg2rad(15.0), "rad (world y, rotation vector)"),
    ActionDim("object_rot_z", np.deg2rad(15.0), "rad (world z, rotation vector)"),
)
# The object turned about the axes of the current view (the rotation vector in the camera
# frame of the view before the step: x right, y up, z toward the camera), as an observer turns
# a thing in hand: a turn about y shows the object's side, about z rolls it in the image.
VIEW_OBJECT_DIMS = (
    ActionDim("object_turn_x", np.deg2rad(15.0), "rad (camera right axis, rotation vector)"),
    ActionDim("object_turn_y", np.deg2rad(15.0), "rad (camera up axis, rotation vector)"),
    ActionDim("object_turn_z", np.deg2rad(15.0), "rad (camera view axis, toward the camera)"),
)
LIGHT_DIMS = (
    ActionDim("light_azimuth", np.deg2rad(45.0), "rad"),
    ActionDim("light_elevation", np.deg2rad(15.0), "rad"),
)
FLOOR_DIMS = (ActionDim("floor_hue", 0.05, "hue turns"),)

#: The action set an env of this world has when none is given.
DEFAULT_ACTION_SET = "camera"
#: Which action dimensions each ``action_set`` exposes, in order.
ACTION_SETS: dict[str, tuple[ActionDim, ...]] = {
    "camera": CAMERA_DIMS,
    "object": OBJECT_DIMS,
    "light": LIGHT_DIMS,
    # The observer moves itself and turns the object in hand (report=objects): every
    # column changes the object's pose in the camera frame, none is a scenery change.
    "observer": CAMERA_DIMS + OBJECT_DIMS,
    # The same observer, turning the object about the axes of its own view instead of the
    # world's (what the images show directly, without the camera azimuth; docs/object_turn.md).
    "handheld": CAMERA_DIMS + VIEW_OBJECT_DIMS,
    "full": CAMERA_DIMS + OBJECT_DIMS + LIGHT_DIMS + FLOOR_DIMS,
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

    ``action`` is clipped to [-1, 1] and scaled to physical units; the camera elevation,
    camera distance and light elevation are then clamped to their ranges. Returns the new
    state and the change actually applied, in physical units, in the action's layout
    (object dimensions are the rotation vector that was applied: in the world frame for
    ``object_rot_*``, in the camera frame of ``state`` for ``object_turn_*``).
    """
    dims = action_dims(action_set)
    requested = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0) * action_max_steps(action_set)
    new = np.array(state, dtype=np.float64, copy=True)
    applied = np.zeros(len(dims), dtype=np.float64)
    rotvec = np.zeros(3)  # world frame
    turn = np.zeros(3)  # camera frame of the view before the step
    for i, (dim, step) in enumerate(zip(dims, requested, strict=True)):
        name = dim.name
        if name in ("camera_azimuth", "light_azimuth"):
            k = STATE_INDEX[name]
            new[k] = wrap_angle(new[k] + step)
            applied[i] = step
        elif name in ("camera_elevation", "camera_distance", "light_elevation"):
            k = STATE_INDEX[name]
            low, high = _BOUNDS[name]
            target = float(np.clip(new[k] + step, low, high))
            applied[i] = target - new[k]
            new[k] = target
        elif name.startswith("object_rot_"):
            rotvec["xyz".index(name[-1])] = step
            applied[i] = step
        elif name.startswith("object_turn_"):
            turn["xyz".index(name[-1])] = step
            applied[i] = step
        elif name == "floor_hue":
            k = STATE_INDEX[name]
            new[k] = (new[k] + step) % 1.0
            applied[i] = step
        else:  # pragma: no cover - ACTION_SETS and this table are edited together
            raise AssertionError(f"no transition for action dimension {name!r}")
    if np.any(turn):
        rotvec = rotvec + camera_rotation(state) @ turn
    if np.any(rotvec):
        new[QUAT] = quat_canonical(quat_multiply(quat_from_rotvec(rotvec), new[QUAT]))
    return new, applied


_BOUNDS = {
    "camera_elevation": (ELEVATION_MIN, ELEVATION_MAX),
    "camera_distance": (DISTANCE_MIN, DISTANCE_MAX),
    "light_elevation": (LIGHT_ELEVATION_MIN, LIGHT_ELEVATION_MAX),
}


def relative_change(state_a: np.ndarray, state_b: np.ndarray, action_set: str) -> np.ndarray:
    """Change from ``state_a`` to ``state_b`` in physical units, in ``action_set``'s layout.

    Angles are wrapped deltas in [-pi, pi), hue a wrapped delta in turns, and the object
    dimensions the rotation vector of ``q_b * q_a^-1``: in the world frame (``object_rot_*``)
    or in the camera frame of view a (``object_turn_*``). Broadcasts over leading
    dimensions. For one step it equals ``info["applied_action"]`` (modulo 2 pi).
    """
    a = np.asarray(state_a, dtype=np.float64)
    b = np.asarray(state_b, dtype=np.float64)
    rotvec = turn = None
    columns = []
    for dim in action_dims(action_set):
        name = dim.name
        if name in ("camera_azimuth", "light_azimuth"):
            k = STATE_INDEX[name]
            columns.append(wrap_angle(b[..., k] - a[..., k]))
        elif name in ("camera_elevation", "camera_distance", "light_elevation"):
            k = STATE_INDEX[name]
            columns.append(b[..., k] - a[..., k])
        elif name.startswith("object_rot_"):
            if rotvec is None:
                rotvec = rotvec_from_quat(relative_quaternion(a, b))
            columns.append(rotvec[..., "xyz".index(name[-1])])
        elif name.startswith("object_turn_"):
            if turn is None:
                turn = relative_turn(a, b)
            columns.append(turn[..., "xyz".index(name[-1])])
        elif name == "floor_hue":
            k = STATE_INDEX[name]
            columns.append(wrap_unit(b[..., k] - a[..., k]))
    return np.stack(columns, axis=-1)


def relative_quaternion(state_a: np.ndarray, state_b: np.ndarray) -> np.ndarray:
    """World-frame rotation taking the object from view a to view b, canonical (w >= 0)."""
    qa = np.asarray(state_a, dtype=np.float64)[..., QUAT]
    qb = np.asarray(state_b, dtype=np.float64)[..., QUAT]
    return quat_canonical(quat_multiply(qb, quat_conjugate(qa)))


def relative_turn(state_a: np.ndarray, state_b: np.ndarray) -> np.ndarray:
    """The object's rotation from view a to view b as a rotation vector in view a's camera
    frame (x right, y up, z toward the camera): ``R_camera(a)^T`` times the world-frame one."""
    world = rotvec_from_quat(relative_quaternion(state_a, state_b))  # (..., 3)
    return np.einsum("...ji,...j->...i", camera_rotation(state_a), world)


def relative_action_names(action_set: str) -> tuple[str, ...]:
    """Names of the columns of :func:`relative_action` for ``action_set``."""
    names: list[str] = []
    dims = [d.name for d in action_dims(action_set)]
    if "camera_azimuth" in dims:
        names += ["camera_azimuth_sin", "camera_azimuth_cos", "camera_elevation", "camera_distance"]
    if any(d.startswith("object_rot_") for d in dims):
        names += ["object_dq_x", "object_dq_y", "object_dq_z", "object_dq_w"]
    if any(d.startswith("object_turn_") for d in dims):
        names += ["object_turn_dq_x", "object_turn_dq_y", "object_turn_dq_z", "object_turn_dq_w"]
    if "light_azimuth" in dims:
        names += ["light_azimuth_sin", "light_azimuth_cos", "light_elevation"]
    if "floor_hue" in dims:
        names += ["floor_hue_sin", "floor_hue_cos"]
    return tuple(names)


def relative_action(state_a: np.ndarray, state_b: np.ndarray, action_set: str) -> np.ndarray:
    """The learning target: the relative action from view a to view b, encoded (float32).

    Encoding (columns named by :func:`relative_action_names`): azimuth deltas as sin/cos,
    elevation and distance deltas as plain differences, the object rotation as the
    canonical relative quaternion ``q_b * q_a^-1`` (x, y, z, w with w >= 0; for
    ``object_turn_*`` that rotation in view a's camera frame), the floor hue
    delta as sin/cos of 2 pi times the delta. Continuous everywhere except the measure-zero
    set where the relative rotation is exactly pi. Broadcasts over leading dimensions.
    """
    change = relative_change(state_a, state_b, action_set)
    dims = [d.name for d in action_dims(action_set)]
    columns = []
    if "camera_azimuth" in dims:
        c = dims.index("camera_azimuth")
        columns += [np.sin(change[..., c]), np.cos(change[..., c]), change[..., c + 1], change[..., c + 2]]
    if any(d.startswith("object_rot_") for d in dims):
        dq = relative_quaternion(state_a, state_b)
        columns += [dq[..., 0], dq[..., 1], dq[..., 2], dq[..., 3]]
    if any(d.startswith("object_turn_") for d in dims):
        dq = quat_canonical(quat_from_rotvec(relative_turn(state_a, state_b)))
        columns += [dq[..., 0], dq[..., 1], dq[..., 2], dq[..., 3]]
    if "light_azimuth" in dims:
        c = dims.index("light_azimuth")
        columns += [np.sin(change[..., c]), np.cos(change[..., c]), change[..., c + 1]]
    if "floor_hue" in dims:
        c = dims.index("floor_hue")
        columns += [np.sin(2 * np.pi * change[..., c]), np.cos(2 * np.pi * change[..., c])]
    return np.stack(columns, axis=-1).astype(np.float32)


def relative_action_discrete(action_set: str) -> np.ndarray:
    """Which columns of :func:`relative_action` are discrete targets: none in this world."""
    return np.zeros(len(relative_action_names(action_set)), dtype=bool)


ABSOLUTE_POSE_NAMES: tuple[str, ...] = (
    "object_in_camera_r00",
    "object_in_camera_r10",
    "object_in_camera_r20",
    "object_in_camera_r01",
    "object_in_camera_r11",
    "object_in_camera_r21",
    "camera_elevation",
    "camera_distance",
    "light_azimuth_from_camera_sin",
    "light_azimuth_from_camera_cos",
    "light_elevation",
    "floor_hue_sin",
    "floor_hue_cos",
    "camera_azimuth_sin",
    "camera_azimuth_cos",
    "object_in_world_r00",
    "object_in_world_r10",
    "object_in_world_r20",
    "object_in_world_r01",
    "object_in_world_r11",
    "object_in_world_r21",
)
# The columns that only the floor pattern shows (the world frame): a turn of the whole scene
# about world z changes these and no other.
WORLD_FRAME_NAMES: tuple[str, ...] = tuple(n for n in ABSOLUTE_POSE_NAMES if n.startswith(("camera_azimuth", "object_in_world")))


def absolute_pose_names() -> tuple[str, ...]:
    """Names of the columns of :func:`absolute_pose`."""
    return ABSOLUTE_POSE_NAMES


def camera_rotation(state: np.ndarray) -> np.ndarray:
    """Camera-to-world rotation (..., 3, 3): columns right, up, backward (OpenGL camera
    looking at the origin with world z up, as the renderer's view matrix)."""
    s = np.asarray(state, dtype=np.float64)
    az, el = s[..., 0], s[..., 1]
    eye = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1)
    forward = -eye
    right = np.cross(forward, np.array([0.0, 0.0, 1.0]))
    right = right / np.linalg.norm(right, axis=-1, keepdims=True)
    up = np.cross(right, forward)
    return np.stack([right, up, -forward], axis=-1)


def absolute_pose(state: np.ndarray) -> np.ndarray:
    """What an image can show of the absolute state, as a continuous encoding (float32).

    The pose is the object's orientation in the camera frame (``R_camera^T R_object``, its
    first two columns: the 6D representation of Zhou et al. 2019, free of the q/-q
    ambiguity), the camera elevation (the horizon) and distance (the object's size), the
    light's azimuth relative to the camera (shading) as sin/cos, the light elevation, the
    floor hue as sin/cos and, since the floor pattern fixes the world frame, the camera
    azimuth as sin/cos and the object's orientation in the world frame (6D). The world-frame
    orientation is redundant with the others, but it makes the world-frame object rotation
    between two views (the action's columns) a bilinear function of the two poses, which the
    relative-pose probe can learn from a few thousand pairs; without it the oracle scored
    −0.5 to 0.2 R² on the object-rotation columns (docs/pilot_sweep.md).
    Columns: :func:`absolute_pose_names`.
    """
    s = np.asarray(state, dtype=np.float64)
    in_world = quat_to_matrix(s[..., QUAT])
    in_camera = np.swapaxes(camera_rotation(s), -1, -2) @ in_world
    light_from_camera = s[..., 7] - s[..., 0]
    hue = 2 * np.pi * s[..., STATE_INDEX["floor_hue"]]
    columns = [
        in_camera[..., 0, 0],
        in_camera[..., 1, 0],
        in_camera[..., 2, 0],
        in_camera[..., 0, 1],
        in_camera[..., 1, 1],
        in_camera[..., 2, 1],
        s[..., 1],
        s[..., 2],
        np.sin(light_from_camera),
        np.cos(light_from_camera),
        s[..., 8],
        np.sin(hue),
        np.cos(hue),
        np.sin(s[..., 0]),
        np.cos(s[..., 0]),
        *(in_world[..., row, column] for column in (0, 1) for row in (0, 1, 2)),
    ]
    return np.stack(columns, axis=-1).astype(np.float32)


NUISANCE_NAMES: tuple[str, ...] = (
    "floor_hue_sin",
    "floor_hue_cos",
    "light_r",
    "light_g",
    "light_b",
    "light_azimuth_sin",
    "light_azimuth_cos",
    "light_elevation",
    "object_hue_sin",
    "object_hue_cos",
)


def nuisance_names() -> tuple[str, ...]:
    """Names of the columns of :func:`nuisance_state`."""
    return NUISANCE_NAMES


def nuisance_state(states: np.ndarray) -> np.ndarray:
    """The nuisance variables of states (..., STATE_DIM) as float64 (..., k): what a view
    shows that says nothing about the object or its pose (floor hue as sin/cos, light
    colour, light direction with the world-frame azimuth as sin/cos, object tint hue as
    sin/cos). A representation
    whose structure these columns explain has learnt the scene, not the object.
    Columns: :func:`nuisance_names`."""
    s = np.asarray(states, dtype=np.float64)
    hue = 2 * np.pi * s[..., STATE_INDEX["floor_hue"]]
    light_az = s[..., STATE_INDEX["light_azimuth"]]
    columns = [
        np.sin(hue),
        np.cos(hue),
        s[..., STATE_INDEX["light_r"]],
        s[..., STATE_INDEX["light_g"]],
        s[..., STATE_INDEX["light_b"]],
        np.sin(light_az),
        np.cos(light_az),
        s[..., STATE_INDEX["light_elevation"]],
        np.sin(2 * np.pi * s[..., STATE_INDEX["object_hue"]]),
        np.cos(2 * np.pi * s[..., STATE_INDEX["object_hue"]]),
    ]
    return np.stack(columns, axis=-1)


def viewpoint_azimuth(state: np.ndarray) -> np.ndarray:
    """Azimuth (rad) of the camera seen from the object's own frame: the one-number summary
    of which side of the object is in view (used to colour embedding plots)."""
    s = np.asarray(state, dtype=np.float64)
    az, el = s[..., 0], s[..., 1]
    eye = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1)
    in_object = np.einsum("...ji,...j->...i", quat_to_matrix(s[..., QUAT]), eye)  # R^T eye
    return np.arctan2(in_object[..., 1], in_object[..., 0])


def viewpoint_latent(states: np.ndarray, action_set: str) -> tuple[str, np.ndarray] | None:
    """``("viewpoint_azimuth", viewpoint_azimuth(states))`` where ``action_set`` moves the
    camera or the object, so the side in view changes; None where it moves neither."""
    if not any(d.name.startswith(("camera_", "object_rot_", "object_turn_")) for d in action_dims(action_set)):
        return None
    return "viewpoint_azimuth", viewpoint_azimuth(states)


def category_names(catalog: str | None) -> tuple[str, ...]:
    """The object categories of ``catalog`` (a CSV path; None: the shipped catalogue)."""
    return load_catalog(catalog).categories


def random_state(rng: np.random.Generator) -> np.ndarray:
    """A random start state drawn from ``rng`` (documented in ObjectViewEnv)."""
    state = np.empty(STATE_DIM, dtype=np.float64)
    state[0] = rng.uniform(-np.pi, np.pi)
    state[1] = rng.uniform(np.deg2rad(15.0), np.deg2rad(60.0))
    state[2] = rng.uniform(1.35, 1.85)
    state[QUAT] = random_quaternion(rng)
    state[7] = rng.uniform(-np.pi, np.pi)
    state[8] = rng.uniform(np.deg2rad(30.0), np.deg2rad(75.0))
    state[9:12] = rng.uniform(0.7, 1.0, size=3)
    state[12] = rng.uniform(0.0, 1.0)
    state[13] = rng.uniform(0.0, 1.0)
    return state


#: Fields a ``nuisance="per_step"`` env redraws after every step (unless an action moves them).
PER_STEP_NUISANCE_FIELDS: tuple[str, ...] = ("light_r", "light_g", "light_b", "floor_hue", "object_hue")


def redraw_nuisance(state: np.ndarray, rng: np.random.Generator, action_set: str) -> np.ndarray:
    """``state`` with its per-step nuisances (light colour, floor and object hue) drawn
    afresh from ``rng`` as :func:`random_state` draws them; a field that ``action_set``
    moves is kept, so its action stays the only thing that changes it."""
    moved = {d.name for d in action_dims(action_set)}
    new = np.array(state, dtype=np.float64, copy=True)
    new[9:12] = rng.uniform(0.7, 1.0, size=3)
    for name in ("floor_hue", "object_hue"):
        value = rng.uniform(0.0, 1.0)
        if name not in moved:
            new[STATE_INDEX[name]] = value
    return new
