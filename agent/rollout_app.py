"""``ciper-rollout``: collect a time-augmented view dataset into crash-safe shards.

The dataset is planned as shards of ``dataset.shard_size`` transitions up to
``dataset.steps``. Shard ``k`` is collected by environments and a policy seeded from
``(dataset.seed, k)`` with episode ids starting at ``episode_id_base(k)``, so every shard is a
pure function of the config and its index. Running the same command again after a crash
keeps the complete shards and collects only the missing ones, and the result is the same
dataset. A dataset made with a different config is refused (the error names the differing
keys) unless ``dataset.overwrite=true``. Counts, frames/s and the write rate go to
``metrics.json`` in the run folder.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium.vector import VectorEnv
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

import envs
from agent.collector import Collector, make_vector_env
from agent.policies import make_policy
from agent.shards import ShardWriter, read_manifest, remove_dataset, write_json_atomic
from agent.transitions import TransitionBatch, episode_id_base
from conf.app import hydra_app


def resolve_path(path: str | os.PathLike[str]) -> Path:
    """A user path, relative ones taken from the launch directory (Hydra does not chdir here)."""
    return Path(path).expanduser().resolve()


def shard_seed(seed: int, index: int) -> int:
    """Seed of shard ``index``'s envs and policy; distinct for every (seed, index) pair."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def shard_plan(steps: int, shard_size: int) -> list[tuple[int, int]]:
    """(shard index, transitions) of every shard of a ``steps``-transition dataset."""
    if steps < 1 or shard_size < 1:
        raise ValueError(f"dataset.steps={steps}, dataset.shard_size={shard_size}: both must be >= 1")
    return [(k, min(shard_size, steps - k * shard_size)) for k in range(math.ceil(steps / shard_size))]


def catalog_fingerprint(catalog: str | None, env_id: str) -> dict[str, Any]:
    """Path and content sha256 of the catalogue (a file, or a folder's files in name order)."""
    if catalog is None:
        if env_id != "ciper/ObjectView-v0":
            return {"path": None, "sha256": None}
        from envs.catalog import default_catalog_path

        path = default_catalog_path()
    else:
        path = resolve_path(catalog)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        digest.update(file.read_bytes())
    return {"path": str(path), "sha256": digest.hexdigest()}


def action_semantics(action_set: str, env_id: str = envs.OBJECT_VIEW_ID) -> dict[str, Any]:
    """What the stored actions and states mean (the env's world module), for readers of the data."""
    scene_state = envs.world_module(env_id)
    return {
        "action_set": action_set,
        "action_dims": [
            {"name": d.name, "max_step": float(d.max_step), "unit": d.unit}
            for d in scene_state.action_dims(action_set)
        ],
        "state_fields": list(scene_state.STATE_FIELDS),
        "relative_action_names": list(scene_state.relative_action_names(action_set)),
        "relative_action": f"{scene_state.__name__}.relative_action(state_a, state_b, action_set)",
    }


def dataset_header(cfg: DictConfig) -> dict[str, Any]:
    """Everything that determines the dataset's content (compared on resume)."""
    env = OmegaConf.to_container(cfg.env, resolve=True)
    return {
        "env": env,
        "catalog": catalog_fingerprint(env["catalog"], env["id"]),
        "action_semantics": action_semantics(env["action_set"], env["id"]),
        "policy": OmegaConf.to_container(cfg.policy, resolve=True),
        "seed": int(cfg.dataset.seed),
        "shard_size": int(cfg.dataset.shard_size),
        "num_envs": int(cfg.collector.num_envs),
    }


