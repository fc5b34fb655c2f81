"""Quaternion maths on numpy arrays in pybullet's (x, y, z, w) layout.

Unit quaternions are the object-view world's rotations: the object's orientation in its
state, the rotation vector an action applies, and the relative rotation between two views
(the equivariance target). Every function broadcasts over leading dimensions.
"""

from __future__ import annotations

import numpy as np


def quat_canonical(q: np.ndarray) -> np.ndarray:
    """Unit quaternion(s) (x, y, z, w) with w >= 0 (q and -q are the same rotation)."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., 3:4] < 0.0, -q, q)


def quat_multiply(q1: np.ndarray, q2: np.ndarray) -> np.ndarray:
    """Hamilton product q1 * q2 (apply q2 first, then q1), (x, y, z, w) layout."""
    x1, y1, z1, w1 = np.moveaxis(np.asarray(q1, dtype=np.float64), -1, 0)
    x2, y2, z2, w2 = np.moveaxis(np.asarray(q2, dtype=np.float64), -1, 0)
    return np.stack(
        [
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
        ],
        axis=-1,
    )


def quat_conjugate(q: np.ndarray) -> np.ndarray:
    """The inverse rotation of unit quaternion(s): (-x, -y, -z, w)."""
    q = np.asarray(q, dtype=np.float64)
    return np.concatenate([-q[..., :3], q[..., 3:]], axis=-1)


def quat_from_rotvec(rotvec: np.ndarray) -> np.ndarray:
    """Quaternion of the rotation by |v| radians about v/|v| (exp map)."""
    v = np.asarray(rotvec, dtype=np.float64)
    angle = np.linalg.norm(v, axis=-1, keepdims=True)
    half = 0.5 * angle
    # sin(a/2)/a -> 1/2 as a -> 0; the series keeps tiny rotations exact.
    scale = np.where(angle > 1e-8, np.sin(half) / np.maximum(angle, 1e-12), 0.5 - angle**2 / 48.0)
    return np.concatenate([v * scale, np.cos(half)], axis=-1)


def rotvec_from_quat(q: np.ndarray) -> np.ndarray:
    """Rotation vector (log map) of a quaternion; the angle is in [0, pi]."""
    q = quat_canonical(q)
    xyz, w = q[..., :3], np.clip(q[..., 3:], -1.0, 1.0)
    sin_half = np.linalg.norm(xyz, axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(sin_half, w)
    scale = np.where(sin_half > 1e-8, angle / np.maximum(sin_half, 1e-12), 2.0)
    return xyz * scale


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrix (..., 3, 3) of quaternion(s) (x, y, z, w)."""
    x, y, z, w = np.moveaxis(quat_canonical(q), -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=-2,
    )


def random_quaternion(rng: np.random.Generator) -> np.ndarray:
    """Uniformly distributed rotation (Shoemake), canonical w >= 0."""
    u1, u2, u3 = rng.random(3)
    q = np.array(
        [
            np.sqrt(1 - u1) * np.sin(2 * np.pi * u2),
            np.sqrt(1 - u1) * np.cos(2 * np.pi * u2),
            np.sqrt(u1) * np.sin(2 * np.pi * u3),
            np.sqrt(u1) * np.cos(2 * np.pi * u3),
        ]
    )
    return quat_canonical(q)


def _axis_quaternion(angle: np.ndarray, axis: int) -> np.ndarray:
    """Quaternion(s) of a rotation by ``angle`` radians about coordinate axis 0, 1 or 2."""
    half = 0.5 * np.asarray(angle, dtype=np.float64)
    q = np.zeros((*half.shape, 4))
    q[..., axis] = np.sin(half)
    q[..., 3] = np.cos(half)
    return q


def quat_from_euler_xyz(angles: np.ndarray) -> np.ndarray:
    """Quaternion(s) of extrinsic x-y-z Euler angles (..., 3): turn about the fixed x axis,
    then y, then z, so R = Rz Ry Rx (scipy's ``Rotation.from_euler("xyz", ...)``, Blender's
    XYZ Euler: 3DIEBench's rotation latents). Canonical (w >= 0)."""
    a = np.asarray(angles, dtype=np.float64)
    qx, qy, qz = (_axis_quaternion(a[..., i], i) for i in range(3))
    return quat_canonical(quat_multiply(qz, quat_multiply(qy, qx)))


def euler_xyz_from_quat(q: np.ndarray) -> np.ndarray:
    """Extrinsic x-y-z Euler angles (..., 3) of quaternion(s), the inverse of
    :func:`quat_from_euler_xyz`: x and z in [-pi, pi], y in [-pi/2, pi/2]. At gimbal lock
    (y = +-pi/2) x is set to 0 and z carries the whole turn about the vertical."""
    m = quat_to_matrix(q)
    sin_y = np.clip(-m[..., 2, 0], -1.0, 1.0)
    y = np.arcsin(sin_y)
    locked = np.abs(sin_y) > 1.0 - 1e-12
    x = np.where(locked, 0.0, np.arctan2(m[..., 2, 1], m[..., 2, 2]))
    z = np.where(locked, np.arctan2(-m[..., 0, 1], m[..., 1, 1]), np.arctan2(m[..., 1, 0], m[..., 0, 0]))
    return np.stack([x, y, z], axis=-1)
