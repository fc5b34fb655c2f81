"""What a finished (or stopped) training run leaves behind: ``metrics.json`` and friends.

:func:`run_metrics` assembles the run's numbers (throughput, loss windows, how far the
encoder moved, the shortcut diagnostic); :func:`write_run_summary` adds the evaluation of
a completed run and writes ``metrics.json`` and ``loss_history.json`` atomically, because
reports and reruns read them back. :func:`print_summary` says it in a few lines.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agent.atomic_files import write_json_atomic
from conf.schema import CiperConfig
from learner.data.pair_sources import PairSource
from learner.evaluation.evaluate import evaluate_encoder
from learner.training.learner import Learner
from learner.training.run_log import RunClock, log_eval_scalars


def run_metrics(
    cfg: CiperConfig,
    learner: Learner,
    source: PairSource,
    *,
    step: int,
    history: list[dict[str, float]],
    clock: RunClock,
    initial_encoder: Sequence[torch.Tensor],
    stopped_by: str | None,
    checkpoint_path: Path,
) -> dict[str, Any]:
    """The run's numbers for ``metrics.json``; rates count every rank's images."""
    world_size = learner.context.world_size
    return {
        "method": cfg.method.name,
        "steps": step,
        "completed": step >= cfg.train.steps,
        "stopped_by": stopped_by,
        "device": str(learner.device),
        "world_size": world_size,
        "images_per_s": world_size * clock.images_per_s(),
        "data_wait_fraction": clock.data_wait_fraction(),
        "warmup_s": clock.warmup_s,
        "wall_s": clock.wall_s(),
        # means over the first and last tenth of the steps (1 to 10 steps each, no overlap)
        "losses_first": _mean_losses(history[: _window(len(history))]),
        "losses_last": _mean_losses(history[-_window(len(history)) :]),
        "data": source.stats(),
        "shortcut_colour_top1": learner.shortcut_top1(),
        "encoder_weight_change": weight_change(initial_encoder, list(learner.model.encoder.parameters())),
        "prediction_target": learner.target_names,
        "checkpoint": str(checkpoint_path),
    }


def write_run_summary(cfg: CiperConfig, run_dir: Path, learner: Learner, metrics: dict[str, Any], history: list[dict[str, float]]) -> None:
    """Evaluate a completed run (when ``train.evaluate``) into ``metrics["eval"]``, then
    write ``metrics.json`` and ``loss_history.json``; rank 0 only."""
    if metrics["completed"] and cfg.train.evaluate:
        metrics["eval"] = evaluate_encoder(learner.model, learner.world, cfg.env, cfg.eval, learner.device, run_dir)
        metrics["eval"]["shortcut_colour_top1"] = metrics["shortcut_colour_top1"]
        log_eval_scalars(run_dir, metrics["eval"], metrics["steps"])
    write_json_atomic(run_dir / "metrics.json", metrics)
    write_json_atomic(run_dir / "loss_history.json", history)


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
