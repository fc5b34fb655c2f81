"""Drawing view pairs from stored transitions: which views pair up, and gathering a pair batch.

A valid pair (i, j) is two stored views of the same episode with ``step[j] - step[i]`` in
``[min_offset, max_offset]`` (i is the earlier view). Storage order is arbitrary (a vector
env interleaves its episodes; a ring buffer wraps), so pairing goes through links:
``links[n, k]`` is the index of the view k steps before view n in the same episode, or -1
when that view is not stored. :class:`PairIndex` builds the links of a fixed set of views
once (one sort by (episode, step), then one binary search per offset) and samples valid
pairs uniformly, every valid pair equally likely, with no per-pair Python work; the
on-disk dataset uses it. The live replay buffer keeps the same links incrementally as it
writes, so it never re-sorts. :func:`build_view_pairs` turns drawn indices into a
:class:`~agent.view_pairs.ViewPairs` batch, computing the relative action from the two
stored absolute states with a function passed in (each env family brings its own).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from agent.view_pairs import ViewPairs
from envs.scene_state import relative_action

RelativeActionFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``fn(state_a (B, S), state_b (B, S)) -> relative_action (B, R) float32``."""

StorageGetter = Callable[[str, np.ndarray], np.ndarray]
"""``get(field, indices) -> rows``; fields: view, state, object_index, category, step."""


def object_view_relative_action(action_set: str) -> RelativeActionFn:
    """The ObjectView relative action for ``action_set``, as a picklable function."""
    return functools.partial(relative_action, action_set=action_set)


def check_offsets(min_offset: int, max_offset: int) -> None:
    """Raise unless ``0 <= min_offset <= max_offset``."""
    if not 0 <= int(min_offset) <= int(max_offset):
        raise ValueError(
            f"min_offset={min_offset!r}, max_offset={max_offset!r}: expected 0 <= min_offset <= max_offset"
        )


def partner_links(
    episode_id: np.ndarray, step: np.ndarray, max_offset: int, valid: np.ndarray | None = None
) -> np.ndarray:
    """Links (N, max_offset + 1) int64: ``links[n, k]`` = index of the view of ``n``'s episode
    at ``step[n] - k``, or -1 when it is absent or not ``valid``. Column 0 is ``n`` itself
    (-1 for invalid views). Raises on a duplicated (episode, step)."""
    episode_id = np.asarray(episode_id, dtype=np.int64)
    step = np.asarray(step, dtype=np.int64)
    if episode_id.shape != step.shape or episode_id.ndim != 1:
        raise ValueError(f"episode_id {episode_id.shape}, step {step.shape}: expected two equal (N,) arrays")
    check_offsets(0, max_offset)
    links = np.full((episode_id.size, int(max_offset) + 1), -1, dtype=np.int64)
    rows = np.arange(episode_id.size) if valid is None else np.flatnonzero(np.asarray(valid, dtype=bool))
    if rows.size == 0:
        return links
    order = rows[np.lexsort((step[rows], episode_id[rows]))]
    episodes, steps = episode_id[order], step[order]
    # Dense episode ranks make one int64 key per view whatever the size of the episode ids.
    rank = np.concatenate([[0], np.cumsum(episodes[1:] != episodes[:-1])])
    span = int(steps.max() - steps.min()) + int(max_offset) + 1
    key = rank * span + (steps - steps.min())
    duplicate = np.flatnonzero(key[1:] == key[:-1])
    if duplicate.size:
        n = int(order[duplicate[0] + 1])
        raise ValueError(f"view {n}: (episode {episode_id[n]}, step {step[n]}) is stored twice")
    for k in range(int(max_offset) + 1):
        position = np.minimum(np.searchsorted(key, key - k), key.size - 1)
        found = key[position] == key - k
        links[order, k] = np.where(found, order[position], -1)
    return links


class PairIndex:
    """All valid pairs of a fixed set of views, sampled uniformly.

    Build once (O(N log N) for the sort, plus O(N * max_offset)), then ``sample`` costs one
    ``rng.integers`` call and two gathers however large N is.
    """

    def __init__(
        self,
        episode_id: np.ndarray,
        step: np.ndarray,
        min_offset: int,
        max_offset: int,
        valid: np.ndarray | None = None,
    ) -> None:
        check_offsets(min_offset, max_offset)
        self.min_offset, self.max_offset = int(min_offset), int(max_offset)
        window = partner_links(episode_id, step, max_offset, valid)[:, self.min_offset :]
        flat = np.flatnonzero(window >= 0)
        self.later = flat // window.shape[1]
        self.earlier = window.ravel()[flat]

    @property
    def num_pairs(self) -> int:
        return int(self.later.size)

    def sample(self, batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``batch_size`` pairs (i, j) drawn with replacement, each valid pair equally likely."""
        if self.num_pairs == 0:
            raise ValueError(
                f"no pair of views of one episode lies {self.min_offset}..{self.max_offset} steps apart"
            )
        pick = rng.integers(self.num_pairs, size=int(batch_size))
        return self.earlier[pick], self.later[pick]


def sample_pair_indices(
    episode_id: np.ndarray,
    step: np.ndarray,
    batch_size: int,
    min_offset: int,
    max_offset: int,
    rng: np.random.Generator,
    valid: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One-off draw of ``batch_size`` pairs (i, j): same episode, i earlier, offset in range.

    Builds a :class:`PairIndex` each call; keep one instead to sample repeatedly."""
    return PairIndex(episode_id, step, min_offset, max_offset, valid).sample(batch_size, rng)


def build_view_pairs(
    get: StorageGetter, i: np.ndarray, j: np.ndarray, relative_action_fn: RelativeActionFn
) -> ViewPairs:
    """Gather pairs (i earlier, j later) through ``get`` into a :class:`ViewPairs` batch."""
    state_a, state_b = get("state", i), get("state", j)
    return ViewPairs(
        view_a=get("view", i),
        view_b=get("view", j),
        relative_action=np.asarray(relative_action_fn(state_a, state_b), dtype=np.float32),
        state_a=state_a,
        state_b=state_b,
        object_index=get("object_index", i),
        category=get("category", i),
        offset=get("step", j) - get("step", i),
    )
