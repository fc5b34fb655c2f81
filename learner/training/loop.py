"""The one training loop of every method.

Read it top to bottom: resolve the world and the device, build the pair source and the
learner, resume from the run folder's last checkpoint if there is one, then repeat {get
pairs, one learner step} with logging and periodic checkpoints, and evaluate the finished
encoder. The method only decides which heads exist and which loss terms are summed
(``learner.methods``); the data only decides which pairs are positives (the method's
``time_offset``). SIGTERM and SIGINT finish the current step (or end a wait for pairs at
once), write a checkpoint and return, so a resumed run continues the same loss trajectory.
A step that runs out of memory ends the run with a `conf.errors.UserError` naming the batch,
and a loss that grows by orders of magnitude is warned about once. The step itself lives in
``learner.training.learner``, what the loop saves and resumes in ``run_state``, its timers and
logging in ``run_log``, and the metrics it leaves behind in ``run_summary``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from omegaconf import DictConfig

import envs
from agent.view_pairs import ViewPairs
from conf.errors import UserError
from conf.schema import CiperConfig
from conf.typed import typed_config
from learner.data.pair_sources import PairSource, make_pair_source
from learner.training.device import select_device
from learner.training.distributed import DistributedContext, barrier, init_distributed, shutdown
from learner.training.learner import Learner
from learner.training.run_log import RunClock, TrainingLog
from learner.training.run_state import RunCheckpoint
from learner.training.run_summary import run_metrics, write_run_summary

log = logging.getLogger(__name__)


class TrainingDiverged(FloatingPointError):
    """A non-finite loss: training stops and the last checkpoint is left as it was."""


class OutOfMemory(UserError, MemoryError):
    """A step's batch did not fit in the memory of the host or the device."""


# A loss this many times its first value (in size) is taken for divergence and warned about.
LOSS_GROWTH_WARNING = 1000.0


@contextlib.contextmanager
def stop_on_signals() -> Iterator[dict[str, str | None]]:
    """Turn SIGTERM/SIGINT into a flag the loop checks after each step."""
    flag: dict[str, str | None] = {"signal": None}

    def handler(signum: int, _frame: Any) -> None:
        flag["signal"] = signal.Signals(signum).name

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: leave signals alone
            pass
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class StepCallback(Protocol):
    """Called after every optimisation step (e.g. to share weights with active policies)."""

    def on_step(self, step: int, learner: Learner, pairs: ViewPairs) -> None: ...


def train(
    cfg: CiperConfig | DictConfig,
    run_dir: Path,
    policy_factory: Callable | None = None,
    callbacks: Sequence[StepCallback] = (),
) -> dict[str, Any]:
    """Train ``cfg.method`` for ``cfg.train.steps`` steps in ``run_dir``; returns the metrics.

    Resumes from ``run_dir/checkpoints/last.pt`` when ``train.resume`` is true. Writes
    TensorBoard scalars, checkpoints and ``metrics.json`` into ``run_dir``.
    ``policy_factory`` builds the observer policy inside each collector process (None: the
    configured built-in policy); ``callbacks`` run after every step.
    """
    cfg, run_dir = typed_config(cfg), Path(run_dir)
    world = envs.world_module(cfg.env.id)
    context, device = _process_device(cfg.train.device)
    seed = cfg.train.seed
    torch.manual_seed(seed)  # model initialisation; data and augmentation have own generators
    # Each rank draws its own pairs (and runs its own collectors) from its own seed.
    source: PairSource = make_pair_source(cfg, world, seed + 1000 * context.rank, policy_factory, run_dir)
    try:
        learner = Learner(cfg, world, device, context)
        # The seeded initial weights (also on resume: built before the checkpoint loads), so
        # the run can say how far training moved the encoder from its random start.
        initial_encoder = [p.detach().clone() for p in learner.model.encoder.parameters()]
        checkpoint = RunCheckpoint(run_dir, cfg, context)
        step, history = checkpoint.resume(learner, source)
        clock, stopped_by, growth = RunClock(), None, LossGrowth(cfg.optim.lr)
        with stop_on_signals() as stop, TrainingLog(cfg, run_dir, context, first_step=step) as training_log:
            # A signal ends a wait for pairs at once (one process: every rank must take each step)
            signalled_while_waiting = None if context.is_distributed else (lambda: stop["signal"] is not None)
            while step < cfg.train.steps and stopped_by is None:
                clock.start_step()
                with explained_out_of_memory(cfg, step + 1):
                    pairs = source.next_pairs(signalled_while_waiting)
                    if pairs is None:
                        stopped_by = stop["signal"]
                        break
                    clock.data_ready()
                    losses = {name: float(value) for name, value in learner.step(pairs).items()}  # syncs the device
                clock.step_done(images=2 * len(pairs))
                finite, signalled = _agree_across_ranks(losses, stop["signal"] is not None, context, device)
                if not finite:
                    raise TrainingDiverged(f"non-finite loss {losses} at step {step + 1}; the last "
                                           f"checkpoint {checkpoint.describe()} is intact")  # fmt: skip
                step += 1
                growth.check(step, losses["loss"])
                history.append({"step": step, **losses})
                for callback in callbacks:
                    callback.on_step(step, learner, pairs)
                training_log.after_step(step, losses, learner.schedule, source, clock)
                if step % cfg.train.checkpoint_every == 0:
                    checkpoint.save(learner, source, step, history)
                stopped_by = _stop_reason(stop["signal"], signalled, clock.steps, cfg.train.stop_after)
        checkpoint.save(learner, source, step, history)
        metrics = run_metrics(cfg, learner, source, step=step, history=history, clock=clock,
                              initial_encoder=initial_encoder, stopped_by=stopped_by, checkpoint_path=checkpoint.path)  # fmt: skip
    finally:
        source.close()
    if context.is_main:
        write_run_summary(cfg, run_dir, learner, metrics, history)
    barrier(context)
    shutdown(context)
    return metrics


