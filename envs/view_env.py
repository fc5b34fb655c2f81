"""The Gymnasium plumbing both view environments share: ``reset``/``step``/``render``/``close``,
the ``info`` layout, closed-env errors and pickling.

An observer looks at one item (a 3D object, a 2D image) whose view is set by a latent state
from a :class:`envs.world.World`; an action changes the state by a known amount. What
differs between the worlds (how the item is chosen and shown, how a state is drawn and
rendered, which nuisances a step redraws) is left to a few small methods of the subclass;
this class holds what is the same: the order of the calls, the checks, and the
episode bookkeeping.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import EzPickle

from envs.actions import validate_action
from envs.human_window import close_window, show_frame
from envs.view_arguments import NUISANCE_MODES, check_view_arguments
from envs.world import World


class ViewEnv(gym.Env, EzPickle, ABC):
    """Base of :class:`envs.object_view.ObjectViewEnv` and :class:`envs.image_view.ImageViewEnv`.

    A subclass sets ``world``, calls :meth:`_configure` then ``EzPickle.__init__`` with its
    constructor arguments from ``__init__``, and implements ``_start_state``,
    ``_redraw_nuisance``, ``_observe``, ``_render_frame`` and ``_item_info`` (and
    ``_show_item`` / ``_release`` where it holds a renderer). Always reward 0.0, never
    terminates, truncates after ``episode_steps`` steps.
    """

    metadata = {"render_modes": ["rgb_array", "human"], "render_fps": 15}
    #: The world whose states, actions and start states the env uses.
    world: ClassVar[World]
    #: ``reset`` option keys that choose the item to show; the first present one wins.
    index_options: ClassVar[tuple[str, ...]] = ("object_index",)

    def _configure(
        self, action_set: str, image_size: int, render_size: int, episode_steps: int, render_mode: str | None, nuisance: str
    ) -> None:
        """Check and store the arguments every view env takes (ValueError naming a bad one)."""
        if nuisance not in NUISANCE_MODES:
            raise ValueError(f"nuisance={nuisance!r}: expected one of {NUISANCE_MODES}")
        self.nuisance = nuisance
        self.action_dims = self.world.action_dims(action_set)
        self.action_set = action_set
        check_view_arguments(image_size, render_size, episode_steps, render_mode, self.metadata["render_modes"])
        self.image_size = int(image_size)
        self.render_size = int(render_size)
        self.episode_steps = int(episode_steps)
        self.render_mode = render_mode
        self.action_space = spaces.Box(-1.0, 1.0, shape=(len(self.action_dims),), dtype=np.float32)
        self._state = np.zeros(self.world.STATE_DIM)
        self._step = 0
        self._window: str | None = None
        self._closed = False

    # ------------------------------------------------------------------ gymnasium API

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self._check_open("reset")
        super().reset(seed=seed)
        options = options or {}
        index = self._pick_index(options)
        self._state = self._start_state(options)
        self._index = index
        self._step = 0
        self._show_item()
        observation = self._observe()
        if self.render_mode == "human":
            self.render()
        return observation, self._info(np.zeros(len(self.action_dims)))

    def step(self, action):
        self._check_open("step")
        action = validate_action(action, self.action_space.shape, self.action_set)
        self._state, applied = self.world.apply_action(self._state, action, self.action_set)
        if self.nuisance == "per_step":
            self._redraw_nuisance()
        self._step += 1
        observation = self._observe()
        if self.render_mode == "human":
            self.render()
        truncated = self._step >= self.episode_steps
        return observation, 0.0, False, truncated, self._info(applied)

    def render(self):
        if self.render_mode is None:
            gym.logger.warn("render() called with render_mode=None; pass render_mode='rgb_array' or 'human'")
            return None
        frame = self._render_frame()
        if self.render_mode == "rgb_array":
            return frame
        show_frame(self, frame)
        return None

    def close(self) -> None:
        close_window(self)
        self._release()
        self._closed = True

    @property
    def state(self) -> np.ndarray:
        """A copy of the current latent state (``state_fields`` order)."""
        return self._state.copy()

    # ------------------------------------------------------------------ shared steps

    def _check_open(self, call: str) -> None:
        if getattr(self, "_closed", False):
            raise RuntimeError(f"{type(self).__name__}.{call}() after close(): make a new env")

    @abstractmethod
    def _item_indices(self) -> np.ndarray | list[int]:
        """The indices of the items of the env's split."""

    def _pick_index(self, options: dict[str, Any]) -> int:
        """The item ``options`` names (it must belong to the split), else one drawn uniformly."""
        indices = self._item_indices()
        key = next((k for k in self.index_options if k in options), None)
        if key is None:
            return int(indices[int(self.np_random.integers(len(indices)))])
        index = int(options[key])
        if not np.any(np.asarray(indices) == index):
            raise ValueError(f"options[{key!r}]={index}: not in the env's split")
        return index

    def _info(self, applied: np.ndarray) -> dict[str, Any]:
        return {
            "state": self._state.copy(),
            "applied_action": np.asarray(applied, dtype=np.float64),
            **self._item_info(),
            "step": self._step,
            "renderer": self.renderer,
        }

    # ------------------------------------------------------------------ subclass hooks

    @abstractmethod
    def _start_state(self, options: dict[str, Any]) -> np.ndarray:
        """The state an episode starts from: ``options["state"]`` checked, else drawn."""

    @abstractmethod
    def _redraw_nuisance(self) -> None:
        """Draw the per-step nuisances afresh (``nuisance="per_step"``)."""

    @abstractmethod
    def _observe(self):
        """The observation of the current state."""

    @abstractmethod
    def _render_frame(self) -> np.ndarray:
        """The ``render_size`` RGB frame of the current state."""

    @abstractmethod
    def _item_info(self) -> dict[str, Any]:
        """``object_index``, ``object_id``, ``category`` and ``category_index`` of the item."""

    def _show_item(self) -> None:
        """Prepare the renderer for the current item (nothing by default)."""

    def _release(self) -> None:
        """Free the renderer (nothing by default)."""

    # ------------------------------------------------------------------ pickling

    # The env is rebuilt from its constructor arguments (EzPickle): pybullet clients cannot be
    # pickled, and an image set is reloaded (cached per process) rather than copied, which for
    # CIFAR-10 would be 180 MB per worker. The episode carries over, and so does the
    # generator, which draws the per-step nuisances: a copy continues the same draws.
    def __getstate__(self) -> dict[str, Any]:
        episode = {"state": self._state, "index": self._index, "step": self._step, "np_random": self.np_random}
        return {**EzPickle.__getstate__(self), "episode": episode}

    def __setstate__(self, saved: dict[str, Any]) -> None:
        EzPickle.__setstate__(self, saved)
        episode = saved["episode"]
        self._state, self._index, self._step = episode["state"], episode["index"], episode["step"]
        self._np_random = episode["np_random"]
        self._show_item()
