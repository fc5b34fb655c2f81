"""The interface every world's pure-numpy state/action module provides.

A world (:mod:`envs.scene_state` for 3D objects, :mod:`envs.image_state` for static images)
says what its state vector holds, what each action dimension does to it, and how to read
targets and labels off absolute states. The agent and the learner only use a world through
this protocol, obtained with :func:`envs.world_module`, so they serve both worlds without
asking which one they hold. The modules themselves implement it (PEP 544: a module can
satisfy a protocol); ``isinstance(module, World)`` checks that every member is there.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from envs.actions import ActionDim


@runtime_checkable
class World(Protocol):
    """State fields, action semantics, relative actions, poses and nuisances of one world."""

    #: Names of the state vector's fields, in order; ``STATE_INDEX`` maps a name to its index.
    STATE_FIELDS: tuple[str, ...]
    STATE_DIM: int
    STATE_INDEX: dict[str, int]
    #: The action dimensions each ``action_set`` exposes, in order.
    ACTION_SETS: dict[str, tuple[ActionDim, ...]]
    #: The action set an env of this world has when none is given.
    DEFAULT_ACTION_SET: str

    def action_dims(self, action_set: str) -> tuple[ActionDim, ...]:
        """The action dimensions of ``action_set``; ValueError naming the valid sets."""
        ...

    def action_max_steps(self, action_set: str) -> np.ndarray:
        """Physical size of a normalised action of 1.0, per dimension."""
        ...

    def random_state(self, rng: np.random.Generator) -> np.ndarray:
        """A random start state drawn from ``rng``."""
        ...

    def apply_action(self, state: np.ndarray, action: np.ndarray, action_set: str) -> tuple[np.ndarray, np.ndarray]:
        """The new state and the change actually applied, in physical units."""
        ...

    def relative_change(self, state_a: np.ndarray, state_b: np.ndarray, action_set: str) -> np.ndarray:
        """Change from a to b in physical units, in the action's layout."""
        ...

    def relative_action(self, state_a: np.ndarray, state_b: np.ndarray, action_set: str) -> np.ndarray:
        """The learning target from view a to view b (float32, continuous encoding)."""
        ...

    def relative_action_names(self, action_set: str) -> tuple[str, ...]:
        """Names of the columns of :meth:`relative_action`."""
        ...

    def relative_action_discrete(self, action_set: str) -> np.ndarray:
        """Which columns of :meth:`relative_action` are discrete targets (bool)."""
        ...

    def absolute_pose(self, state: np.ndarray) -> np.ndarray:
        """What an image can show of the absolute state, continuously encoded (float32)."""
        ...

    def absolute_pose_names(self) -> tuple[str, ...]:
        """Names of the columns of :meth:`absolute_pose`."""
        ...

    def nuisance_state(self, states: np.ndarray) -> np.ndarray:
        """The variables a view shows that say nothing about the object or its pose."""
        ...

    def nuisance_names(self) -> tuple[str, ...]:
        """Names of the columns of :meth:`nuisance_state`."""
        ...

    def viewpoint_latent(self, states: np.ndarray, action_set: str) -> tuple[str, np.ndarray] | None:
        """Name and values of a one-number summary of which side of the object is in view,
        where the world defines one for ``action_set`` (for colouring embedding plots)."""
        ...

    def category_names(self, catalog: str | None) -> tuple[str, ...]:
        """The category labels of ``catalog`` (None: the shipped one), by label index."""
        ...


def visible_pose_names(world: World) -> tuple[str, ...]:
    """The absolute-pose columns a view shows of its object and camera: every column of
    ``world.absolute_pose`` but the scenery's (those among ``world.nuisance_names()``)."""
    return tuple(n for n in world.absolute_pose_names() if n not in world.nuisance_names())


def visible_pose(world: World, states: np.ndarray) -> np.ndarray:
    """``world.absolute_pose(states)`` restricted to :func:`visible_pose_names` (float32 (..., P)):
    the oracle's features and the supervised ceiling's per-view target."""
    visible = ~np.isin(list(world.absolute_pose_names()), list(world.nuisance_names()))
    return world.absolute_pose(states)[..., visible].astype(np.float32)