def header_differences(stored: dict[str, Any], requested: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ, each as ``key: stored -> requested``."""
    differences = []
    for key in sorted(set(stored) | set(requested)):
        a, b = stored.get(key), requested.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            differences += header_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            differences.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return differences


class MemorySink:
    """A `TransitionSink` that keeps batches in memory (one shard, or views to look at)."""

    def __init__(self) -> None:
        self.batches: list[TransitionBatch] = []
        self.count = 0

    def write(self, batch: TransitionBatch) -> None:
        self.batches.append(batch)
        self.count += len(batch)


def open_dataset(root: Path, header: dict[str, Any], overwrite: bool) -> ShardWriter:
    """A writer on ``root``; refuses a dataset made differently unless ``overwrite``."""
    stored = read_manifest(root)
    if stored is not None and stored["header"] != header:
        differences = header_differences(stored["header"], header)
        if not overwrite:
            raise SystemExit(
                f"dataset {root} was made with a different config; differing keys (stored -> "
                f"requested):\n  " + "\n  ".join(differences)
                + "\nuse another dataset.path, or dataset.overwrite=true to replace it"
            )
        remove_dataset(root)
    return ShardWriter(root, header, int(header["shard_size"]))


def collect_shard(
    vector_env: VectorEnv, cfg: DictConfig, index: int, transitions: int
) -> tuple[TransitionBatch, str, VectorEnv]:
    """Collect shard ``index`` with envs and a policy seeded by (seed, index).

    Reseeding the envs with ``reset(seed=...)`` puts them in the same state as fresh ones,
    so a rerun that collects only this shard makes the same views. Returns the shard, the
    renderer actually used, and the vector env to go on with (the collector may have
    rebuilt it after a worker crash).
    """
    seed = shard_seed(cfg.dataset.seed, index)
    num_envs = int(cfg.collector.num_envs)
    vector_env.reset(seed=seed)
    policy = make_policy(cfg.policy, vector_env.single_action_space, num_envs, seed, action_set=cfg.env.action_set)
    sink = MemorySink()
    collector = Collector(
        vector_env, policy, sink, episode_id_base=episode_id_base(index), chunk_steps=int(cfg.collector.chunk_steps)
    )
    while sink.count < transitions:
        collector.collect(math.ceil((transitions - sink.count) / num_envs), progress=False)
    renderer = str(collector.vector_env.get_attr("renderer")[0])
    merged = TransitionBatch.concatenate(sink.batches)
    batch = TransitionBatch(**{k: v[:transitions] for k, v in merged.as_dict().items()})
    return batch, renderer, collector.vector_env


def rollout(cfg: DictConfig) -> dict[str, Any]:
    """Complete the dataset at ``dataset.path``; returns the run's metrics."""
    started = time.perf_counter()
    root = resolve_path(cfg.dataset.path)
    header = dataset_header(cfg)
    writer = open_dataset(root, header, bool(cfg.dataset.overwrite))
    writer.validate_listed()
    plan = shard_plan(int(cfg.dataset.steps), int(cfg.dataset.shard_size))
    sizes = {s["index"]: s["transitions"] for s in writer.manifest["shards"]}
    for index, transitions in plan:
        # A shorter last shard of an earlier, smaller run is collected again at full length.
        if index in sizes and sizes[index] != transitions:
            writer.remove_shard(index)
            del sizes[index]
    missing = [(k, n) for k, n in plan if k not in sizes]
    beyond = sorted(set(sizes) - {k for k, _ in plan})
    if beyond:
        print(f"note: {root} also holds shards {beyond} beyond dataset.steps={cfg.dataset.steps}; kept")

    collect_seconds = write_seconds = 0.0
    written = 0
    kept = int(cfg.dataset.steps) - sum(n for _, n in missing)
    vector_env = make_vector_env(cfg.env, int(cfg.collector.num_envs), cfg.collector.vectorization) if missing else None
    try:
        with tqdm(total=int(cfg.dataset.steps), initial=kept, unit="view", desc="rollout") as bar:
            for index, transitions in missing:
                tick = time.perf_counter()
                batch, renderer, vector_env = collect_shard(vector_env, cfg, index, transitions)
                tock = time.perf_counter()
                writer.write_shard(index, batch, extra={"renderer": renderer})
                collect_seconds += tock - tick
                write_seconds += time.perf_counter() - tock
                written += transitions
                bar.update(transitions)
    finally:
        if vector_env is not None:
            vector_env.close()

    shards = writer.manifest["shards"]
    episodes = set()
    for entry in shards:
        episodes.update(np.load(root / entry["name"] / "episode_id.npy", allow_pickle=False).tolist())
    bytes_written = sum(
        f["bytes"] for s in shards if s["index"] in {k for k, _ in missing} for f in s["files"].values()
    )
    return {
        "dataset": str(root),
        "transitions": writer.num_transitions(),
        "episodes": len(episodes),
        "shards": len(shards),
        "shards_written": len(missing),
        "shards_kept": len(plan) - len(missing),
        "transitions_written": written,
        "renderers": sorted({s.get("renderer", "unknown") for s in shards}),
        "collect_seconds": collect_seconds,
        "frames_per_second": written / collect_seconds if collect_seconds else None,
        "write_seconds": write_seconds,
        "write_transitions_per_second": written / write_seconds if write_seconds else None,
        "write_megabytes_per_second": bytes_written / 1e6 / write_seconds if write_seconds else None,
        "wall_seconds": time.perf_counter() - started,
    }


def _task(cfg: DictConfig) -> None:
    """Collect a time-augmented view dataset (see ``dataset.*``, ``env.*``, ``policy.*``)."""
    metrics = rollout(cfg)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "metrics.json", metrics)
    print(json.dumps(metrics, indent=2))
    print(f"dataset: {metrics['dataset']}\nmetrics: {run_dir / 'metrics.json'}")


main = hydra_app(_task)

if __name__ == "__main__":
    main()
