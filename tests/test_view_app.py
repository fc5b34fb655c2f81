"""``ciper-view`` writes a grid PNG of the right size and a video, from a live env or a dataset."""

from __future__ import annotations

import subprocess
import sys

import cv2

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_view(run_dir, *overrides: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "agent.view_app", "env.image_size=32", f"hydra.run.dir={run_dir}", *overrides]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_live_view_writes_a_grid_png_and_a_gif(tmp_path):
    done = run_view(tmp_path, "view.rows=3", "view.steps=5", "view.video_steps=12", "view.upscale=1")
    assert done.returncode == 0, done.stderr
    grid_path, video_path = tmp_path / "views.png", tmp_path / "rollout.gif"
    assert str(grid_path) in done.stdout and str(video_path) in done.stdout
    assert grid_path.read_bytes()[:8] == PNG_MAGIC
    grid = cv2.imread(str(grid_path))
    # 3 rows and 5 columns of 32-pixel views, plus labels and 2-pixel gaps.
    assert grid.shape[0] >= 3 * 32 and grid.shape[1] >= 5 * 32 and grid.std() > 10
    assert video_path.read_bytes()[:6] in (b"GIF87a", b"GIF89a")


def test_dataset_view_writes_an_mp4(tmp_path):
    dataset = tmp_path / "data"
    rollout = [sys.executable, "-m", "agent.rollout_app", "env.image_size=32", "collector.vectorization=sync",
               "dataset.steps=60", "dataset.shard_size=30", f"dataset.path={dataset}", f"hydra.run.dir={tmp_path / 'r'}"]
    assert subprocess.run(rollout, capture_output=True, timeout=120, check=False).returncode == 0
    done = run_view(tmp_path / "v", "view.source=dataset", f"dataset.path={dataset}", "view.video_format=mp4")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "v" / "views.png").stat().st_size > 0
    capture = cv2.VideoCapture(str(tmp_path / "v" / "rollout.mp4"))
    assert capture.isOpened() and capture.read()[0]
    capture.release()
