"""``ciper-rollout`` survives SIGKILL, resumes to the same dataset, and refuses a foreign one.

The app runs as a subprocess (the way a user and a crash meet it) at 32x32 with the sync
vector env. The killed-and-resumed dataset is compared file by file (sha256) with one
collected without interruption, which is the determinism claim behind the resume.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from agent.dataset import ViewPairDataset
from agent.shards import CHECKSUMS_NAME, read_manifest, shard_index, verify_shard

STEPS, SHARD_SIZE = 3000, 150
COMMON = [
    "env.image_size=32", "env.episode_steps=20", "collector.vectorization=sync", "collector.num_envs=2",
    f"dataset.steps={STEPS}", f"dataset.shard_size={SHARD_SIZE}",
]  # fmt: skip


def rollout_command(dataset: Path, run_dir: Path, *overrides: str) -> list[str]:
    return [
        sys.executable, "-m", "agent.rollout_app", *COMMON,
        f"dataset.path={dataset}", f"hydra.run.dir={run_dir}", *overrides,
    ]  # fmt: skip


def run_rollout(dataset: Path, run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        rollout_command(dataset, run_dir, *overrides), capture_output=True, text=True, timeout=120, check=False
    )


def view_hashes(root: Path) -> list[str]:
    return [s["files"]["view.npy"]["sha256"] for s in read_manifest(root)["shards"]]


def test_killed_rollout_keeps_complete_shards_and_resumes_to_the_same_dataset(tmp_path):
    dataset = tmp_path / "data"
    process = subprocess.Popen(
        rollout_command(dataset, tmp_path / "run_killed"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while not (dataset / "shard_00000").is_dir() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.01)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL

    # Only complete shards, whether or not the manifest lists them yet.
    complete = sorted(p for p in dataset.iterdir() if shard_index(p.name) is not None)
    assert complete, "the first shard never appeared"
    for path in complete:
        entry = json.loads((path / CHECKSUMS_NAME).read_text())["entry"]
        verify_shard(path, entry["files"])
    listed = read_manifest(dataset)["counts"]["transitions"]
    assert listed < STEPS
    if listed:  # the kill may fall between a shard's rename and the manifest update
        assert ViewPairDataset(dataset).num_transitions == listed

    resumed = run_rollout(dataset, tmp_path / "run_resumed")
    assert resumed.returncode == 0, resumed.stderr
    metrics = json.loads((tmp_path / "run_resumed" / "metrics.json").read_text())
    assert metrics["transitions"] == STEPS and metrics["shards_kept"] >= 1
    assert not list(dataset.glob("*.tmp"))
    loaded = ViewPairDataset(dataset)
    assert loaded.num_transitions == STEPS
    episode, step = loaded.metadata("episode_id", np.arange(STEPS)), loaded.metadata("step", np.arange(STEPS))
    assert np.unique(episode * 1000 + step).size == STEPS  # every (episode, step) once
    shard_of_episode = {}
    for entry, start in zip(loaded.shards, range(0, STEPS, SHARD_SIZE), strict=True):
        for e in np.unique(episode[start : start + SHARD_SIZE]):
            assert shard_of_episode.setdefault(int(e), entry["index"]) == entry["index"]

    fresh = tmp_path / "fresh"
    assert run_rollout(fresh, tmp_path / "run_fresh").returncode == 0
    assert view_hashes(fresh) == view_hashes(dataset)


def test_other_env_config_is_refused_naming_the_keys_unless_overwrite(tmp_path):
    dataset = tmp_path / "data"
    small = ("dataset.steps=40", "dataset.shard_size=20")
    assert run_rollout(dataset, tmp_path / "run_a", *small).returncode == 0
    refused = run_rollout(dataset, tmp_path / "run_b", *small, "env.image_size=24", "env.action_set=object")
    assert refused.returncode != 0
    message = refused.stdout + refused.stderr
    assert "env.image_size: 32 -> 24" in message and "env.action_set: 'camera' -> 'object'" in message
    assert read_manifest(dataset)["header"]["env"]["image_size"] == 32
    replaced = run_rollout(dataset, tmp_path / "run_c", *small, "env.image_size=24", "dataset.overwrite=true")
    assert replaced.returncode == 0, replaced.stderr
    manifest = read_manifest(dataset)
    assert manifest["header"]["env"]["image_size"] == 24 and manifest["counts"]["transitions"] == 40
    assert manifest["fields"]["view"]["shape"] == [24, 24, 3]
    assert manifest["shards"][0]["renderer"] == "tiny"


def dataset_snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """(inode, mtime_ns, size) of every path under ``root``: any write or replace shows."""
    return {str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size) for p in root.rglob("*")}


def test_a_rerun_never_shrinks_the_dataset_and_a_complete_one_is_not_written(tmp_path):
    dataset = tmp_path / "data"
    small = ("dataset.steps=40", "dataset.shard_size=20")
    assert run_rollout(dataset, tmp_path / "run_a", *small).returncode == 0
    before = dataset_snapshot(dataset)

    shrink = run_rollout(dataset, tmp_path / "run_b", "dataset.steps=30", "dataset.shard_size=20")
    assert shrink.returncode == 2 and "Traceback" not in shrink.stderr
    line = shrink.stderr.strip().splitlines()[-1]
    assert "dataset.steps=30" in line and "already holds 40 transitions" in line and "dataset.overwrite=true" in line
    assert dataset_snapshot(dataset) == before and not (tmp_path / "run_b").exists()

    other = run_rollout(dataset, tmp_path / "run_c", *small, "env.image_size=24")
    assert other.returncode == 2 and "env.image_size: 32 -> 24" in other.stderr.strip().splitlines()[-1]
    assert dataset_snapshot(dataset) == before and not (tmp_path / "run_c").exists()

    mode = dataset.stat().st_mode
    for path in [dataset, *dataset.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)  # read-only (root ignores it; the snapshot does not)
    try:
        again = run_rollout(dataset, tmp_path / "run_d", *small)
    finally:
        for path in [*dataset.rglob("*"), dataset]:
            path.chmod(path.stat().st_mode | 0o200)
        dataset.chmod(mode)
    assert again.returncode == 0, again.stderr
    assert dataset_snapshot(dataset) == before
    assert json.loads((tmp_path / "run_d" / "metrics.json").read_text())["shards_written"] == 0

    cut = run_rollout(dataset, tmp_path / "run_e", "dataset.steps=30", "dataset.shard_size=20", "dataset.overwrite=true")
    assert cut.returncode == 0, cut.stderr
    assert read_manifest(dataset)["counts"]["transitions"] == 30


# A rollout that cannot finish before the signal, however busy the machine: the signal goes
# once its first shard exists, and a million transitions take minutes after that.
UNFINISHABLE_STEPS = 1_000_000


@pytest.mark.slow
def test_ctrl_c_keeps_complete_shards_says_so_in_one_line_and_workers_stay_quiet(tmp_path, interrupt):
    dataset = tmp_path / "data"
    command = rollout_command(dataset, tmp_path / "run", "collector.vectorization=async",
                              f"dataset.steps={UNFINISHABLE_STEPS}")  # fmt: skip
    process, ready = interrupt(command, ready=(dataset / "shard_00000").is_dir, wait_s=300)
    stderr = process.stderr
    assert ready, f"the first shard never appeared: {stderr}"
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("ciper-rollout: interrupted; ") and "rerun the same command" in line
    kept = read_manifest(dataset)["counts"]["transitions"]
    assert kept < UNFINISHABLE_STEPS
    assert f"({kept}/{UNFINISHABLE_STEPS} transitions) kept in {dataset}" in line


def test_a_rerun_checks_every_shard_checksum_and_regenerates_a_corrupt_one(tmp_path):
    dataset = tmp_path / "data"
    small = ("dataset.steps=60", "dataset.shard_size=20")
    assert run_rollout(dataset, tmp_path / "run_a", *small).returncode == 0
    intact = view_hashes(dataset)
    view = dataset / "shard_00001" / "view.npy"
    data = bytearray(view.read_bytes())
    data[-3] ^= 0x01  # one bit: sizes still match
    view.write_bytes(bytes(data))

    again = run_rollout(dataset, tmp_path / "run_b", *small)
    assert again.returncode == 0, again.stderr
    assert "regenerating shard 1: shard shard_00001: view.npy sha256" in again.stderr
    metrics = json.loads((tmp_path / "run_b" / "metrics.json").read_text())
    assert metrics["shards_regenerated"] == 1 and metrics["shards_written"] == 1 and metrics["shards_kept"] == 2
    assert view_hashes(dataset) == intact  # shards are deterministic: the same bytes again
    ViewPairDataset(dataset, verify=True)
