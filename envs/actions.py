"""The action kernel both worlds share: what an action dimension is, how a set of them is
looked up, how a raw action is checked, and how periodic quantities wrap.

Each world (:mod:`envs.scene_state`, :mod:`envs.image_state`) defines its own action
dimensions and what they do to its state; the rules every world follows live here once:
an action is a vector of finite normalised values, one per dimension, scaled by that
dimension's ``max_step``; angles wrap to [-pi, pi) and hue-like quantities (in turns) to
[-0.5, 0.5).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ActionDim:
    """One action dimension: a normalised value in [-1, 1] times ``max_step`` ``unit``s."""

    name: str
    max_step: float
    unit: str


def select_action_dims(action_sets: Mapping[str, tuple[ActionDim, ...]], action_set: str) -> tuple[ActionDim, ...]:
    """The dimensions of ``action_set`` in a world's ``action_sets``; raises naming the valid sets."""
    if not isinstance(action_set, str) or action_set not in action_sets:  # a list is unhashable
        raise ValueError(f"action_set={action_set!r}: expected one of {sorted(action_sets)}")
    return action_sets[action_set]


def max_steps(dims: tuple[ActionDim, ...]) -> np.ndarray:
    """Physical size of a normalised action of 1.0, per dimension."""
    return np.array([d.max_step for d in dims], dtype=np.float64)


def validate_action(action, shape: tuple[int, ...], action_set: str) -> np.ndarray:
    """``action`` as float64 of ``shape``; ValueError naming the value otherwise (wrong
    shape, non-numeric, non-finite). Finite values outside [-1, 1] pass: they are clipped
    when applied."""
    try:
        array = np.asarray(action, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as error:  # strings, complex, ints beyond float64
        raise ValueError(f"action={action!r}: expected {shape} real numbers ({error})") from None
    if array.shape != tuple(shape):
        raise ValueError(f"action shape {array.shape}: expected {tuple(shape)} for action_set={action_set!r}")
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"action[{i}]={array[i]}: actions must be finite")
    return array


def wrap_angle(angle: np.ndarray | float) -> np.ndarray:
    """Wrap radians to [-pi, pi)."""
    return (np.asarray(angle) + np.pi) % (2.0 * np.pi) - np.pi


def wrap_unit(value: np.ndarray | float) -> np.ndarray:
    """Wrap a hue-like quantity measured in turns to [-0.5, 0.5)."""
    return (np.asarray(value) + 0.5) % 1.0 - 0.5
