"""Which actions the observer took, as the learner saw them: a histogram per action column.

An online run trains on what its policy chose to look at, so a comparison of policies needs
to show what each one did. :class:`ActionHistogram` is a training callback: for every pair one
step apart that the learner trains on, the relative change between its views is the action
that was taken (in physical units; divided by the action's maximum step it is the normalised
action in [-1, 1]); it counts those per column in fixed bins, weighted as the learner sampled
them. ``save`` writes ``actions.json`` (bin edges, counts per column) beside the run's
metrics, adding to the counts of an earlier invocation of a resumed run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from agent.atomic_files import write_json_atomic
from agent.view_pairs import ViewPairs
from envs.world import World

ACTIONS_FILE = "actions.json"
BINS = 20  # over the normalised range [-1, 1]


class ActionHistogram:
    """``learner.training.loop.StepCallback`` counting the normalised actions of one-step pairs."""

    def __init__(self, world: World, action_set: str, bins: int = BINS) -> None:
        self.world, self.action_set = world, action_set
        self.names = [d.name for d in world.action_dims(action_set)]
        self.max_steps = world.action_max_steps(action_set)
        self.edges = np.linspace(-1.0, 1.0, bins + 1)
        self.counts = np.zeros((len(self.names), bins), dtype=np.int64)

    def on_step(self, step: int, learner: Any, pairs: ViewPairs) -> None:
        one_step = np.asarray(pairs.offset) == 1
        if not one_step.any():
            return
        change = self.world.relative_change(pairs.state_a[one_step], pairs.state_b[one_step], self.action_set)
        actions = np.clip(change / self.max_steps, -1.0, 1.0)  # (M, A)
        for column in range(actions.shape[1]):
            self.counts[column] += np.histogram(actions[:, column], bins=self.edges)[0]

    def record(self) -> dict[str, Any]:
        return {"edges": self.edges.tolist(), "columns": self.names, "counts": self.counts.tolist()}

    def save(self, run_dir: Path) -> Path:
        """Write ``actions.json``, adding this invocation's counts to those already there."""
        path = Path(run_dir) / ACTIONS_FILE
        counts = self.counts
        if path.is_file():
            earlier = json.loads(path.read_text())
            if earlier.get("columns") == self.names and len(earlier.get("edges", [])) == len(self.edges):
                counts = counts + np.asarray(earlier["counts"], dtype=np.int64)
        return write_json_atomic(path, {**self.record(), "counts": counts.tolist()})


def load_actions(run_dir: Path) -> dict[str, Any] | None:
    """The ``actions.json`` of a run, None when it has none."""
    path = Path(run_dir) / ACTIONS_FILE
    return json.loads(path.read_text()) if path.is_file() else None
