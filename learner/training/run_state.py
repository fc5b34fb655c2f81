"""What a training run saves and resumes from: ``run_dir/checkpoints/last.pt``.

A run's state is the learner's (model, optimiser, schedule, augmentation generator), every
rank's pair source, the global RNG states, the step and the loss history so far. Rank 0
writes it once for all ranks; resuming refuses a checkpoint of another architecture or
another number of ranks, because the loss trajectory could not continue exactly.
"""

from __future__ import annotations

import logging
from pathlib import Path

from conf.schema import CiperConfig
from conf.typed import plain_config
from learner.data.pair_sources import PairSource
from learner.training.checkpoint import (
    CheckpointMismatch,
    check_architecture,
    load_checkpoint,
    restore_rng_states,
    rng_states,
    save_checkpoint,
)
from learner.training.distributed import DistributedContext, all_gather_objects, barrier
from learner.training.learner import Learner

log = logging.getLogger("learner.training.loop")  # the run's log lines, with the loop's


class RunCheckpoint:
    """The last checkpoint of one run: resumed from at start, rewritten during training."""

    def __init__(self, run_dir: Path, cfg: CiperConfig, context: DistributedContext) -> None:
        self.path = Path(run_dir) / "checkpoints" / "last.pt"
        self.cfg = cfg
        self.context = context

    def resume(self, learner: Learner, source: PairSource) -> tuple[int, list[dict[str, float]]]:
        """Restore ``learner``, ``source`` and the RNGs; the step and loss history to go on
        from, or (0, []) when resuming is off or there is no checkpoint yet."""
        if not (self.cfg.train.resume and self.path.exists()):
            return 0, []
        payload = load_checkpoint(self.path)
        check_architecture(self.path, payload["architecture"], learner.architecture)
        learner.load_state_dict(payload)
        source_states = payload["pair_source_ranks"]
        if len(source_states) != self.context.world_size:
            raise CheckpointMismatch(
                f"checkpoint {self.path} was written by {len(source_states)} ranks; "
                f"resuming it exactly needs the same number, not {self.context.world_size}"
            )
        source.load_state_dict(source_states[self.context.rank])
        restore_rng_states(payload["rng"])
        step, history = int(payload["step"]), [dict(h) for h in payload["history"]]
        log.info("resumed from %s at step %d", self.path, step)
        if self.context.is_main:
            print(f"resumed from {self.path} at step {step}")
        return step, history

    def save(self, learner: Learner, source: PairSource, step: int, history: list[dict[str, float]]) -> None:
        """Write the run's state after ``step``; every rank calls it, rank 0 writes."""
        source_states = all_gather_objects(source.state_dict(), self.context)
        if self.context.is_main:
            save_checkpoint(
                self.path,
                {**learner.state_dict(), "step": step, "history": history, "rng": rng_states(),
                 "pair_source_ranks": source_states, "world_size": self.context.world_size,
                 "config": plain_config(self.cfg)},
            )  # fmt: skip
        barrier(self.context)

    def describe(self) -> str:
        """The checkpoint's path, or '(none yet)' before the first one is written."""
        return str(self.path) if self.path.exists() else "(none yet)"
