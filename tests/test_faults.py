"""Faults a long run meets: SIGTERM/SIGINT during ``ciper-train``, a full disk under
``ciper-rollout``. Nothing done before the fault is lost, nothing partial is left behind,
and running the same thing again completes with the result an uninterrupted run gives.

``ciper-train`` runs as a subprocess, signalled once it has written its first checkpoint.
The full disk is met twice: injected (a write that fills the disk half way through a file,
at each kind of file a shard write touches) and real (a tmpfs of a few pages, when this
machine lets the test mount one). The other faults are tested elsewhere; see
docs/reliability.md.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import agent.atomic_files as atomic_files
import agent.shards as shards
from agent.dataset import ViewPairDataset
from agent.rollout_app import rollout
from agent.shards import (
    CHECKSUMS_NAME,
    FIELD_NAMES,
    MANIFEST_NAME,
    read_manifest,
    shard_index,
    verify_shard,
)
from conf.compose import compose_config
from learner.training.checkpoint import load_checkpoint
from learner.training.loop import train

REPO = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------- SIGTERM / SIGINT during ciper-train

# The tiny model of tests/test_train.py, on the CPU so that losses repeat to the last bit.
TINY = ("env.image_size=32", "model.width=8", "model.proj_hidden=64", "model.proj_dim=32",
        "model.pred_hidden=64", "train.batch_size=32", "train.evaluate=false", "train.mode=offline",
        "train.log_every=5", "optim.warmup_steps=2", "train.device=cpu")  # fmt: skip
TRAIN_STEPS = 36
TRAINING = (*TINY, f"train.steps={TRAIN_STEPS}", "train.checkpoint_every=3", "method.augment_crop=true")


@pytest.fixture(scope="module")
def uninterrupted_losses(tiny_dataset, tmp_path_factory) -> list[dict[str, float]]:
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    cfg = compose_config([*TRAINING, f"train.dataset={tiny_dataset}"], run_dir=run_dir)
    assert train(cfg, run_dir)["completed"]
    return json.loads((run_dir / "loss_history.json").read_text())


def train_command(dataset: Path, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "learner.train_app", *TRAINING, f"train.dataset={dataset}", f"hydra.run.dir={run_dir}"]


def wait_for(condition, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"ciper-train exited (code {process.returncode}) before it was signalled"
        assert time.monotonic() < deadline, f"no progress within {timeout} s"
        time.sleep(0.01)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signalled_ciper_train_checkpoints_and_the_same_command_resumes_the_same_losses(
    tiny_dataset, uninterrupted_losses, tmp_path, signum
):
    run_dir = tmp_path / "run"
    command = train_command(tiny_dataset, run_dir)
    checkpoint = run_dir / "checkpoints" / "last.pt"
    with open(tmp_path / "interrupted.log", "w") as log:
        process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(checkpoint.exists, process, timeout=180)  # renamed into place: complete
            process.send_signal(signum)
            signalled = time.monotonic()
            process.wait(timeout=60)
            exit_seconds = time.monotonic() - signalled
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    output = (tmp_path / "interrupted.log").read_text()
    assert process.returncode == 0, output  # a signal finishes the step, checkpoints and returns
    assert exit_seconds < 30, f"took {exit_seconds:.1f} s to stop after {signum.name}"

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["stopped_by"] == signum.name and not metrics["completed"]
    payload = load_checkpoint(checkpoint)
    assert 3 <= payload["step"] == metrics["steps"] < TRAIN_STEPS
    assert [h["step"] for h in payload["history"]] == list(range(1, payload["step"] + 1))

    resumed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"at step {payload['step']}" in resumed.stdout
    assert json.loads((run_dir / "metrics.json").read_text())["completed"]
    history = json.loads((run_dir / "loss_history.json").read_text())
    assert [h["step"] for h in history] == list(range(1, TRAIN_STEPS + 1))
    for name in uninterrupted_losses[0]:
        np.testing.assert_allclose(
            [h[name] for h in history], [h[name] for h in uninterrupted_losses], rtol=1e-6, atol=1e-7, err_msg=name
        )


# ---------------------------------------------------------------- disk full under ciper-rollout

ROLLOUT = ("env.image_size=16", "env.episode_steps=8", "collector.vectorization=sync", "collector.num_envs=2",
           "dataset.steps=100", "dataset.shard_size=20")  # fmt: skip


def rollout_config(dataset: Path, run_dir: Path):
    return compose_config([*ROLLOUT, f"dataset.path={dataset}"], run_dir=run_dir)


def view_hashes(root: Path) -> list[str]:
    return [s["files"]["view.npy"]["sha256"] for s in read_manifest(root)["shards"]]


@pytest.fixture(scope="module")
def reference_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reference") / "data"
    rollout(rollout_config(root, root.parent / "run"))
    return root


class _FillingFile:
    """A file on a disk that fills up: the first write stores half its bytes, then fails."""

    def __init__(self, handle) -> None:
        self._handle = handle

    def write(self, data) -> int:
        self._handle.write(data[: len(data) // 2])
        self._handle.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self._handle.close()


def fill_disk_at(monkeypatch, matches) -> dict[str, Path]:
    """Make the first file that ``agent.shards`` opens for writing at a path ``matches``
    accepts fill the disk; returns a record of the path it failed."""
    failed: dict[str, Path] = {}

    def filling_open(file, mode="r", *args, **kwargs):
        handle = open(file, mode, *args, **kwargs)
        if "w" in mode and not failed and matches(Path(file)):
            failed["path"] = Path(file)
            return _FillingFile(handle)
        return handle

    monkeypatch.setattr(shards, "open", filling_open, raising=False)
    monkeypatch.setattr(atomic_files, "open", filling_open, raising=False)  # manifest, checksums
    return failed


def assert_only_complete_shards(root: Path) -> int:
    """Every shard folder holds all its files with their recorded sizes and hashes, no
    partial file is left, and the listed shards load; returns the transitions listed."""
    for path in root.iterdir():
        assert not path.name.endswith(".tmp"), f"partial write left behind: {path.name}"
        if shard_index(path.name) is not None:
            entry = json.loads((path / CHECKSUMS_NAME).read_text())["entry"]
            assert set(entry["files"]) == {f"{name}.npy" for name in FIELD_NAMES}
            verify_shard(path, entry["files"], checksums=True)
    listed = read_manifest(root)["counts"]["transitions"]
    if listed:
        assert ViewPairDataset(root, verify=True).num_transitions == listed
    return listed


def is_temporary_of(path: Path, name: str) -> bool:
    """Whether ``path`` is the temporary file an atomic write of ``name`` goes through."""
    return path.name.startswith(f".{name}.") and path.name.endswith(".tmp")


FAIL_POINTS = {
    "view.npy": lambda p: p.parent.name == "shard_00002.tmp" and p.name == "view.npy",
    "checksums.json": lambda p: p.parent.name == "shard_00002.tmp" and is_temporary_of(p, CHECKSUMS_NAME),
    "manifest.json": lambda p: is_temporary_of(p, MANIFEST_NAME) and (p.parent / "shard_00002").is_dir(),
}


@pytest.mark.parametrize("fail_point", sorted(FAIL_POINTS))
def test_disk_full_during_a_shard_write_keeps_earlier_shards_and_the_rerun_completes(
    reference_dataset, tmp_path, monkeypatch, fail_point
):
    dataset = tmp_path / "data"
    cfg = rollout_config(dataset, tmp_path / "run")
    failed = fill_disk_at(monkeypatch, FAIL_POINTS[fail_point])
    with pytest.raises(OSError) as full:
        rollout(cfg)
    assert full.value.errno == errno.ENOSPC and fail_point in failed["path"].name
    # The error names the file it could not write, not just "No space left on device".
    assert str(failed["path"].parent) in str(full.value)
    assert assert_only_complete_shards(dataset) == 40  # shards 0 and 1; a complete, unlisted 2 is fine

    monkeypatch.undo()  # space freed
    metrics = rollout(cfg)
    assert metrics["transitions"] == 100 and metrics["shards_kept"] == 2 + (fail_point == "manifest.json")
    assert assert_only_complete_shards(dataset) == 100
    assert view_hashes(dataset) == view_hashes(reference_dataset)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A mounted tmpfs of 160 KiB (room for about three shards); skipped where mounting is
    not allowed. Yields a function that grows it (frees space)."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(mount_point)],
                             capture_output=True, text=True, check=False)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")

    def grow() -> None:
        subprocess.run(["mount", "-o", "remount,size=8m", str(mount_point)], check=True)

    try:
        yield mount_point, grow
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


def test_rollout_onto_a_really_full_disk_fails_clearly_and_completes_once_space_is_freed(
    reference_dataset, small_tmpfs, tmp_path
):
    mount_point, grow = small_tmpfs
    dataset = mount_point / "data"
    cfg = rollout_config(dataset, tmp_path / "run")
    with pytest.raises(OSError) as full:
        rollout(cfg)
    assert full.value.errno == errno.ENOSPC
    assert str(dataset) in str(full.value)
    kept = assert_only_complete_shards(dataset)
    assert 0 < kept < 100

    grow()
    metrics = rollout(cfg)
    assert metrics["transitions"] == 100 and metrics["shards_kept"] >= kept // 20
    assert assert_only_complete_shards(dataset) == 100
    assert view_hashes(dataset) == view_hashes(reference_dataset)
