"""``ciper-train`` reruns, as a user meets them (subprocesses on a tiny offline dataset).

A rerun of a finished run keeps its metrics; a resume with other settings is refused before
anything in the run folder changes, unless ``train.allow_changes=true``, which records the
changes; offline training takes ``env.*`` from the dataset; without a terminal, progress
goes to stderr and to the run's ``.log`` one line at a time; Ctrl-C (SIGINT to the whole
process group, collectors included) ends with the line that resumes the run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
# The tiny model of tests/test_train.py; no env.image_size: the dataset's (32) is taken.
TINY = ("model.width=8", "model.proj_hidden=64", "model.proj_dim=32", "model.pred_hidden=64",
        "train.batch_size=16", "train.evaluate=false", "train.log_every=2", "optim.warmup_steps=1",
        "train.device=cpu")  # fmt: skip


def train_command(run_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "learner.train_app", *TINY, f"hydra.run.dir={run_dir}", *overrides]


def run_train(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(train_command(run_dir, *overrides), cwd=REPO, capture_output=True, text=True, timeout=300, check=False)


def folder_snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.mark.slow
def test_offline_reruns_keep_finished_metrics_and_refuse_changed_settings_untouched(tiny_dataset, tmp_path):
    run_dir = tmp_path / "run"
    offline = ("train.mode=offline", f"train.dataset={tiny_dataset}")
    first = run_train(run_dir, *offline, "train.steps=4")
    assert first.returncode == 0, first.stderr
    assert yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())["env"]["image_size"] == 32
    assert "train ciper: step 4/4" in first.stderr  # stderr is a pipe here: no bar, progress lines
    assert "train ciper: step 2/4" in (run_dir / "ciper-train.log").read_text()

    before = folder_snapshot(run_dir)
    again = run_train(run_dir, *offline, "train.steps=4")
    assert again.returncode == 0, again.stderr
    assert "already finished 4 steps" in again.stdout and "metrics.json is kept" in again.stdout
    assert {k: v for k, v in folder_snapshot(run_dir).items() if not k.startswith(".hydra")} == {
        k: v for k, v in before.items() if not k.startswith(".hydra")
    }

    before = folder_snapshot(run_dir)
    changed = run_train(run_dir, *offline, "train.steps=6", "optim.lr=0.01")
    assert changed.returncode == 2 and "Traceback" not in changed.stderr
    line = changed.stderr.strip().splitlines()[-1]
    assert line.startswith("ciper-train: error: train.resume=true")
    assert "optim.lr: 0.0005 -> 0.01" in line and "train.steps: 4 -> 6" in line and "train.allow_changes=true" in line
    assert folder_snapshot(run_dir) == before  # not even .hydra/config.yaml

    conflict = run_train(tmp_path / "other", *offline, "env.image_size=64")
    assert conflict.returncode == 2
    assert "env.image_size=64: the dataset" in conflict.stderr and "env.image_size=32" in conflict.stderr
    assert not (tmp_path / "other").exists()

    allowed = run_train(run_dir, *offline, "train.steps=6", "optim.lr=0.01", "train.allow_changes=true")
    assert allowed.returncode == 0, allowed.stderr
    assert json.loads((run_dir / "metrics.json").read_text())["steps"] == 6
    recorded = json.loads((run_dir / "config_changes.json").read_text())
    assert "optim.lr: 0.0005 -> 0.01" in recorded[-1]["changes"]


@pytest.mark.slow
def test_ctrl_c_on_online_training_checkpoints_and_prints_the_resume_line(tmp_path, interrupt):
    run_dir = tmp_path / "run"
    command = train_command(run_dir, "env.image_size=32", "train.steps=100000", "train.checkpoint_every=2",
                            "buffer.warmup_views=64", "collector.num_envs=1")  # fmt: skip
    process, checkpointed = interrupt(command, ready=(run_dir / "checkpoints" / "last.pt").exists, wait_s=300, cwd=REPO)
    stderr = process.stderr
    assert checkpointed, "no checkpoint appeared"
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr and "restarting" not in stderr
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("ciper-train: stopped by SIGINT at step ") and f"hydra.run.dir={run_dir}" in line
    assert json.loads((run_dir / "metrics.json").read_text())["stopped_by"] == "SIGINT"


def test_evaluation_scores_go_to_tensorboard_beside_the_losses(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from learner.training.run_log import log_eval_scalars

    log_eval_scalars(tmp_path, {"category_top1": 0.25, "relative_pose_r2": -0.5, "note": "text"}, step=7)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {"eval/category_top1", "eval/relative_pose_r2"}
    (point,) = events.Scalars("eval/category_top1")
    assert point.step == 7 and point.value == 0.25
