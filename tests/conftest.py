"""Shared fixtures: composed configs and a small saved dataset."""

from __future__ import annotations

import os

import pytest

from conf.compose import compose_config

# Tests run on small machines: one intra-op thread per process keeps the background
# collectors and the learner from oversubscribing the cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")


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
