"""The unit of training data: a batch of view pairs with their relative action and labels.

Both the live replay buffer and the on-disk dataset return this one type, so the learner
never knows where its pairs came from. Views stay uint8 until they reach the learner's
device (cheap to move, converted there).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np


@dataclass(frozen=True)
class ViewPairs:
    """A batch of B pairs (view_a, view_b) taken from one episode each.

    Attributes:
        view_a: uint8 (B, H, W, 3), the earlier view.
        view_b: uint8 (B, H, W, 3), a view ``offset`` steps later in the same episode.
        relative_action: float32 (B, A), ``envs.scene_state.relative_action(state_a,
            state_b, action_set)``: the encoded change that turns view a into view b.
        state_a: float64 (B, S), absolute latent state of view a (``STATE_FIELDS``).
        state_b: float64 (B, S), absolute latent state of view b.
        object_index: int64 (B,), row of the object in the catalogue in use.
        category: int64 (B,), category label index, -1 for objects without a category.
        offset: int64 (B,), steps from a to b (>= 0).
    """

    view_a: np.ndarray
    view_b: np.ndarray
    relative_action: np.ndarray
    state_a: np.ndarray
    state_b: np.ndarray
    object_index: np.ndarray
    category: np.ndarray
    offset: np.ndarray

    def __len__(self) -> int:
        return int(self.view_a.shape[0])

    def as_dict(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def concatenate(cls, parts: list[ViewPairs]) -> ViewPairs:
        """Join batches along the batch axis."""
        if not parts:
            raise ValueError("parts=[]: need at least one ViewPairs batch to concatenate")
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)})
