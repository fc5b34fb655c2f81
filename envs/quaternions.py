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
