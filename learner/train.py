"""The one training loop of every method (ciper, simclr, simclr_tt, predict).

Read it top to bottom: pick the device, build the pair source and the model, resume from
the run folder's last checkpoint if there is one, then repeat {get pairs, move uint8 to
the device, convert and augment there, forward, method losses, step} with logging and
periodic checkpoints. The method only decides which heads exist and which loss terms are
summed (``learner.model``); the data only decides which pairs are positives
(``method.time_offset``). SIGTERM and SIGINT finish the current step, write a checkpoint
and return, so a resumed run continues the same loss trajectory.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

import envs
from agent.atomic_files import write_json_atomic
from agent.view_pairs import ViewPairs
from learner.augment import (
    ViewAugmentation,
    augmentation_spec,
    normalize_images,
    relative_augmentation,
    to_float_images,
)
from learner.checkpoint import (
    architecture_of,
    check_architecture,
    config_as_plain,
    load_checkpoint,
    model_from_architecture,
    restore_rng_states,
    rng_states,
    save_checkpoint,
)
from learner.device import fast_path, select_device
from learner.distributed import (
    DistributedContext,
    all_gather_objects,
    barrier,
    gather_with_grad,
    init_distributed,
    shutdown,
)
from learner.model import CiperModel, method_losses
from learner.normalization import IMAGE_MEAN, IMAGE_STD
from learner.pair_sources import PairSource, make_pair_source

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
        self, cfg: DictConfig, action_dim: int, device: torch.device, context: DistributedContext | None = None
    ) -> None:
        self.cfg = cfg
        self.device = device
        self.context = context or DistributedContext()
        action_names = [d.name for d in envs.world_module(str(cfg.env.id)).action_dims(str(cfg.env.action_set))]
        spec = augmentation_spec(cfg.method, action_names, str(cfg.env.action_set))
        # Seeded apart from the model and the pairs; its state goes into every checkpoint.
        self.augment = None if spec is None else ViewAugmentation(spec, int(cfg.env.image_size), int(cfg.train.seed) + 1)
        # The prediction target: the relative action, then the relative augmentation parameters.
        self.action_dim = action_dim  # the first target columns; the augmentation's follow
        self.target_dim = action_dim + (0 if spec is None else len(spec.parameter_names))
        world = envs.world_module(str(cfg.env.id))
        self.target_names = [*world.relative_action_names(str(cfg.env.action_set)),
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
            self.model.parameters(), lr=float(cfg.optim.lr), weight_decay=float(cfg.optim.weight_decay), foreach=True
        )
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(int(cfg.optim.warmup_steps), int(cfg.train.steps))
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
                str(self.cfg.method.name), out, target, self.model,
                temperature=float(self.cfg.method.temperature),
                prediction_weight=float(self.cfg.method.prediction_weight),
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
    cfg: DictConfig,
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
    run_dir = Path(run_dir)
    checkpoint_path = run_dir / "checkpoints" / "last.pt"
    context = init_distributed(str(cfg.train.device))
    device = select_device(str(cfg.train.device))
    if context.is_distributed and device.type == "cuda":
        device = torch.device("cuda", context.local_rank)
        torch.cuda.set_device(device)
    seed = int(cfg.train.seed)
    torch.manual_seed(seed)  # model initialisation; data and augmentation have own generators
    total_steps = int(cfg.train.steps)
    # Each rank draws its own pairs (and runs its own collectors) from its own seed.
    source: PairSource = make_pair_source(cfg, seed + 1000 * context.rank, policy_factory)
    main = context.is_main
    try:
        learner = Learner(cfg, source.action_dim, device, context)
        # The seeded initial weights (also on resume: built before the checkpoint loads), so
        # the run can say how far training moved the encoder from its random start.
        initial_encoder = [p.detach().clone() for p in learner.model.encoder.parameters()]
        step, history = 0, []
        if cfg.train.resume and checkpoint_path.exists():
            payload = load_checkpoint(checkpoint_path)
            check_architecture(checkpoint_path, payload["architecture"], learner.architecture)
            learner.load_state_dict(payload)
            source_states = payload["pair_source_ranks"]
            if len(source_states) != context.world_size:
                raise ValueError(
                    f"checkpoint {checkpoint_path} was written by {len(source_states)} ranks; "
                    f"resuming it exactly needs the same number, not {context.world_size}"
                )
            source.load_state_dict(source_states[context.rank])
            restore_rng_states(payload["rng"])
            step, history = int(payload["step"]), [dict(h) for h in payload["history"]]
            log.info("resumed from %s at step %d", checkpoint_path, step)
            if main:
                print(f"resumed from {checkpoint_path} at step {step}")

        def checkpoint() -> None:
            source_states = all_gather_objects(source.state_dict(), context)
            if main:  # written once, by rank 0
                save_checkpoint(
                    checkpoint_path,
                    {**learner.state_dict(), "step": step, "history": history, "rng": rng_states(),
                     "pair_source_ranks": source_states, "world_size": context.world_size,
                     "config": config_as_plain(cfg)},
                )  # fmt: skip
            barrier(context)

        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tensorboard")) if main else None
        stop_after = cfg.train.get("stop_after")
        steps_this_run, wait_time, busy_time, images_seen, warmup_s = 0, 0.0, 0.0, 0, 0.0
        started = time.perf_counter()
        stopped_by: str | None = None
        with stop_on_signals() as stop, tqdm(total=total_steps, initial=step, desc=f"train {cfg.method.name}",
                                             disable=None if main else True, dynamic_ncols=True) as bar:  # fmt: skip
            while step < total_steps:
                t0 = time.perf_counter()
                pairs = source.next_pairs()
                t1 = time.perf_counter()
                if steps_this_run == 0:  # filling the buffer is start-up, reported apart
                    warmup_s, t0 = t1 - t0, t1
                losses = learner.step(pairs)
                values = {name: float(value) for name, value in losses.items()}  # syncs the device
                t2 = time.perf_counter()
                finite = all(math.isfinite(v) for v in values.values())
                signalled = stop["signal"] is not None
                if context.is_distributed:  # every rank must leave the loop at the same step
                    flags = torch.tensor([float(not finite), float(signalled)], device=device)
                    torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
                    finite, signalled = not bool(flags[0]), bool(flags[1])
                if not finite:
                    raise TrainingDiverged(
                        f"non-finite loss {values} at step {step + 1}; the last checkpoint "
                        f"{checkpoint_path if checkpoint_path.exists() else '(none yet)'} is intact"
                    )
                step += 1
                steps_this_run += 1
                wait_time += t1 - t0
                busy_time += t2 - t0
                images_seen += 2 * len(pairs)
                history.append({"step": step, **values})
                for callback in callbacks:
                    callback.on_step(step, learner, pairs)
                if writer is not None and (step % int(cfg.train.log_every) == 0 or step == total_steps):
                    rate = images_seen / max(busy_time, 1e-9)
                    for name, value in values.items():
                        writer.add_scalar(f"loss/{name}", value, step)
                    writer.add_scalar("train/lr", learner.schedule.get_last_lr()[0], step)
                    writer.add_scalar("train/images_per_s", rate * context.world_size, step)
                    writer.add_scalar("train/data_wait_fraction", wait_time / max(busy_time, 1e-9), step)
                    for name, value in source.stats().items():
                        writer.add_scalar(f"data/{name}", value, step)
                    bar.set_postfix({k: f"{v:.3f}" for k, v in values.items()} | {"img/s": f"{rate:.0f}"})
                    # One line per log_every steps for the .log file and for consoles without a bar.
                    log.info("train %s: step %d/%d, %s, %.0f images/s", cfg.method.name, step, total_steps,
                             " ".join(f"{k} {v:.4f}" for k, v in values.items()), rate, extra={"progress": True})  # fmt: skip
                bar.update(1)
                if step % int(cfg.train.checkpoint_every) == 0:
                    checkpoint()
                if signalled or (stop_after is not None and steps_this_run >= int(stop_after)):
                    stopped_by = stop["signal"] or ("signal" if signalled else f"train.stop_after={stop_after}")
                    break
        checkpoint()
        if writer is not None:
            writer.close()
        metrics: dict[str, Any] = {
            "method": str(cfg.method.name),
            "steps": step,
            "completed": step >= total_steps,
            "stopped_by": stopped_by,
            "device": str(device),
            "world_size": context.world_size,
            "images_per_s": context.world_size * images_seen / max(busy_time, 1e-9),
            "data_wait_fraction": wait_time / max(busy_time, 1e-9),
            "warmup_s": warmup_s,
            "wall_s": time.perf_counter() - started,
            # means over the first and last tenth of the steps (1 to 10 steps each, no overlap)
            "losses_first": _mean_losses(history[: _window(len(history))]),
            "losses_last": _mean_losses(history[-_window(len(history)) :]),
            "data": source.stats(),
            "shortcut_colour_top1": learner.shortcut_top1(),
            "encoder_weight_change": weight_change(initial_encoder, list(learner.model.encoder.parameters())),
            "prediction_target": learner.target_names,
            "checkpoint": str(checkpoint_path),
        }
    finally:
        source.close()
    if main:
        if metrics["completed"] and cfg.train.evaluate:
            from learner.evaluation import evaluate_encoder

            metrics["eval"] = evaluate_encoder(learner.model, cfg.env, cfg.eval, device, run_dir)
            metrics["eval"]["shortcut_colour_top1"] = metrics["shortcut_colour_top1"]
            log_eval_scalars(run_dir, metrics["eval"], step)
        write_json_atomic(run_dir / "metrics.json", metrics)
        write_json_atomic(run_dir / "loss_history.json", history)
    barrier(context)
    shutdown(context)
    return metrics


def log_eval_scalars(run_dir: Path, scores: dict[str, Any], step: int) -> None:
    """The evaluation's numbers as TensorBoard scalars ``eval/<name>`` beside the losses."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(run_dir / "tensorboard")) as writer:
        for name, value in scores.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                writer.add_scalar(f"eval/{name}", value, step)


