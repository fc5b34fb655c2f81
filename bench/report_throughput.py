"""Learner throughput at the report presets' settings vs its pure-step ceiling.

For each report preset (``conf/schema.py``, ``GROUP_OPTIONS["report"]``) and method, each run's
training config is composed by ``learner.report.jobs.run_overrides``, the function
``ciper-report`` itself uses, so the bench measures what the report trains; only evaluation and
checkpoints are switched off and the step count is the bench's. Three measurements, interleaved
over ``--rounds`` rounds, best round kept:

- ``pure step``: ``Learner.step`` on synthetic uint8 pairs of the preset's image size and batch,
  with the preset's learner augmentations (the cost of the report's step);
- ``pure step, no learner augmentation``: the same with ``method.augment_crop/flip/color``
  false, the model-only ceiling (where the preset already has them off, e.g. ``static``, it is
  the same config and is not measured twice);
- ``offline loop``: ``learner.training.loop.train`` in offline mode on a dataset of the preset's env
  settings, as the report runs it (``--dataset``, else one written by the report's own
  ``write_dataset`` into a temporary folder). Its images/s come from the run's metrics and
  include the first step's one-off costs, which the pure steps leave out: use tens of steps.

Prints one markdown table per preset, the augmentation's share of the step, what one report
run's training (preset steps x s/step of the offline loop, evaluation not included) and all of
the preset's runs would cost at that rate, and a final JSON line. Run::

    python bench/report_throughput.py [--presets static objects] [--methods ciper simclr] \\
        [--steps 40] [--rounds 2] [--dataset PATH] [--dataset-steps 2048]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from bench.learner_throughput import pure_step_rate  # noqa: E402
from conf.compose import compose_config  # noqa: E402
from conf.typed import typed_config  # noqa: E402
from learner.report.jobs import merged_overrides, run_overrides, write_dataset  # noqa: E402
from learner.training.device import select_device  # noqa: E402
from learner.training.loop import train  # noqa: E402

PURE = "pure step"
NO_AUGMENTATION = "pure step, no learner augmentation"
OFFLINE = "offline loop"
MEASUREMENTS = (PURE, NO_AUGMENTATION, OFFLINE)
AUGMENTATIONS_OFF = ("method.augment_crop=false", "method.augment_flip=false", "method.augment_color=false")
CHECKPOINT_NEVER = 10**9  # train.checkpoint_every: no checkpoint inside the timed loop


def preset_config(preset: str, dataset_steps: int) -> DictConfig:
    """The composed config of ``ciper-report report=<preset>`` with a smaller shared dataset."""
    return compose_config([f"report={preset}", f"report.dataset_steps={dataset_steps}"])


def bench_overrides(preset_cfg: DictConfig, method: str, dataset: Path | None, steps: int) -> list[str]:
    """The overrides of the report's (``method``, seed 0) run, with the bench's step count,
    evaluation off and checkpoints never."""
    report_run = run_overrides(preset_cfg, [], method, 0, dataset)
    bench = [f"train.steps={steps}", "train.evaluate=false", f"train.checkpoint_every={CHECKPOINT_NEVER}"]
    return merged_overrides(report_run, bench)


def augmentation_off(overrides: Sequence[str]) -> bool:
    """Whether the config of ``overrides`` already has every learner augmentation off."""
    method = compose_config(list(overrides)).method
    return not (method.augment_crop or method.augment_flip or method.augment_color)


def pure_rate(overrides: Sequence[str], steps: int) -> float:
    """Images/s of ``Learner.step`` on synthetic pairs under the config of ``overrides``."""
    return pure_step_rate(typed_config(compose_config(list(overrides))), steps)


def offline_rate(overrides: Sequence[str]) -> float:
    """Images/s of the offline training loop under the config of ``overrides`` (from its metrics)."""
    with tempfile.TemporaryDirectory() as tmp:
        metrics = train(compose_config(list(overrides), run_dir=tmp), Path(tmp))
    return float(metrics["images_per_s"])


def method_measurements(overrides: list[str], steps: int) -> dict[str, Callable[[], float]]:
    """The measurements of one method, by name; the no-augmentation one only where it differs."""
    measurements = {PURE: lambda: pure_rate(overrides, steps)}
    if not augmentation_off(overrides):
        no_augmentation = merged_overrides(overrides, AUGMENTATIONS_OFF)
        measurements[NO_AUGMENTATION] = lambda: pure_rate(no_augmentation, steps)
    measurements[OFFLINE] = lambda: offline_rate(overrides)
    return measurements


def best_rates(measurements: dict[str, dict[str, Callable[[], float]]], rounds: int) -> dict[str, dict[str, float]]:
    """Images/s per method and measurement, best of ``rounds`` rounds; each round runs every
    measurement once, so a slow spell of the machine hits all of them alike."""
    best = {method: dict.fromkeys(by_name, 0.0) for method, by_name in measurements.items()}
    for _ in range(rounds):
        for method, by_name in measurements.items():
            for name, measure in by_name.items():
                best[method][name] = max(best[method][name], measure())
    return best


def preset_rates(preset: str, methods: Sequence[str], args: argparse.Namespace) -> tuple[DictConfig, dict]:
    """The preset's config and its best rates per method; the dataset is ``--dataset`` or one
    the report's ``write_dataset`` writes into a temporary folder for the duration."""
    cfg = preset_config(preset, args.dataset_steps)
    with tempfile.TemporaryDirectory() as tmp:
        dataset = args.dataset or write_dataset(cfg, [], Path(tmp))
        measurements = {m: method_measurements(bench_overrides(cfg, m, dataset, args.steps), args.steps) for m in methods}
        return cfg, best_rates(measurements, args.rounds)


