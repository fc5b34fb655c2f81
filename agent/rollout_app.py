"""``ciper-rollout``: collect a time-augmented view dataset into crash-safe shards.

The dataset is planned as shards of ``dataset.shard_size`` transitions up to
``dataset.steps``. Shard ``k`` is collected by environments and a policy seeded from
``(dataset.seed, k)`` with episode ids starting at ``episode_id_base(k)``, so every shard is a
pure function of the config and its index. Running the same command again after a crash
keeps the complete shards and collects only the missing ones, and the result is the same
dataset; every kept shard's sha256 is checked first, and a corrupt shard is collected again
(saying so). One rollout writes a dataset at a time (``conf.locks``: a second one is
refused naming the first one's PID). A dataset made with a different config is refused (the
error names the differing keys) unless ``dataset.overwrite=true``. Counts, frames/s and the
write rate go to ``metrics.json`` in the run folder. With ``dataset.format=3diebench`` the same shards are
written in SIE's 3DIEBench layout instead (:mod:`agent.iebench_writer`, docs/3diebench.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium.vector import VectorEnv
from omegaconf import DictConfig
from tqdm import tqdm

import envs
from agent.atomic_files import write_json_atomic
from agent.collector import Collector, make_vector_env
from agent.iebench_writer import check_benchmark_target, write_benchmark
from agent.policies import make_policy
from agent.shards import CorruptShardError, ShardWriter, read_manifest, remove_dataset, verify_shard
from agent.transitions import MemorySink, TransitionBatch, episode_id_base
from conf.app import EXIT_INTERRUPTED, hydra_app
from conf.app_common import key_differences, resolve_path
from conf.locks import FolderLock
from conf.schema import CiperConfig
from conf.typed import plain_config, typed_config
from conf.validate import ConfigError
from envs.catalog import default_catalog_path

log = logging.getLogger(__name__)


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
        if env_id != envs.OBJECT_VIEW_ID:
            return {"path": None, "sha256": None}
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


def dataset_header(cfg: CiperConfig | DictConfig) -> dict[str, Any]:
    """Everything that determines the dataset's content (compared on resume)."""
    env = plain_config(cfg.env)
    return {
        "env": env,
        "catalog": catalog_fingerprint(env["catalog"], env["id"]),
        "action_semantics": action_semantics(env["action_set"], env["id"]),
        "policy": plain_config(cfg.policy),
        "seed": cfg.dataset.seed,
        "shard_size": cfg.dataset.shard_size,
        "num_envs": cfg.collector.num_envs,
    }


def check_dataset(cfg: CiperConfig | DictConfig) -> None:
    """Refuse, before anything is written, a rerun that would replace or shrink the dataset
    at ``dataset.path`` without ``dataset.overwrite=true``."""
    root = resolve_path(cfg.dataset.path)
    if cfg.dataset.format == "3diebench":
        check_benchmark_target(root, dataset_header(cfg), cfg.dataset.overwrite)
        return
    if cfg.dataset.overwrite:
        return
    stored = read_manifest(root)
    if stored is None:
        return
    if stored["header"] != dataset_header(cfg):
        differences = key_differences(stored["header"], dataset_header(cfg))
        raise ConfigError(
            f"dataset.path={root}: made with another config (stored -> requested: {'; '.join(differences)}); "
            "use another dataset.path, or dataset.overwrite=true to replace it"
        )
    planned = dict(shard_plan(cfg.dataset.steps, cfg.dataset.shard_size))
    held = sum(s["transitions"] for s in stored["shards"])
    if any(s["transitions"] > planned.get(s["index"], 0) for s in stored["shards"]):
        raise ConfigError(
            f"dataset.steps={cfg.dataset.steps}: {root} already holds {held} transitions and a rerun never "
            f"shrinks a dataset; pass dataset.steps={held} (or more), or dataset.overwrite=true to cut it"
        )


def open_dataset(root: Path, header: dict[str, Any], overwrite: bool) -> ShardWriter:
    """A writer on ``root``; a dataset made differently is replaced only with ``overwrite``
    (`check_dataset` has refused it otherwise)."""
    stored = read_manifest(root)
    if stored is not None and stored["header"] != header and overwrite:
        remove_dataset(root)
    return ShardWriter(root, header, int(header["shard_size"]))


