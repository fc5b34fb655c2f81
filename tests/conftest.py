"""Shared fixtures: composed configs, a small saved dataset, and Ctrl-C on a console script."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

# Tests run on small machines: one intra-op thread per process keeps the background
# collectors and the learner from oversubscribing the cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import learner.methods.registry  # noqa: E402, F401  (registers the method=<name> options; after the thread count)
from conf.compose import compose_config  # noqa: E402


@pytest.fixture
def make_config(tmp_path):
    """``make_config(*overrides)`` -> a struct-mode config whose run folder is in tmp_path."""

    def make(*overrides: str, run_dir=None):
        return compose_config(overrides, run_dir=run_dir or tmp_path / "run")

    return make


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A 32x32 camera dataset of 768 transitions in 3 shards, written by the rollout code."""
    from agent.rollout_app import rollout

    root = tmp_path_factory.mktemp("datasets") / "tiny"
    cfg = compose_config(
        ["env.image_size=32", "env.episode_steps=16", f"dataset.path={root}", "dataset.steps=768",
         "dataset.shard_size=256", "collector.vectorization=sync"],  # fmt: skip
        run_dir=tmp_path_factory.mktemp("rollout_run"),
    )
    rollout(cfg)
    return root


def interrupt_when_ready(
    command: Sequence[str], ready: Callable[[], bool], wait_s: float, cwd: Path | None = None
) -> tuple[subprocess.CompletedProcess, bool]:
    """Start ``command`` in its own process group, wait until ``ready()`` (at most ``wait_s``
    seconds, or until it exits), then send SIGINT to the whole group, as Ctrl-C in a terminal
    does. Returns the finished process and whether ``ready()`` came true first."""
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + wait_s
        while not (was_ready := ready()) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        os.killpg(process.pid, signal.SIGINT)
        stdout, stderr = process.communicate(timeout=180)  # a bound for a hang, not a speed claim
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return subprocess.CompletedProcess(list(command), process.returncode, stdout, stderr), was_ready


@pytest.fixture
def interrupt():
    """``interrupt(command, ready, wait_s, cwd=None)``: see `interrupt_when_ready`."""
    return interrupt_when_ready
