"""What a training run reports while it runs: timers, TensorBoard scalars and progress.

:class:`RunClock` splits the wall-clock time into start-up (filling the buffer before the
first step), waiting for data and the steps themselves. :class:`TrainingLog` writes the
losses, learning rate, throughput and data statistics to TensorBoard (rank 0 only) every
``train.log_every`` steps, moves the progress bar, and logs one progress line for the
``.log`` file and for consoles without a bar.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from torch.optim.lr_scheduler import LRScheduler
from tqdm import tqdm

from conf.schema import CiperConfig
from learner.data.pair_sources import PairSource
from learner.training.distributed import DistributedContext

log = logging.getLogger("learner.training.loop")  # the progress lines, with the loop's


@dataclass
class RunClock:
    """Where this process's time went since the run (or its resume) started."""

    started: float = field(default_factory=time.perf_counter)
    steps: int = 0  # steps taken in this process, not counting those before a resume
    images: int = 0
    wait_s: float = 0.0  # waiting for pairs, after the first step
    busy_s: float = 0.0  # waiting plus stepping, after the first step
    warmup_s: float = 0.0  # the first step's wait for pairs: filling the buffer is start-up
    _step_start: float = 0.0
    _data_ready: float = 0.0

    def start_step(self) -> None:
        self._step_start = time.perf_counter()

    def data_ready(self) -> None:
        self._data_ready = time.perf_counter()
        if self.steps == 0:
            self.warmup_s, self._step_start = self._data_ready - self._step_start, self._data_ready

    def step_done(self, images: int) -> None:
        now = time.perf_counter()
        self.steps += 1
        self.wait_s += self._data_ready - self._step_start
        self.busy_s += now - self._step_start
        self.images += images

    def images_per_s(self) -> float:
        return self.images / max(self.busy_s, 1e-9)

    def data_wait_fraction(self) -> float:
        return self.wait_s / max(self.busy_s, 1e-9)

    def wall_s(self) -> float:
        return time.perf_counter() - self.started


class TrainingLog:
    """TensorBoard scalars, the progress bar and the progress lines of one training run."""

    def __init__(self, cfg: CiperConfig, run_dir: Path, context: DistributedContext, first_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter  # slow to import; only training needs it

        self.method = cfg.method.name
        self.total_steps = cfg.train.steps
        self.log_every = cfg.train.log_every
        self.world_size = context.world_size
        self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard")) if context.is_main else None
        self.bar = tqdm(total=self.total_steps, initial=first_step, desc=f"train {self.method}",
                        disable=None if context.is_main else True, dynamic_ncols=True)  # fmt: skip

    def __enter__(self) -> TrainingLog:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()

    def after_step(self, step: int, losses: dict[str, float], schedule: LRScheduler, source: PairSource, clock: RunClock) -> None:
        """Move the bar; on rank 0 every ``log_every`` steps and at the last, write the scalars."""
        if self.writer is not None and (step % self.log_every == 0 or step == self.total_steps):
            rate = clock.images_per_s()
            for name, value in losses.items():
                self.writer.add_scalar(f"loss/{name}", value, step)
            self.writer.add_scalar("train/lr", schedule.get_last_lr()[0], step)
            self.writer.add_scalar("train/images_per_s", rate * self.world_size, step)
            self.writer.add_scalar("train/data_wait_fraction", clock.data_wait_fraction(), step)
            for name, value in source.stats().items():
                self.writer.add_scalar(f"data/{name}", value, step)
            self.bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()} | {"img/s": f"{rate:.0f}"})
            log.info("train %s: step %d/%d, %s, %.0f images/s", self.method, step, self.total_steps,
                     " ".join(f"{k} {v:.4f}" for k, v in losses.items()), rate, extra={"progress": True})  # fmt: skip
        self.bar.update(1)


def log_eval_scalars(run_dir: Path, scores: dict[str, Any], step: int) -> None:
    """The evaluation's numbers as TensorBoard scalars ``eval/<name>`` beside the losses."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(Path(run_dir) / "tensorboard")) as writer:
        for name, value in scores.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                writer.add_scalar(f"eval/{name}", value, step)
