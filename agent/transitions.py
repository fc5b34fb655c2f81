"""What a collector produces: a batch of transitions, and the sink interface that takes them.

A transition is one rendered view together with everything needed later to pair it with
other views of the same episode: its absolute latent state, the action that led to it,
and its object, episode and step. Sinks (the live replay buffer, the dataset writer) all
accept this one type.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class TransitionBatch:
    """T transitions (any mix of envs and steps).

    Attributes:
        view: uint8 (T, H, W, 3), the observation after the step (or after reset).
        state: float64 (T, S), absolute latent state of that view.
        applied_action: float32 (T, A), the change applied to reach it (zeros after reset).
        object_index: int64 (T,), row of the object in the catalogue.
        category: int64 (T,), category label index, -1 for none.
        episode_id: int64 (T,), unique per collector run (see ``episode_id_base``).
        step: int64 (T,), steps since the episode's reset (0 for the reset view).
    """

    view: np.ndarray
    state: np.ndarray
    applied_action: np.ndarray
    object_index: np.ndarray
    category: np.ndarray
    episode_id: np.ndarray
    step: np.ndarray

    def __len__(self) -> int:
        return int(self.view.shape[0])

    def as_dict(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def concatenate(cls, parts: list[TransitionBatch]) -> TransitionBatch:
        if not parts:
            raise ValueError("parts=[]: need at least one TransitionBatch to concatenate")
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)})


def episode_id_base(worker_id: int) -> int:
    """First episode id of collector ``worker_id``; ids never collide across workers."""
    return int(worker_id) << 40


class TransitionSink(Protocol):
    """Anything a collector can write transitions into."""

    def write(self, batch: TransitionBatch) -> None: ...


class MemorySink:
    """A `TransitionSink` that keeps batches in memory (one shard, or views to look at)."""

    def __init__(self) -> None:
        self.batches: list[TransitionBatch] = []
        self.count = 0

    def write(self, batch: TransitionBatch) -> None:
        self.batches.append(batch)
        self.count += len(batch)
