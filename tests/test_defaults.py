"""Defaults that work for every env id (issue 22): no default of one key conflicts with the
default of another. Every registered env id is composed with every registered method at the
defaults (only sizes made tiny) and trains two steps; the image world's actions already crop
and colour its views, so the learner's default augmentations of the same kind give way, say
so, and the config records it; asked for explicitly, the doubled augmentation is refused."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest

import envs
from agent.rollout_app import rollout
from conf.compose import compose_config
from conf.settle import DoubledAugmentation
from conf.validate import validate_config
from learner.methods.registry import METHODS
from learner.training.loop import train

REPO = Path(__file__).resolve().parents[1]
ENV_IDS = sorted(k for k in gym.registry if k.startswith("ciper/"))
SIZES = ("env.image_size=16", "env.episode_steps=8")
TINY_TRAINING = ("model.width=8", "model.proj_hidden=32", "model.proj_dim=16", "model.pred_hidden=32",
                 "train.batch_size=8", "train.steps=2", "train.evaluate=false", "train.device=cpu",
                 "train.mode=offline")  # fmt: skip


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    """A 64-transition dataset of every env id, each at its defaults."""
    made = {}
    for env_id in ENV_IDS:
        root = tmp_path_factory.mktemp("datasets") / env_id.replace("/", "_")
        rollout(compose_config([f"env.id={env_id}", *SIZES, f"dataset.path={root}", "dataset.steps=64",
                                "dataset.shard_size=64", "collector.vectorization=sync"],
                               run_dir=tmp_path_factory.mktemp("rollout")))  # fmt: skip
        made[env_id] = root
    return made


def test_every_env_id_is_covered():
    assert ENV_IDS == sorted([envs.OBJECT_VIEW_ID, envs.IMAGE_VIEW_ID])


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_every_env_id_trains_every_method_at_the_defaults(datasets, tmp_path, env_id, method):
    cfg = compose_config([f"env.id={env_id}", f"method={method}", *SIZES, *TINY_TRAINING,
                          f"train.dataset={datasets[env_id]}"], run_dir=tmp_path)  # fmt: skip
    validate_config(cfg)
    metrics = train(cfg, tmp_path)
    assert metrics["completed"] and metrics["steps"] == 2
    assert all(math.isfinite(v) for v in metrics["losses_last"].values())


def test_the_image_worlds_actions_turn_off_the_default_augmentations_they_double(caplog):
    with caplog.at_level("INFO", logger="conf.settle"):
        geometric = compose_config([f"env.id={envs.IMAGE_VIEW_ID}"])
        compose_config([f"env.id={envs.IMAGE_VIEW_ID}"])
    assert geometric.env.action_set == "geometric"
    assert not geometric.method.augment_crop and geometric.method.augment_color  # its actions crop, not colour
    notes = [r.getMessage() for r in caplog.records if "method.augment_crop=false" in r.getMessage()]
    assert len(notes) <= 1  # said once per process (none if an earlier test said it)
    full = compose_config([f"env.id={envs.IMAGE_VIEW_ID}", "env.action_set=full"])
    assert not (full.method.augment_crop or full.method.augment_color or full.method.augment_flip)
    objects = compose_config([])
    assert objects.method.augment_crop and objects.method.augment_color  # nothing doubles them there
    with pytest.raises(DoubledAugmentation, match="method.augment_crop=true and env.action_set='geometric'"):
        compose_config([f"env.id={envs.IMAGE_VIEW_ID}", "method.augment_crop=true"])


def run(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"} | {"PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=environment, capture_output=True,
                          text=True, timeout=300, check=False)  # fmt: skip


@pytest.mark.slow
def test_the_documented_image_paths_run_at_the_defaults(tmp_path):
    """``ciper-train env.id=ciper/ImageView-v0`` and rollout-then-offline, as the README shows them."""
    tiny = [*SIZES, *TINY_TRAINING[:-1]]
    online = run("learner.train_app", f"env.id={envs.IMAGE_VIEW_ID}", *tiny, "buffer.warmup_views=32",
                 "collector.num_envs=1", "collector.vectorization=sync", "hydra.run.dir=online", cwd=tmp_path)  # fmt: skip
    assert online.returncode == 0, online.stderr
    assert "method.augment_crop=false: env.action_set='geometric' already applies this change" in online.stderr
    saved = (tmp_path / "online" / ".hydra" / "config.yaml").read_text()
    assert "augment_crop: false" in saved  # the record says what ran

    rolled = run("agent.rollout_app", f"env.id={envs.IMAGE_VIEW_ID}", *SIZES, "dataset.path=data", "dataset.steps=64",
                 "collector.vectorization=sync", cwd=tmp_path)  # fmt: skip
    assert rolled.returncode == 0, rolled.stderr
    offline = run("learner.train_app", *tiny, "train.mode=offline", "train.dataset=data", "hydra.run.dir=offline",
                  cwd=tmp_path)  # fmt: skip
    assert offline.returncode == 0, offline.stderr
    assert json.loads((tmp_path / "offline" / "metrics.json").read_text())["completed"]
