"""Observer policies: batched rules that choose the next action of every env in a vector env.

A policy sees the batch of observations and infos of N envs and returns N normalised
actions in the action box; ``reset(env_mask)`` tells it which envs started a new episode so
per-episode memory (the orbit phase, the Ornstein-Uhlenbeck state) restarts there. The
built-in policies are cheap numpy rules seeded by one ``np.random.Generator``; learned
policies (``curious``, which needs torch) are added by the learner with
:func:`register_policy` and built by the same :func:`make_policy` factory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
from gymnasium import spaces

from envs.scene_state import ACTION_SETS, DEFAULT_ACTION_SET


class ObserverPolicy(Protocol):
    """The interface every observer policy offers to a collector."""

    def reset(self, env_mask: np.ndarray) -> None:
        """Restart the per-episode memory of the envs where ``env_mask`` (N,) is True."""

    def act(self, observations: np.ndarray, infos: dict) -> np.ndarray:
        """Actions (N, A) float32 inside the action box for the current views."""


def _box_bounds(action_space: spaces.Box) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(action_space, spaces.Box) or len(action_space.shape) != 1:
        raise ValueError(f"action_space={action_space!r}: expected a 1-D Box (one env's action space)")
    low = np.asarray(action_space.low, dtype=np.float32)
    high = np.asarray(action_space.high, dtype=np.float32)
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        raise ValueError(f"action_space={action_space!r}: expected finite bounds")
    return low, high


def _check_num_envs(num_envs: int) -> int:
    if int(num_envs) < 1:
        raise ValueError(f"num_envs={num_envs!r}: expected an int >= 1")
    return int(num_envs)


class RandomPolicy:
    """Uniformly random actions in the box, independent from step to step."""

    def __init__(self, action_space: spaces.Box, num_envs: int, seed: int | None = None) -> None:
        self.low, self.high = _box_bounds(action_space)
        self.num_envs = _check_num_envs(num_envs)
        self.rng = np.random.default_rng(seed)

    def reset(self, env_mask: np.ndarray) -> None:
        """Stateless: nothing to restart."""

    def act(self, observations: np.ndarray, infos: dict) -> np.ndarray:
        shape = (self.num_envs, self.low.shape[0])
        return self.rng.uniform(self.low, self.high, size=shape).astype(np.float32)


class SmoothPolicy:
    """Ornstein-Uhlenbeck actions: ``a <- a - theta * a + sigma * N(0, 1)``, clipped to the box.

    Consecutive actions are correlated (an infant turning a toy rather than a jittering
    camera), so pairs several steps apart still differ by a sizeable, consistent motion.
    On reset an env's action restarts from a draw of the (unclipped) stationary
    distribution, so new episodes do not begin with a transient of small moves.
    """

    def __init__(
        self,
        action_space: spaces.Box,
        num_envs: int,
        seed: int | None = None,
        theta: float = 0.15,
        sigma: float = 0.35,
    ) -> None:
        if not 0.0 < theta <= 1.0:
            raise ValueError(f"theta={theta!r}: expected a mean reversion in (0, 1]")
        if sigma < 0.0:
            raise ValueError(f"sigma={sigma!r}: expected a noise scale >= 0")
        self.low, self.high = _box_bounds(action_space)
        self.num_envs = _check_num_envs(num_envs)
        self.theta, self.sigma = float(theta), float(sigma)
        self.rng = np.random.default_rng(seed)
        self.action = np.zeros((self.num_envs, self.low.shape[0]), dtype=np.float64)
        self.reset(np.ones(self.num_envs, dtype=bool))

    def reset(self, env_mask: np.ndarray) -> None:
        rows = np.flatnonzero(np.asarray(env_mask, dtype=bool))
        # Stationary std of the AR(1) process a' = (1 - theta) a + sigma e.
        std = self.sigma / np.sqrt(1.0 - (1.0 - self.theta) ** 2)
        start = self.rng.normal(0.0, std, size=(rows.size, self.action.shape[1]))
        self.action[rows] = np.clip(start, self.low, self.high)

    def act(self, observations: np.ndarray, infos: dict) -> np.ndarray:
        noise = self.rng.normal(0.0, self.sigma, size=self.action.shape)
        self.action = np.clip(self.action - self.theta * self.action + noise, self.low, self.high)
        return self.action.astype(np.float32)


class OrbitPolicy:
    """A deterministic viewpoint sweep: constant azimuth steps, elevation slowly up and down.

    Per action dimension (named by ``envs.scene_state.ACTION_SETS[action_set]``): every
    ``*_azimuth`` moves by ``speed`` each step; every ``*_elevation`` moves by
    ``speed / 4`` and reverses direction every ``half_period`` steps (a triangle wave);
    the object rotation dimensions turn the object by ``speed`` about a fixed unit axis
    drawn per env and episode from the seed; the remaining dimensions stay at 0. Action
    sets this module does not know (another env's) sweep their first dimension only.
    """

    def __init__(
        self,
        action_space: spaces.Box,
        num_envs: int,
        seed: int | None = None,
        speed: float = 0.5,
        action_set: str = DEFAULT_ACTION_SET,
        half_period: int = 8,
    ) -> None:
        if half_period < 1:
            raise ValueError(f"half_period={half_period!r}: expected an int >= 1")
        self.low, self.high = _box_bounds(action_space)
        self.num_envs = _check_num_envs(num_envs)
        self.speed, self.half_period = float(speed), int(half_period)
        self.rng = np.random.default_rng(seed)
        size = self.low.shape[0]
        names = [d.name for d in ACTION_SETS[action_set]] if action_set in ACTION_SETS else []
        if len(names) != size:
            names = ["sweep"] + ["still"] * (size - 1)
        self.azimuth = np.array([n.endswith("azimuth") or n == "sweep" for n in names])
        self.elevation = np.array([n.endswith("elevation") for n in names])
        self.rotation = np.array([n.startswith(("object_rot_", "object_turn_")) for n in names])
        self.phase = np.zeros(self.num_envs, dtype=np.int64)
        self.axis = np.zeros((self.num_envs, int(self.rotation.sum())), dtype=np.float64)
        self.reset(np.ones(self.num_envs, dtype=bool))

    def reset(self, env_mask: np.ndarray) -> None:
        rows = np.flatnonzero(np.asarray(env_mask, dtype=bool))
        self.phase[rows] = 0
        if self.axis.shape[1]:
            axis = self.rng.normal(size=(rows.size, self.axis.shape[1]))
            self.axis[rows] = axis / np.linalg.norm(axis, axis=1, keepdims=True)

    def act(self, observations: np.ndarray, infos: dict) -> np.ndarray:
        action = np.zeros((self.num_envs, self.low.shape[0]), dtype=np.float64)
        action[:, self.azimuth] = self.speed
        up = (self.phase // self.half_period) % 2 == 0
        action[:, self.elevation] = np.where(up, 0.25, -0.25)[:, None] * self.speed
        action[:, self.rotation] = self.speed * self.axis
        self.phase += 1
        return np.clip(action, self.low, self.high).astype(np.float32)


PolicyFactory = Callable[..., ObserverPolicy]
"""``factory(cfg, action_space, num_envs, seed, action_set=...) -> ObserverPolicy``."""


def _random(cfg: Any, action_space: spaces.Box, num_envs: int, seed: int | None, action_set: str = DEFAULT_ACTION_SET) -> ObserverPolicy:
    return RandomPolicy(action_space, num_envs, seed)


def _smooth(cfg: Any, action_space: spaces.Box, num_envs: int, seed: int | None, action_set: str = DEFAULT_ACTION_SET) -> ObserverPolicy:
    return SmoothPolicy(action_space, num_envs, seed, theta=cfg.smooth_theta, sigma=cfg.smooth_sigma)


def _orbit(cfg: Any, action_space: spaces.Box, num_envs: int, seed: int | None, action_set: str = DEFAULT_ACTION_SET) -> ObserverPolicy:
    return OrbitPolicy(action_space, num_envs, seed, speed=cfg.orbit_speed, action_set=action_set)


_REGISTRY: dict[str, PolicyFactory] = {"random": _random, "orbit": _orbit, "smooth": _smooth}


def register_policy(name: str, factory: PolicyFactory) -> None:
    """Make ``make_policy`` build ``factory`` for ``cfg.name == name`` (e.g. the learner's
    ``curious``). The factory takes ``(cfg, action_space, num_envs, seed, action_set=...)``
    like the built-ins; registering a name again replaces its factory."""
    if not callable(factory):
        raise TypeError(f"factory={factory!r}: expected a callable")
    _REGISTRY[str(name)] = factory


def registered_policies() -> tuple[str, ...]:
    """Names ``make_policy`` accepts right now."""
    return tuple(sorted(_REGISTRY))


def make_policy(
    cfg: Any,
    action_space: spaces.Box,
    num_envs: int,
    seed: int | None = None,
    action_set: str = DEFAULT_ACTION_SET,
) -> ObserverPolicy:
    """Build the policy named ``cfg.name`` (a ``conf.schema.PolicyConfig``-like object) for
    ``num_envs`` envs sharing one env's ``action_space``."""
    factory = _REGISTRY.get(cfg.name)
    if factory is None:
        raise ValueError(f"policy name={cfg.name!r}: expected one of {list(registered_policies())}")
    return factory(cfg, action_space, num_envs, seed, action_set=action_set)