def complete_as_planned(root: Path, header: dict[str, Any], plan: list[tuple[int, int]]) -> dict[str, Any] | None:
    """The manifest when the dataset already holds exactly the planned shards, each file
    with its recorded size and sha256 (read only: a complete dataset on a read-only mount
    needs no write); else None."""
    stored = read_manifest(root)
    if stored is None or stored["header"] != header:
        return None
    if sorted((s["index"], s["transitions"]) for s in stored["shards"]) != sorted(plan):
        return None
    try:
        for entry in stored["shards"]:
            verify_shard(root / entry["name"], entry["files"], checksums=True)
    except CorruptShardError:
        return None
    return stored


def collect_shard(
    vector_env: VectorEnv, cfg: CiperConfig, index: int, transitions: int
) -> tuple[TransitionBatch, str, VectorEnv]:
    """Collect shard ``index`` with envs and a policy seeded by (seed, index).

    Reseeding the envs with ``reset(seed=...)`` puts them in the same state as fresh ones,
    so a rerun that collects only this shard makes the same views. Returns the shard, the
    renderer actually used, and the vector env to go on with (the collector may have
    rebuilt it after a worker crash).
    """
    seed = shard_seed(cfg.dataset.seed, index)
    num_envs = cfg.collector.num_envs
    vector_env.reset(seed=seed)
    policy = make_policy(cfg.policy, vector_env.single_action_space, num_envs, seed, action_set=cfg.env.action_set)
    sink = MemorySink()
    collector = Collector(
        vector_env, policy, sink, episode_id_base=episode_id_base(index), chunk_steps=cfg.collector.chunk_steps
    )
    while sink.count < transitions:
        collector.collect(math.ceil((transitions - sink.count) / num_envs), progress=False)
    renderer = str(collector.vector_env.get_attr("renderer")[0])
    merged = TransitionBatch.concatenate(sink.batches)
    batch = TransitionBatch(**{k: v[:transitions] for k, v in merged.as_dict().items()})
    return batch, renderer, collector.vector_env


def rollout(cfg: CiperConfig | DictConfig) -> dict[str, Any]:
    """Complete the dataset at ``dataset.path``; returns the run's metrics."""
    started, cfg = time.perf_counter(), typed_config(cfg)
    check_dataset(cfg)
    root = resolve_path(cfg.dataset.path)
    header = dataset_header(cfg)
    if cfg.dataset.format == "3diebench":
        metrics = write_benchmark(root, header, collected_shards(cfg))
        return {**metrics, "wall_seconds": time.perf_counter() - started}
    plan = shard_plan(cfg.dataset.steps, cfg.dataset.shard_size)
    progress = {"written": [], "regenerated": [], "transitions": 0, "collect_seconds": 0.0, "write_seconds": 0.0}
    manifest = complete_as_planned(root, header, plan)
    if manifest is None:
        with FolderLock(root, what=f"dataset.path={root}"):  # one writer per dataset
            manifest = complete_dataset(cfg, root, header, plan, progress)
    return rollout_metrics(root, manifest, plan, progress, time.perf_counter() - started)


def complete_dataset(
    cfg: CiperConfig, root: Path, header: dict[str, Any], plan: list[tuple[int, int]], progress: dict[str, Any]
) -> dict[str, Any]:
    """Collect and write every planned shard the dataset lacks; returns the manifest.
    ``progress`` counts what this call wrote."""
    writer = open_dataset(root, header, cfg.dataset.overwrite)
    for index, problem in writer.validate_listed(checksums=True).items():
        # Shards are deterministic: the one collected again equals what was recorded.
        log.warning("rollout: regenerating shard %d: %s", index, problem)
        progress["regenerated"].append(index)
    planned = dict(plan)
    for entry in list(writer.manifest["shards"]):
        # A shorter last shard of an earlier, smaller run is collected again at full length;
        # a longer one or one beyond the plan only with dataset.overwrite (check_dataset).
        if planned.get(entry["index"]) != entry["transitions"]:
            writer.remove_shard(entry["index"])
    held = {s["index"] for s in writer.manifest["shards"]}
    missing = [(k, n) for k, n in plan if k not in held]
    vector_env = make_vector_env(cfg.env, cfg.collector.num_envs, cfg.collector.vectorization) if missing else None
    total = cfg.dataset.steps
    try:
        with tqdm(total=total, initial=total - sum(n for _, n in missing), unit="view", desc="rollout") as bar:
            for index, transitions in missing:
                tick = time.perf_counter()
                batch, renderer, vector_env = collect_shard(vector_env, cfg, index, transitions)
                tock = time.perf_counter()
                writer.write_shard(index, batch, extra={"renderer": renderer})
                progress["collect_seconds"] += tock - tick
                progress["write_seconds"] += time.perf_counter() - tock
                progress["transitions"] += transitions
                progress["written"].append(index)
                bar.update(transitions)
                log.info("rollout: shard %d written, %d/%d transitions, %.0f frames/s", index, bar.n, total,
                         progress["transitions"] / max(progress["collect_seconds"], 1e-9), extra={"progress": True})  # fmt: skip
    except BaseException:
        # Ctrl-C (or an error) mid-step: stop the env workers before their pipes close, or a
        # worker that finishes its step writes into a closed pipe and prints a traceback.
        _close_quietly(vector_env, terminate=True)
        raise
    _close_quietly(vector_env, terminate=False)
    return writer.manifest