class LossGrowth:
    """Warns once when the loss grows to ``LOSS_GROWTH_WARNING`` times its first value: a
    run that diverges without reaching inf (``optim.lr=1e6`` trains to a loss of 3e23)."""

    def __init__(self, lr: float) -> None:
        self.lr = lr
        self.first: float | None = None
        self.warned = False

    def check(self, step: int, loss: float) -> None:
        if self.first is None:
            self.first = loss
            return
        if not self.warned and abs(loss) > LOSS_GROWTH_WARNING * max(abs(self.first), 1.0):
            self.warned = True
            log.warning("the loss grew from %.4g to %.4g by step %d: training is diverging; lower optim.lr "
                        "(now %g)", self.first, loss, step, self.lr)  # fmt: skip


def out_of_memory(error: BaseException | None) -> bool:
    """Whether ``error`` (or what caused it) is an allocation that failed."""
    while error is not None:
        if isinstance(error, MemoryError | torch.cuda.OutOfMemoryError) or "can't allocate memory" in str(error):
            return True
        error = error.__cause__
    return False


@contextlib.contextmanager
def explained_out_of_memory(cfg: CiperConfig, step: int) -> Iterator[None]:
    """Turn running out of memory in a step into an `OutOfMemory` naming the batch."""
    try:
        yield
    except OutOfMemory:
        raise
    except (MemoryError, RuntimeError) as error:
        if not out_of_memory(error):
            raise
        size = cfg.env.image_size
        raise OutOfMemory(f"out of memory at step {step}: train.batch_size={cfg.train.batch_size} pairs of two "
                          f"{size}x{size} views did not fit ({' '.join(str(error).split())[:200]}); lower "
                          "train.batch_size (or env.image_size, model.width)") from error  # fmt: skip


def _process_device(device_name: str) -> tuple[DistributedContext, torch.device]:
    """Join the process group (if launched by torchrun) and pick this rank's device."""
    context = init_distributed(device_name)
    device = select_device(device_name)
    if context.is_distributed and device.type == "cuda":
        device = torch.device("cuda", context.local_rank)
        torch.cuda.set_device(device)
    return context, device


def _agree_across_ranks(
    losses: dict[str, float], signalled: bool, context: DistributedContext, device: torch.device
) -> tuple[bool, bool]:
    """(all losses finite, a stop signal arrived) on every rank: any rank's non-finite loss
    or signal counts for all, so every rank leaves the loop at the same step."""
    finite = all(math.isfinite(v) for v in losses.values())
    if context.is_distributed:
        flags = torch.tensor([float(not finite), float(signalled)], device=device)
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        finite, signalled = not bool(flags[0]), bool(flags[1])
    return finite, signalled


def _stop_reason(signal_name: str | None, signalled: bool, steps_this_run: int, stop_after: int | None) -> str | None:
    """Why the run stops before ``train.steps`` (None: it goes on): the signal's name, or
    ``train.stop_after`` once this process has taken that many steps."""
    if not (signalled or (stop_after is not None and steps_this_run >= stop_after)):
        return None
    return signal_name or ("signal" if signalled else f"train.stop_after={stop_after}")
