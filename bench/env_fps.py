"""Rendering throughput of ObjectView-v0: raw pybullet vs env.step vs AsyncVectorEnv.

Run: ``python bench/env_fps.py [--size 64] [--seconds 5] [--no-shadows]``. Prints one table
measured in this run; the ratios (step/raw, 2 workers/1 worker) are what to compare across
machines. ``--no-shadows`` measures the scene without shadows (the light cue's cost).
"""

from __future__ import annotations

import argparse
import os
import time

import gymnasium as gym
import numpy as np

import envs
from envs.bullet_scene import BulletScene


def timed_rate(run_once, seconds: float) -> float:
    run_once()  # warm-up: shape caches, first frame
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        count += run_once()
    return count / (time.perf_counter() - start)


#: Extra env kwargs of every measurement (set from the command line).
SCENE_KWARGS: dict = {}


def raw_render_rate(size: int, seconds: float) -> float:
    env = gym.make(envs.OBJECT_VIEW_ID, image_size=size, **SCENE_KWARGS)
    env.reset(seed=0)
    scene: BulletScene = env.unwrapped._scene
    state = env.unwrapped.state  # the same view env.step starts from

    def once() -> int:
        state[0] += np.deg2rad(3.0)  # a new view each frame, as env.step makes below
        scene.render(state, size)
        return 1

    rate = timed_rate(once, seconds)
    env.close()
    return rate


def step_rate(size: int, seconds: float) -> float:
    env = gym.make(envs.OBJECT_VIEW_ID, image_size=size, action_set="camera", episode_steps=10**9, **SCENE_KWARGS)
    env.reset(seed=0)
    action = np.array([0.2, 0.0, 0.0], dtype=np.float32)

    def once() -> int:
        env.step(action)
        return 1

    rate = timed_rate(once, seconds)
    env.close()
    return rate


def vector_rate(size: int, workers: int, seconds: float) -> float:
    vec = gym.vector.AsyncVectorEnv(
        [lambda: gym.make(envs.OBJECT_VIEW_ID, image_size=size, episode_steps=10**9, **SCENE_KWARGS)] * workers,
        shared_memory=True,
    )
    vec.reset(seed=0)
    actions = np.full((workers, 3), 0.2, dtype=np.float32)

    def once() -> int:
        vec.step(actions)
        return workers

    rate = timed_rate(once, seconds)
    vec.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement and round")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; best is kept")
    parser.add_argument("--no-shadows", action="store_true", help="render without shadows")
    args = parser.parse_args()
    SCENE_KWARGS["shadows"] = not args.no_shadows
    best = {"raw": 0.0, "step": 0.0, "one": 0.0, "two": 0.0}
    for _ in range(args.rounds):  # interleaving evens out frequency scaling and noise
        best["raw"] = max(best["raw"], raw_render_rate(args.size, args.seconds))
        best["step"] = max(best["step"], step_rate(args.size, args.seconds))
        best["one"] = max(best["one"], vector_rate(args.size, 1, args.seconds))
        best["two"] = max(best["two"], vector_rate(args.size, 2, args.seconds))
    raw, step, one, two = best["raw"], best["step"], best["one"], best["two"]
    shadows = "shadows" if SCENE_KWARGS["shadows"] else "no shadows"
    print(f"ObjectView-v0 at {args.size}x{args.size}, TinyRenderer, {shadows}, {os.cpu_count()} CPU cores")
    print("| measurement                      | frames/s | ratio                    |")
    print("|----------------------------------|---------:|--------------------------|")
    print(f"| raw getCameraImage, one process  | {raw:8.0f} | 1.00                     |")
    print(f"| env.step, one process            | {step:8.0f} | {step / raw:.2f} of raw (target 0.90) |")
    print(f"| AsyncVectorEnv, 1 worker         | {one:8.0f} | 1.00                     |")
    print(f"| AsyncVectorEnv, 2 workers        | {two:8.0f} | {two / one:.2f}x (target 1.7)     |")


if __name__ == "__main__":
    main()
