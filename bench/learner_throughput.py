"""Learner throughput: pure train step on synthetic pairs vs the full online loop.

Run: ``python bench/learner_throughput.py [--steps 40] [key=value overrides ...]``, e.g.
``python bench/learner_throughput.py model.encoder=resnet18 train.batch_size=256`` on a GPU box.
Both measurements use the same config, model and batch size in one run. The online loop
includes waiting for the background collectors; the ratio online/pure is the share of
the learner's speed that the data pipeline delivers (target >= 0.85), and the data-wait
fraction is the share of loop time spent waiting for pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import envs
from agent.view_pairs import ViewPairs
from conf.compose import compose_config
from conf.schema import CiperConfig
from conf.typed import typed_config
from learner.training.device import select_device
from learner.training.learner import Learner
from learner.training.loop import train


def synthetic_pairs(cfg: CiperConfig, seed: int = 0) -> ViewPairs:
    """A batch of ``train.batch_size`` random views of ``env.image_size`` with states of the
    config's world and random relative actions (the learner's work does not depend on them)."""
    rng = np.random.default_rng(seed)
    world = envs.world_module(cfg.env.id)
    batch, size = cfg.train.batch_size, cfg.env.image_size
    action_dim = len(world.relative_action_names(cfg.env.action_set))
    views = rng.integers(0, 256, size=(2, batch, size, size, 3), dtype=np.uint8)
    states = np.stack([[world.random_state(rng) for _ in range(batch)] for _ in range(2)])
    return ViewPairs(
        view_a=views[0], view_b=views[1],
        relative_action=rng.normal(size=(batch, action_dim)).astype(np.float32),
        state_a=states[0], state_b=states[1],
        object_index=np.zeros(batch, np.int64), category=np.zeros(batch, np.int64), offset=np.ones(batch, np.int64),
    )  # fmt: skip


def pure_step_rate(cfg: CiperConfig, steps: int) -> float:
    device = select_device(cfg.train.device)
    learner = Learner(cfg, envs.world_module(cfg.env.id), device)
    pairs = synthetic_pairs(cfg)
    for _ in range(3):  # warm-up (allocator, cudnn autotune, compile)
        learner.step(pairs)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        losses = learner.step(pairs)
    float(losses["loss"])  # wait for the device
    return 2 * cfg.train.batch_size * steps / (time.perf_counter() - start)


def online_loop(cfg_overrides: list[str], steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_config([*cfg_overrides, f"train.steps={steps}", "train.evaluate=false",
                              "train.mode=online", "train.checkpoint_every=1000000"], run_dir=tmp)  # fmt: skip
        return train(cfg, Path(tmp))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100, help="timed steps per measurement")
    parser.add_argument("overrides", nargs="*", help="config overrides, key=value")
    args = parser.parse_args()
    cfg = typed_config(compose_config(args.overrides))
    pure = pure_step_rate(cfg, args.steps)
    metrics = online_loop(args.overrides, args.steps)
    online = metrics["images_per_s"]
    device = metrics["device"]
    print(f"learner benchmark: {cfg.model.encoder} ({cfg.model.stem} stem) , {cfg.env.image_size}x{cfg.env.image_size}, "
          f"batch {cfg.train.batch_size} pairs, method {cfg.method.name}, device {device}, {os.cpu_count()} CPU cores")  # fmt: skip
    print("| measurement                              | images/s | ratio            |")
    print("|------------------------------------------|---------:|------------------|")
    print(f"| pure train step, synthetic uint8 pairs   | {pure:8.0f} | 1.00             |")
    print(f"| full online loop (collectors + buffer)   | {online:8.0f} | {online / pure:.2f} (target 0.85) |")
    print(f"| data-wait fraction of the online loop    | {metrics['data_wait_fraction']:8.3f} |                  |")
    print(json.dumps({"pure_images_per_s": pure, "online_images_per_s": online, "ratio": online / pure,
                      "data_wait_fraction": metrics["data_wait_fraction"], "device": device}))  # fmt: skip


if __name__ == "__main__":
    main()
