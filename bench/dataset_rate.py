"""Dataset throughput at 64x64, measured in one run: can the disk keep up with the renderer
and the loader keep up with the learner?

Prints four rates: shard writing (transitions/s through `ShardWriter`, from in-memory
batches, fsync and sha256 included), collection (frames/s of the collector with one async
env per core), DataLoader pair reads (pairs/s, two workers, shuffled) and in-process
`sample_pairs` batches. It also prints the ratios that matter: write rate / collection rate
(above 1: writing never slows a rollout) and read rate / collection rate.

    python bench/dataset_rate.py [--transitions 8192] [--collect-steps 400]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from agent.collector import Collector, make_vector_env
from agent.dataset import ViewPairDataset
from agent.policies import make_policy
from agent.shards import ShardWriter
from agent.transitions import MemorySink, TransitionBatch
from conf.schema import EnvConfig, PolicyConfig
from envs.scene_state import STATE_DIM, random_state

IMAGE_SIZE = 64
SHARD_SIZE = 1024
EPISODE_STEPS = 32


def synthetic_transitions(count: int, seed: int = 0) -> TransitionBatch:
    """Random views with valid states, in 32-step episodes (only sizes matter for writing)."""
    rng = np.random.default_rng(seed)
    return TransitionBatch(
        view=rng.integers(0, 256, (count, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8),
        state=np.stack([random_state(rng) for _ in range(count)]).reshape(count, STATE_DIM),
        applied_action=rng.uniform(-0.1, 0.1, (count, 3)).astype(np.float32),
        object_index=rng.integers(0, 100, count),
        category=rng.integers(-1, 10, count),
        episode_id=np.arange(count, dtype=np.int64) // EPISODE_STEPS,
        step=np.arange(count, dtype=np.int64) % EPISODE_STEPS,
    )


def write_rate(root: Path, batch: TransitionBatch, chunk: int = 256) -> float:
    writer = ShardWriter(root, {"env": {"action_set": "camera", "image_size": IMAGE_SIZE}}, SHARD_SIZE)
    start = time.perf_counter()
    for first in range(0, len(batch), chunk):
        writer.write(TransitionBatch(**{k: v[first : first + chunk] for k, v in batch.as_dict().items()}))
    writer.finish()
    return len(batch) / (time.perf_counter() - start)


def collection_rate(num_envs: int, vector_steps: int) -> float:
    env_cfg = EnvConfig(image_size=IMAGE_SIZE, episode_steps=EPISODE_STEPS)
    vector_env = make_vector_env(env_cfg, num_envs, "async", seed=0)
    policy = make_policy(PolicyConfig(), vector_env.single_action_space, num_envs, seed=0)
    collector = Collector(vector_env, policy, MemorySink())
    try:
        collector.collect(10, progress=False)  # workers warm: meshes loaded, first frames out
        start = time.perf_counter()
        views = collector.collect(vector_steps, progress=False)
        return views / (time.perf_counter() - start)
    finally:
        collector.close()


def loader_rate(root: Path, batches: int, batch_size: int = 256) -> float:
    dataset = ViewPairDataset(root, min_offset=1, max_offset=4, verify=False)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=2)
    iterator = iter(loader)
    next(iterator)  # worker start-up is a one-off cost, not a rate
    start = time.perf_counter()
    pairs = 0
    for _ in range(batches):
        pairs += next(iterator)["view_a"].shape[0]
    return pairs / (time.perf_counter() - start)


def sample_rate(root: Path, batches: int, batch_size: int = 256) -> float:
    dataset = ViewPairDataset(root, min_offset=1, max_offset=4, verify=False)
    rng = np.random.default_rng(0)
    dataset.sample_pairs(batch_size, rng)
    start = time.perf_counter()
    for _ in range(batches):
        dataset.sample_pairs(batch_size, rng)
    return batches * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transitions", type=int, default=8192, help="transitions written and then read")
    parser.add_argument("--collect-steps", type=int, default=400, help="vector steps of the collection run")
    parser.add_argument("--read-batches", type=int, default=20, help="batches of 256 pairs read")
    args = parser.parse_args()
    num_envs = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "dataset"
        written = write_rate(root, synthetic_transitions(args.transitions))
        collected = collection_rate(num_envs, args.collect_steps)
        loaded = loader_rate(root, args.read_batches)
        sampled = sample_rate(root, args.read_batches)
    megabytes = IMAGE_SIZE * IMAGE_SIZE * 3 / 1e6
    print(f"{IMAGE_SIZE}x{IMAGE_SIZE} views, shards of {SHARD_SIZE}, {num_envs} async envs")
    print(f"write (ShardWriter, fsync + sha256): {written:10.0f} transitions/s ({written * megabytes:.0f} MB/s)")
    print(f"collect (Collector, TinyRenderer):   {collected:10.0f} frames/s")
    print(f"read (DataLoader, 2 workers):        {loaded:10.0f} pairs/s")
    print(f"read (sample_pairs, in process):     {sampled:10.0f} pairs/s")
    print(f"write / collect: {written / collected:6.1f}x    DataLoader read / collect: {loaded / collected:6.1f}x")


if __name__ == "__main__":
    main()