def collected_shards(cfg: CiperConfig) -> Iterator[tuple[int, TransitionBatch]]:
    """(index, transitions) of every planned shard, collected as for the shard format, for a
    writer that takes them in memory (``dataset.format=3diebench``); envs start on first use."""
    vector_env = make_vector_env(cfg.env, cfg.collector.num_envs, cfg.collector.vectorization)
    finished = False
    try:
        for index, transitions in shard_plan(cfg.dataset.steps, cfg.dataset.shard_size):
            batch, _, vector_env = collect_shard(vector_env, cfg, index, transitions)
            log.info("rollout: shard %d collected (%d transitions)", index, transitions, extra={"progress": True})
            yield index, batch
        finished = True
    finally:
        _close_quietly(vector_env, terminate=not finished)


def _close_quietly(vector_env: Any, terminate: bool) -> None:
    if vector_env is None:
        return
    with warnings.catch_warnings():  # closing mid-step after Ctrl-C is expected here
        warnings.simplefilter("ignore")
        vector_env.close(terminate=terminate)


def rollout_metrics(
    root: Path, manifest: dict[str, Any], plan: list[tuple[int, int]], progress: dict[str, Any], wall_seconds: float
) -> dict[str, Any]:
    """Counts of the dataset and rates of what this run wrote (``metrics.json``)."""
    shards = manifest["shards"]
    episodes = set()
    for entry in shards:
        episodes.update(np.load(root / entry["name"] / "episode_id.npy", allow_pickle=False).tolist())
    written, collect_s, write_s = progress["transitions"], progress["collect_seconds"], progress["write_seconds"]
    bytes_written = sum(f["bytes"] for s in shards if s["index"] in progress["written"] for f in s["files"].values())
    return {
        "dataset": str(root),
        "transitions": sum(s["transitions"] for s in shards),
        "episodes": len(episodes),
        "shards": len(shards),
        "shards_written": len(progress["written"]),
        "shards_kept": len(plan) - len(progress["written"]),
        "shards_regenerated": len(progress["regenerated"]),
        "transitions_written": written,
        "renderers": sorted({s.get("renderer", "unknown") for s in shards}),
        "collect_seconds": collect_s,
        "frames_per_second": written / collect_s if collect_s else None,
        "write_seconds": write_s,
        "write_transitions_per_second": written / write_s if write_s else None,
        "write_megabytes_per_second": bytes_written / 1e6 / write_s if write_s else None,
        "wall_seconds": wall_seconds,
    }


def interrupted_note(cfg: CiperConfig) -> str:
    """What a Ctrl-C kept, and how to go on."""
    root = resolve_path(cfg.dataset.path)
    if cfg.dataset.format == "3diebench":
        return f"ciper-rollout: interrupted; the 3DIEBench folder {root} is incomplete; rerun the same command to write it again"
    plan = shard_plan(cfg.dataset.steps, cfg.dataset.shard_size)
    shards = (read_manifest(root) or {"shards": []})["shards"]
    kept = sum(s["transitions"] for s in shards)
    return (
        f"ciper-rollout: interrupted; {len(shards)}/{len(plan)} shards ({kept}/{cfg.dataset.steps} transitions) "
        f"kept in {root}; rerun the same command to collect the rest"
    )


def _task(cfg: CiperConfig | DictConfig) -> None:
    """Collect a time-augmented view dataset (see ``dataset.*``, ``env.*``, ``policy.*``)."""
    cfg = typed_config(cfg)
    try:
        metrics = rollout(cfg)
    except KeyboardInterrupt:
        print(interrupted_note(cfg), file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "metrics.json", metrics)
    print(json.dumps(metrics, indent=2))
    print(f"dataset: {metrics['dataset']}\nmetrics: {run_dir / 'metrics.json'}")


main = hydra_app(_task, check=check_dataset)

if __name__ == "__main__":
    main()