def seconds_per_step(images_per_s: float, batch_size: int) -> float:
    return 2 * batch_size / images_per_s  # a pair is two images


def preset_table(preset: str, cfg: DictConfig, rates: dict[str, dict[str, float]]) -> list[str]:
    """The markdown table of one preset: every method's measurements against its pure step."""
    batch, size = cfg.report.batch_size, int(bench_image_size(cfg))
    lines = [f"### report={preset}: {size}x{size} views, batch {batch} pairs, encoder {cfg.report.encoder}", "",
             "| method | measurement | images/s | s/step | ratio to pure step |",
             "|---|---|---:|---:|---:|"]  # fmt: skip
    for method, by_name in rates.items():
        for name in MEASUREMENTS:
            if name not in by_name:  # the preset has the learner's augmentations off already
                lines.append(f"| {method} | {name} | = pure step | | 1.00 |")
                continue
            rate = by_name[name]
            lines.append(f"| {method} | {name} | {rate:.0f} | {seconds_per_step(rate, batch):.3f} | "
                         f"{rate / by_name[PURE]:.2f} |")  # fmt: skip
    return lines


def bench_image_size(cfg: DictConfig) -> int:
    """The image size every run of the preset uses (its overrides applied)."""
    return int(compose_config(list(cfg.report.overrides)).env.image_size)


def preset_notes(cfg: DictConfig, rates: dict[str, dict[str, float]]) -> list[str]:
    """Per method: the augmentation's share of the step and the report's training cost at the
    offline loop's rate."""
    r = cfg.report
    runs = len(r.methods) * len(r.seeds)
    lines = [""]
    for method, by_name in rates.items():
        if NO_AUGMENTATION in by_name:
            share, note = 1 - by_name[PURE] / by_name[NO_AUGMENTATION], ""
        else:
            share, note = 0.0, " (the preset has the learner's augmentations off: both pure steps are one config)"
        step_s = seconds_per_step(by_name[OFFLINE], int(r.batch_size))
        run_min = int(r.steps) * step_s / 60
        lines += [f"- {method}: learner augmentation's share of the step {share:.2f}{note}; "
                  f"one report run's training ({int(r.steps)} steps x {step_s:.3f} s) {run_min:.1f} min, "
                  f"all {runs} runs at this rate {runs * run_min:.1f} min (evaluation not included)"]  # fmt: skip
    return lines


def machine_facts() -> dict[str, Any]:
    return {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "device": str(select_device(str(compose_config().train.device)))}  # fmt: skip


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["static", "objects"], help="report presets")
    parser.add_argument("--methods", nargs="+", default=["ciper", "simclr"], help="methods per preset")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the best is kept")
    parser.add_argument("--dataset", type=Path, default=None, help="dataset of the (single) preset's env")
    parser.add_argument("--dataset-steps", type=int, default=2048, help="transitions of the written dataset")
    args = parser.parse_args(argv)
    if args.dataset is not None and len(args.presets) != 1:
        parser.error(f"--dataset {args.dataset} with presets {args.presets}: a dataset fits one preset's env")
    if args.steps < 1 or args.rounds < 1:
        parser.error(f"--steps {args.steps} --rounds {args.rounds}: both must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    facts = machine_facts()
    print(f"machine: {facts['cpu_count']} CPU cores, {facts['torch_threads']} torch threads, device {facts['device']}; "
          f"best of {args.rounds} round(s) of {args.steps} steps")  # fmt: skip
    results: dict[str, Any] = {}
    for preset in args.presets:
        cfg, rates = preset_rates(preset, args.methods, args)
        print("\n".join(["", *preset_table(preset, cfg, rates), *preset_notes(cfg, rates)]), flush=True)
        results[preset] = {"images_per_s": rates, "batch_size": cfg.report.batch_size,
                           "report_steps": cfg.report.steps}  # fmt: skip
    payload = {**facts, "steps": args.steps, "rounds": args.rounds, "presets": results}
    print(json.dumps(payload))
    return payload


if __name__ == "__main__":
    main()
