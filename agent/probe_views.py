"""A fixed, seeded set of evaluation views: short random-action episodes of every object.

Frozen-encoder evaluation needs the same views for every method it compares, labelled with
what the probes predict: object, category and the absolute latent state (from which the
relative action between any two views of one episode follows, as in 3DIEBench). This module
renders them once in-process with a single env (simple and deterministic): for each object
of a split, ``ceil(views_per_object / episode_length)`` episodes of uniform random actions,
each starting from a seeded random state. Every episode's randomness comes from
:func:`episode_seed`, so any one episode can be replayed by hand. It works for every env
whose ``info`` carries ``state``, ``object_index``, ``category_index`` and ``step``
(``ciper/ObjectView-v0`` and ``ciper/ImageView-v0``, where an "object" is an image).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

import envs  # noqa: F401  (registers the env ids)
from envs.view_arguments import env_kwargs


@dataclass(frozen=True)
class ProbeViews:
    """N evaluation views with their labels; arrays are read-only (they may be shared)."""

    views: np.ndarray  # uint8 (N, H, W, 3)
    state: np.ndarray  # float64 (N, S): absolute latent state (the env's STATE_FIELDS)
    object_index: np.ndarray  # int64 (N,): catalogue row (image index for ImageView)
    category: np.ndarray  # int64 (N,): category label, -1 where the object has none
    episode: np.ndarray  # int64 (N,): episode id, unique over the whole set
    step: np.ndarray  # int64 (N,): steps since the episode's reset

    def __len__(self) -> int:
        return int(self.views.shape[0])

    def select(self, rows: np.ndarray) -> ProbeViews:
        """The subset of ``rows`` (indices or a boolean mask), same order."""
        return ProbeViews(*(np.asarray(getattr(self, f))[rows] for f in _FIELDS))


_FIELDS = ("views", "state", "object_index", "category", "episode", "step")

# Probe view sets kept per process: a report evaluates many methods on the same views.
_CACHE_SIZE = 4
_cache: OrderedDict[str, ProbeViews] = OrderedDict()


def episode_seed(seed: int, object_index: int, episode: int) -> int:
    """The seed of one probe episode: its env reset and its action sequence derive from it.

    Keyed by the object's catalogue row (not its position in the split) so an object's
    episodes stay the same when ``objects_limit`` changes which other objects are shown.
    """
    return int(np.random.SeedSequence([seed, object_index, episode]).generate_state(1)[0])


def episode_actions(seed: int, n_steps: int, action_dim: int) -> np.ndarray:
    """The uniform random actions in [-1, 1] (float32, (n_steps, action_dim)) of an episode."""
    return np.random.default_rng(seed).uniform(-1.0, 1.0, size=(n_steps, action_dim)).astype(np.float32)


def split_objects(env: gym.Env) -> np.ndarray:
    """Catalogue rows of the objects (images) an env instance draws from, ascending."""
    base = env.unwrapped
    # ObjectViewEnv calls them object_indices, ImageViewEnv image_indices.
    rows = getattr(base, "object_indices", None)
    if rows is None:
        rows = getattr(base, "image_indices", None)
    if rows is None:
        raise TypeError(f"{type(base).__name__}: has neither object_indices nor image_indices")
    return np.sort(np.asarray(rows, dtype=np.int64))


def limit_objects(rows: np.ndarray, objects_limit: int | None) -> np.ndarray:
    """At most ``objects_limit`` rows, evenly spaced over the split.

    Catalogues list objects grouped by category, so even spacing keeps every category in a
    small subset, which a first-k cut would not.
    """
    if objects_limit is None or objects_limit >= len(rows):
        return rows
    if objects_limit < 1:
        raise ValueError(f"objects_limit={objects_limit}: expected None or >= 1")
    picks = np.unique(np.linspace(0, len(rows) - 1, objects_limit).round().astype(np.int64))
    return rows[picks]


def render_probe_views(
    env_cfg: Any,
    split: str,
    views_per_object: int,
    seed: int,
    episode_length: int = 8,
    objects_limit: int | None = None,
) -> ProbeViews:
    """Render the probe views of every object of ``split`` (the env's other settings from
    ``env_cfg``, a ``conf.schema.EnvConfig``-like object).

    Each object gets ``views_per_object`` views from episodes of ``episode_length`` views
    (the reset view and ``episode_length - 1`` random steps; the last episode is cut short
    when the division is not exact). Results are cached per process by every argument that
    changes them, and their arrays are read-only.
    """
    if views_per_object < 2:
        raise ValueError(f"views_per_object={views_per_object}: expected >= 2 (pairs of views)")
    if episode_length < 2:
        raise ValueError(f"episode_length={episode_length}: expected >= 2 (pairs of views)")
    kwargs = env_kwargs(env_cfg)
    # The episode never truncates inside a probe episode; rgb only, whatever env_cfg observes.
    kwargs.update(split=split, episode_steps=episode_length)
    kwargs.pop("observe", None)
    key = repr((env_cfg.id, sorted(kwargs.items()), views_per_object, seed, episode_length, objects_limit))
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key]
    env = gym.make(env_cfg.id, **kwargs)
    try:
        probe = _render(env, views_per_object, seed, episode_length, objects_limit)
    finally:
        env.close()
    _cache[key] = probe
    if len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return probe


def _render(
    env: gym.Env, views_per_object: int, seed: int, episode_length: int, objects_limit: int | None
) -> ProbeViews:
    action_dim = int(np.prod(env.action_space.shape))
    columns: dict[str, list] = {f: [] for f in _FIELDS}
    episodes_per_object = math.ceil(views_per_object / episode_length)
    episode_id = 0
    for row in limit_objects(split_objects(env), objects_limit):
        remaining = views_per_object
        for episode in range(episodes_per_object):
            length = min(episode_length, remaining)
            remaining -= length
            s = episode_seed(seed, int(row), episode)
            observation, info = env.reset(seed=s, options={"object_index": int(row)})
            records = [(observation, info)]
            for action in episode_actions(s, length - 1, action_dim):
                observation, _, _, _, info = env.step(action)
                records.append((observation, info))
            for observation, info in records:
                columns["views"].append(observation)
                columns["state"].append(info["state"])
                columns["object_index"].append(info["object_index"])
                columns["category"].append(info["category_index"])
                columns["episode"].append(episode_id)
                columns["step"].append(info["step"])
            episode_id += 1
    dtypes = {"views": np.uint8, "state": np.float64}
    arrays = {f: np.asarray(v, dtype=dtypes.get(f, np.int64)) for f, v in columns.items()}
    for array in arrays.values():
        array.setflags(write=False)
    return ProbeViews(**arrays)


def episode_pairs(episode: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (a, b) of every ordered pair of views of one episode, a earlier than b.

    Assumes rows of an episode are contiguous and in step order (as rendered), so every
    temporal offset 1..length-1 appears.
    """
    firsts, seconds = [], []
    for value in np.unique(episode):
        rows = np.flatnonzero(episode == value)
        i, j = np.triu_indices(rows.size, 1)
        firsts.append(rows[i])
        seconds.append(rows[j])
    return np.concatenate(firsts), np.concatenate(seconds)


def pairs_within(episode: np.ndarray, step: np.ndarray, low: int, high: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows (a, b) of views of one episode with ``low <= step[b] - step[a] <= high``."""
    a, b = episode_pairs(episode)
    if low == 0:  # a view paired with itself (SimCLR's two copies of one view)
        rows = np.arange(len(episode))
        a, b = np.concatenate([rows, a]), np.concatenate([rows, b])
    offset = step[b] - step[a]
    keep = (offset >= low) & (offset <= high)
    return a[keep], b[keep]