def weight_change(initial: Sequence[torch.Tensor], current: Sequence[torch.Tensor]) -> float:
    """How far the weights moved: ||current - initial|| / ||initial|| over all tensors (L2)."""
    moved = sum(float((c.detach().float() - i.float()).pow(2).sum()) for i, c in zip(initial, current, strict=True))
    size = sum(float(i.float().pow(2).sum()) for i in initial)
    return math.sqrt(moved / size) if size > 0 else math.nan


def _window(steps: int) -> int:
    return max(1, min(10, steps // 10)) if steps >= 2 else 1


def _mean_losses(entries: list[dict[str, float]]) -> dict[str, float]:
    names = [k for k in (entries[0] if entries else {}) if k != "step"]
    return {name: float(np.mean([e[name] for e in entries])) for name in names}


def print_summary(metrics: dict[str, Any], stream=sys.stdout) -> None:
    """What a run learned, in a few lines."""
    first, last = metrics["losses_first"], metrics["losses_last"]
    print(f"\n{metrics['method']}: {metrics['steps']} steps on {metrics['device']}, "
          f"{metrics['images_per_s']:.0f} images/s, data wait {100 * metrics['data_wait_fraction']:.1f}%", file=stream)  # fmt: skip
    for name in last:
        print(f"  {name:12s} {first[name]:8.4f} -> {last[name]:8.4f}", file=stream)
    if "encoder_weight_change" in metrics:
        print(f"  encoder_weight_change {metrics['encoder_weight_change']:.3f}: ||w - w_init|| / ||w_init||", file=stream)
    print(f"  shortcut_colour_top1 {metrics['shortcut_colour_top1']:.3f}: colour histograms retrieve a trained "
          "pair's positive among 64 this often (chance 0.016)", file=stream)  # fmt: skip
    for name, value in metrics.get("eval", {}).items():
        if name != "shortcut_colour_top1":
            print(f"  {name:28s} {value:8.4f}", file=stream)
