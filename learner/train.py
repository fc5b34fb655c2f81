"""The one training loop of every method (ciper, simclr, simclr_tt, predict).

Read it top to bottom: pick the device, build the pair source and the model, resume from
the run folder's last checkpoint if there is one, then repeat {get pairs, move uint8 to
the device, convert and augment there, forward, method losses, step} with logging and
periodic checkpoints. The method only decides which heads exist and which loss terms are
summed (``learner.model``); the data only decides which pairs are positives
(``method.time_offset``). SIGTERM and SIGINT finish the current step, write a checkpoint
and return, so a resumed run continues the same loss trajectory. What the loop saves and
resumes lives in ``learner.run_state``, its timers and logging in ``learner.run_log``, and
the metrics it leaves behind in ``learner.run_summary``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from omegaconf import DictConfig

import envs
from agent.view_pairs import ViewPairs
from conf.schema import CiperConfig
from conf.typed import typed_config
from learner.augment import (
    ViewAugmentation,
    augmentation_spec,
    normalize_images,
    relative_augmentation,
    to_float_images,
)
from learner.checkpoint import architecture_of, model_from_architecture
from learner.device import fast_path, select_device
from learner.distributed import (
    DistributedContext,
    barrier,
    gather_with_grad,
    init_distributed,
    shutdown,
)
from learner.model import CiperModel, method_losses
from learner.normalization import IMAGE_MEAN, IMAGE_STD
from learner.pair_sources import PairSource, make_pair_source
from learner.run_log import RunClock, TrainingLog, log_eval_scalars
from learner.run_state import RunCheckpoint
from learner.run_summary import print_summary, run_metrics, weight_change, write_run_summary

# Imported from here by the apps, benchmarks and tests; they live in the run_* modules.
__all__ = ["Learner", "StepCallback", "TrainingDiverged", "log_eval_scalars", "print_summary", "select_device",
           "train", "warmup_cosine", "weight_change"]  # fmt: skip

log = logging.getLogger(__name__)


class TrainingDiverged(FloatingPointError):
    """A non-finite loss: training stops and the last checkpoint is left as it was."""


def warmup_cosine(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Learning-rate factor: linear warm-up, then cosine decay to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


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


class Learner:
    """Model, optimiser, schedule and augmentation, and the one step they take together."""

    def __init__(
        self, cfg: CiperConfig, action_dim: int, device: torch.device, context: DistributedContext | None = None
    ) -> None:
        self.cfg = cfg
        self.device = device
        self.context = context or DistributedContext()
        world = envs.world_module(cfg.env.id)
        action_names = [d.name for d in world.action_dims(cfg.env.action_set)]
        spec = augmentation_spec(cfg.method, action_names, cfg.env.action_set)
        # Seeded apart from the model and the pairs; its state goes into every checkpoint.
        self.augment = None if spec is None else ViewAugmentation(spec, cfg.env.image_size, cfg.train.seed + 1)
        # The prediction target: the relative action, then the relative augmentation parameters.
        self.action_dim = action_dim  # the first target columns; the augmentation's follow
        self.target_dim = action_dim + (0 if spec is None else len(spec.parameter_names))
        self.target_names = [*world.relative_action_names(cfg.env.action_set),
                             *(f"delta_{n}" for n in (spec.parameter_names if spec else ()))]  # fmt: skip
        from learner.evaluation import SHORTCUT_PAIRS

        self.shortcut_pairs = SHORTCUT_PAIRS  # the first pairs trained on feed the shortcut diagnostic
        self.shortcut_views: list[np.ndarray] = []  # their augmented uint8 views, [views a; views b] per batch
        self.architecture = architecture_of(cfg, self.target_dim)
        self.model: CiperModel = model_from_architecture(self.architecture).to(device)
        self.on_cuda = device.type == "cuda"
        self.fast_path = fast_path(device, cfg.train.channels_last, cfg.train.bf16)
        self.channels_last = self.fast_path.channels_last
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # foreach (multi-tensor update kernels) is PyTorch's default only on CUDA; on CPU it
        # made the small encoder's step ~5% faster (README "Performance").
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay, foreach=True
        )
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(cfg.optim.warmup_steps, cfg.train.steps)
        )
        forward: torch.nn.Module = self.model
        if self.context.is_distributed:
            from torch.nn.parallel import DistributedDataParallel

            forward = DistributedDataParallel(self.model, device_ids=[device.index] if self.on_cuda else None)
        self.forward = torch.compile(forward) if cfg.train.compile else forward
        self.autocast_dtype = torch.bfloat16 if self.fast_path.bf16 else None

    def images(self, views: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        """uint8 (N, H, W, 3) on the host -> normalised, augmented float (N, 3, H, W) on the
        device, and the augmentation parameters (N, P) (None without augmentation)."""
        tensor = torch.from_numpy(np.ascontiguousarray(views))
        if self.on_cuda:
            tensor = tensor.pin_memory().to(self.device, non_blocking=True)
        images = to_float_images(tensor, channels_last=self.channels_last)
        parameters = None
        if self.augment is not None:
            images, parameters = self.augment(images)
        if sum(len(v) for v in self.shortcut_views) < 2 * self.shortcut_pairs:  # the pairs as trained on
            self.shortcut_views.append((images.detach().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy())
        return normalize_images(images, IMAGE_MEAN, IMAGE_STD), parameters

    def shortcut_top1(self) -> float:
        """Colour-histogram positive retrieval on the first pairs this run trained on, as
        augmented (``learner.evaluation.shortcut_colour_top1``); nan before any step."""
        from learner.evaluation import shortcut_colour_top1

        halves = [(v[: len(v) // 2], v[len(v) // 2 :]) for v in self.shortcut_views]
        if sum(len(a) for a, _ in halves) < 2:
            return float("nan")
        return shortcut_colour_top1(np.concatenate([a for a, _ in halves]), np.concatenate([b for _, b in halves]))

    def targets(self, pairs: ViewPairs, parameters: torch.Tensor | None) -> torch.Tensor:
        """(N, target_dim): the pairs' relative action, then b - a of the augmentation
        parameters of views a (rows :N of ``parameters``) and b (rows N:)."""
        target = torch.from_numpy(pairs.relative_action).to(self.device, non_blocking=True)
        if parameters is None:
            return target
        n = len(pairs)
        return torch.cat([target, relative_augmentation(parameters[:n], parameters[n:]).to(target.dtype)], dim=1)

    def step(self, pairs: ViewPairs) -> dict[str, torch.Tensor]:
        """One optimisation step on a batch of pairs; returns the detached loss terms."""
        self.model.train()
        n = len(pairs)
        images, parameters = self.images(np.concatenate([pairs.view_a, pairs.view_b]))
        target = self.targets(pairs, parameters)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32, enabled=self.autocast_dtype is not None):
            out = self.forward(images[:n], images[n:])
            losses = method_losses(
                self.cfg.method.name, out, target, self.model,
                temperature=self.cfg.method.temperature,
                prediction_weight=self.cfg.method.prediction_weight,
                gather=gather_with_grad if self.context.is_distributed else None,
                offset=self.context.rank * n,
            )  # fmt: skip
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        self.optimizer.step()
        self.schedule.step()
        return {name: value.detach() for name, value in losses.items()}

    def state_dict(self) -> dict[str, Any]:
        return {
            "architecture": self.architecture,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "augment_generator": None if self.augment is None else self.augment.generator.get_state(),
        }

    def load_state_dict(self, payload: dict[str, Any]) -> None:
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.schedule.load_state_dict(payload["schedule"])
        if self.augment is not None:
            self.augment.generator.set_state(payload["augment_generator"])


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
    context, device = _process_device(cfg.train.device)
    seed = cfg.train.seed
    torch.manual_seed(seed)  # model initialisation; data and augmentation have own generators
    # Each rank draws its own pairs (and runs its own collectors) from its own seed.
    source: PairSource = make_pair_source(cfg, seed + 1000 * context.rank, policy_factory)
    try:
        learner = Learner(cfg, source.action_dim, device, context)
        # The seeded initial weights (also on resume: built before the checkpoint loads), so
        # the run can say how far training moved the encoder from its random start.
        initial_encoder = [p.detach().clone() for p in learner.model.encoder.parameters()]
        checkpoint = RunCheckpoint(run_dir, cfg, context)
        step, history = checkpoint.resume(learner, source)
        clock, stopped_by = RunClock(), None
        with stop_on_signals() as stop, TrainingLog(cfg, run_dir, context, first_step=step) as training_log:
            while step < cfg.train.steps and stopped_by is None:
                clock.start_step()
                pairs = source.next_pairs()
                clock.data_ready()
                losses = {name: float(value) for name, value in learner.step(pairs).items()}  # syncs the device
                clock.step_done(images=2 * len(pairs))
                finite, signalled = _agree_across_ranks(losses, stop["signal"] is not None, context, device)
                if not finite:
                    raise TrainingDiverged(f"non-finite loss {losses} at step {step + 1}; the last "
                                           f"checkpoint {checkpoint.describe()} is intact")  # fmt: skip
                step += 1
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
