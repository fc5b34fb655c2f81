"""Learner efficiency: the full CIPER step's FLOPs and GFLOPS against this machine's matmul.

Run: ``python bench/learner_step_flops.py [--rounds 3] [--only small] [key=value overrides ...]``.
For each report setting (small encoder and ResNet-18, 32 and 64 px) it builds the real
``Learner`` from the config tree, counts one step's FLOPs with PyTorch's own counter
(``torch.utils.flop_counter.FlopCounterMode``: forward and backward of every conv and
matmul; elementwise ops, BatchNorm and the optimiser count 0), then alternates rounds of
{float32 2048x2048 matmul, training step} and keeps the best of the rounds of each, because
the machine may be shared. The efficiency is step GFLOPS / matmul GFLOPS, both measured in
this run. Extra overrides apply to every setting, e.g. ``train.channels_last=false`` for an
A/B. On a machine other processes load, ``--threads 1 --clock cpu`` times by process CPU
time on one thread, which time-slicing does not inflate (a 2-thread wall-clock run there
mostly measures the other processes). The output is a markdown table ready to paste, then
one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass

import torch
from learner_throughput import synthetic_pairs  # bench/ is on sys.path when run as a script
from torch.utils.flop_counter import FlopCounterMode

import envs
from agent.view_pairs import ViewPairs
from conf.compose import compose_config
from conf.typed import typed_config
from learner.training.device import select_device
from learner.training.learner import Learner

MATMUL_SIZE = 2048
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["wall"]


@dataclass(frozen=True)
class Setting:
    label: str
    overrides: tuple[str, ...]
    min_seconds: float  # timed steps per round run at least this long


SETTINGS = (
    # the setting: small encoder width 32, batch 128 pairs
    Setting("small w32, 32 px, 128 pairs", ("model.encoder=small", "model.width=32", "env.image_size=32", "train.batch_size=128"), 1.5),
    Setting("small w32, 64 px, 128 pairs", ("model.encoder=small", "model.width=32", "env.image_size=64", "train.batch_size=128"), 2.0),
    # the report=quick preset (small encoder at its default width 16, batch 64, 32 px)
    Setting("small w16, 32 px, 64 pairs (report=quick)", ("model.encoder=small", "env.image_size=32", "train.batch_size=64"), 1.0),
    # ResNet-18 (CIFAR stem) on CPU is slow: small batches, one step per round
    Setting("resnet18, 32 px, 16 pairs", ("model.encoder=resnet18", "env.image_size=32", "train.batch_size=16"), 1.0),
    Setting("resnet18, 64 px, 8 pairs", ("model.encoder=resnet18", "env.image_size=64", "train.batch_size=8"), 1.0),
)  # fmt: skip


def matmul_gflops(a: torch.Tensor, b: torch.Tensor, repeats: int = 4) -> float:
    torch.mm(a, b)
    start = clock()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * MATMUL_SIZE**3 * repeats / (clock() - start) / 1e9


def timed_steps(learner: Learner, pairs: ViewPairs, min_seconds: float) -> float:
    """Steps per second over at least ``min_seconds`` (and at least one step)."""
    steps, start = 0, clock()
    while True:
        losses = learner.step(pairs)
        float(losses["loss"])  # wait for the device
        steps += 1
        elapsed = clock() - start
        if elapsed >= min_seconds:
            return steps / elapsed


def measure(setting: Setting, extra: list[str], rounds: int) -> dict:
    cfg = typed_config(compose_config([*setting.overrides, "train.device=cpu", *extra]))
    device = select_device(cfg.train.device)
    torch.manual_seed(0)
    learner = Learner(cfg, envs.world_module(cfg.env.id), device)
    batch = cfg.train.batch_size
    pairs = synthetic_pairs(cfg)
    learner.step(pairs)  # warm-up (allocator, oneDNN primitive caches)
    with FlopCounterMode(display=False) as counter:
        learner.step(pairs)
    flops = counter.get_total_flops()
    a, b = torch.randn(MATMUL_SIZE, MATMUL_SIZE), torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    matmul, steps_per_s = [], []
    for _ in range(rounds):
        matmul.append(matmul_gflops(a, b))
        steps_per_s.append(timed_steps(learner, pairs, setting.min_seconds))
    best_steps, best_matmul = max(steps_per_s), max(matmul)
    step_gflops = flops * best_steps / 1e9
    return {
        "setting": setting.label, "flops_per_step": flops, "images_per_step": 2 * batch,
        "images_per_s": 2 * batch * best_steps, "step_gflops": step_gflops, "matmul_gflops": best_matmul,
        "ratio": step_gflops / best_matmul,
        "round_ratios": [flops * s / 1e9 / m for s, m in zip(steps_per_s, matmul, strict=True)],
        "channels_last": learner.channels_last, "threads": torch.get_num_threads(),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved matmul/step rounds; the best counts")
    parser.add_argument("--only", default="", help="run only the settings whose label contains this text")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: PyTorch's default)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall", help="wall time, or process CPU time")
    parser.add_argument("overrides", nargs="*", help="config overrides applied to every setting, key=value")
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    if args.threads:
        torch.set_num_threads(args.threads)
    results = [measure(s, args.overrides, args.rounds) for s in SETTINGS if args.only in s.label]
    load = os.getloadavg()[0]
    print(f"CIPER step efficiency on CPU: {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{results[0]['threads']} threads, {args.clock} clock, best of {args.rounds} interleaved rounds, load average {load:.1f}"
          + (f", overrides {args.overrides}" if args.overrides else ""))  # fmt: skip
    print("| setting | GFLOP/step | images/s | step GFLOPS | matmul GFLOPS | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['setting']} | {r['flops_per_step'] / 1e9:.2f} | {r['images_per_s']:.0f} | "
              f"{r['step_gflops']:.1f} | {r['matmul_gflops']:.1f} | {100 * r['ratio']:.0f}% |")  # fmt: skip
    print(json.dumps({"load_average": load, "clock": args.clock, "overrides": args.overrides, "results": results}))


if __name__ == "__main__":
    main()
