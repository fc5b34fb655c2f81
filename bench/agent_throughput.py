"""Throughput of the observer's data path at 64x64, measured in one run.

(a) ``ReplayBuffer.sample_pairs`` in pairs/s (batch 256, views gathered, relative actions
computed; one core) against a 20k pairs/s target; (b) collector frames/s against stepping
the same vector env with the same policy and no sink, i.e. the collector's overhead
(target <= 10%). Run ``python bench/agent_throughput.py [--num-envs 2 --steps 300]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from agent.collector import Collector, make_vector_env
from agent.policies import make_policy
from agent.replay_buffer import ReplayBuffer
from agent.transitions import TransitionBatch
from conf.schema import EnvConfig, PolicyConfig
from envs.scene_state import STATE_DIM

IMAGE = 64


def filled_buffer(capacity: int, max_offset: int) -> ReplayBuffer:
    """A buffer full of synthetic 64x64 views from 8 interleaved envs, episodes of 32 steps."""
    buffer = ReplayBuffer.create(capacity, (IMAGE, IMAGE, 3), STATE_DIM, 3, min_offset=1, max_offset=max_offset)
    rng = np.random.default_rng(0)
    n = np.arange(capacity)
    env, tick = n % 8, n // 8
    state = np.zeros((capacity, STATE_DIM))
    state[:, 3:7] = rng.normal(size=(capacity, 4))
    batch = TransitionBatch(
        view=rng.integers(0, 256, size=(capacity, IMAGE, IMAGE, 3), dtype=np.uint8),
        state=state, applied_action=np.zeros((capacity, 3), np.float32),
        object_index=env.astype(np.int64), category=env.astype(np.int64),
        episode_id=(env + 8 * (tick // 32)).astype(np.int64), step=(tick % 32).astype(np.int64),
    )  # fmt: skip
    buffer.writer(0).write(batch)
    return buffer


def pairs_per_second(buffer: ReplayBuffer, batch_size: int, seconds: float) -> float:
    rng = np.random.default_rng(1)
    buffer.sample_pairs(batch_size, rng)  # warm caches
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        buffer.sample_pairs(batch_size, rng)
        count += batch_size
    return count / (time.perf_counter() - start)


class DiscardSink:
    def write(self, batch: TransitionBatch) -> None:
        pass


def frames_per_second(env_cfg: EnvConfig, num_envs: int, steps: int, vectorization: str, with_collector: bool) -> float:
    vector_env = make_vector_env(env_cfg, num_envs, vectorization, seed=0)
    policy = make_policy(PolicyConfig(), vector_env.single_action_space, num_envs, seed=0)
    try:
        if with_collector:
            with ReplayBuffer.create(8192, (IMAGE, IMAGE, 3), STATE_DIM, 3, max_offset=4) as buffer:
                collector = Collector(vector_env, policy, buffer.writer(0))
                collector.collect(8, progress=False)
                start = time.perf_counter()
                collector.collect(steps, progress=False)
                return steps * num_envs / (time.perf_counter() - start)
        observation, infos = vector_env.reset()
        for _ in range(8):
            observation, _, _, _, infos = vector_env.step(policy.act(observation, infos))
        start = time.perf_counter()
        for _ in range(steps):
            observation, _, _, _, infos = vector_env.step(policy.act(observation, infos))
        return steps * num_envs / (time.perf_counter() - start)
    finally:
        vector_env.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--capacity", type=int, default=20000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--max-offset", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--num-envs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--vectorization", choices=["sync", "async"], default="sync")
    parser.add_argument("--repeats", type=int, default=3, help="alternating raw/collector runs; best of each")
    args = parser.parse_args()

    buffer = filled_buffer(args.capacity, args.max_offset)
    try:
        rate = pairs_per_second(buffer, args.batch_size, args.seconds)
    finally:
        buffer.unlink()

    env_cfg = EnvConfig(image_size=IMAGE, episode_steps=32)
    raw, collected = [], []
    for _ in range(args.repeats):  # alternate so drift in machine load hits both alike
        raw.append(frames_per_second(env_cfg, args.num_envs, args.steps, args.vectorization, False))
        collected.append(frames_per_second(env_cfg, args.num_envs, args.steps, args.vectorization, True))
    raw_fps, collector_fps = max(raw), max(collected)
    overhead = 100.0 * (raw_fps / collector_fps - 1.0)

    print(f"agent throughput at {IMAGE}x{IMAGE} ({args.vectorization}, {args.num_envs} envs)")
    print(f"{'measure':<44}{'value':>12}{'target':>12}{'ratio':>8}")
    print(f"{'sample_pairs, batch ' + str(args.batch_size) + ' (pairs/s)':<44}{rate:>12.0f}{20000:>12}{rate / 20000:>8.2f}")
    print(f"{'raw vector env (frames/s)':<44}{raw_fps:>12.0f}{'':>12}{'':>8}")
    print(f"{'collector into the buffer (frames/s)':<44}{collector_fps:>12.0f}{'':>12}{collector_fps / raw_fps:>8.2f}")
    print(f"{'collector overhead (%)':<44}{overhead:>12.1f}{'<= 10':>12}{'':>8}")


if __name__ == "__main__":
    main()
