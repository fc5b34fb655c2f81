"""What a user meets in the first hour, through the console scripts as subprocesses.

A bad command line is refused before anything heavy runs or anything is written: one line
on stderr naming the key, the value and what is expected, exit code 2, no traceback, no run
folder. ``--help`` lists the keys with the schema's comments, run folders are named after the
scripts, the saved config is resolved, a multirun ends with a summary table, and an env
used after ``close()`` says so.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest
import yaml

import envs

REPO = Path(__file__).resolve().parents[1]
MODULES = {
    "ciper-rollout": "agent.rollout_app", "ciper-train": "learner.train_app", "ciper-eval": "learner.eval_app",
    "ciper-view": "agent.view_app",
}  # fmt: skip
# A live view small enough to render in a second.
QUICK_VIEW = ("env.image_size=16", "view.rows=1", "view.steps=2", "view.video_steps=2", "view.upscale=1")


def run_script(script: str, *args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    environment.update({"PYTHONPATH": str(REPO), **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", MODULES[script], *args], cwd=cwd, env=environment,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


BAD_INPUT = [
    ("ciper-train", ["+train.step=10"], ["+train.step=10", "not a config key", "train.steps"]),
    ("ciper-train", ["train.steps=0"], ["train.steps=0", "expected an int >= 1"]),
    ("ciper-train", ["train.batch_size=1"], ["train.batch_size=1", "expected an int >= 2"]),
    ("ciper-train", ["train.dataset=data/rollout"], ["train.dataset=data/rollout", "train.mode=offline"]),
    ("ciper-train", ["train.mode=offline"], ["train.mode=offline", "train.dataset=PATH"]),
    ("ciper-train", ["collector.lead_views=100"], ["collector.lead_views=100", "expected >= buffer.warmup_views=512"]),
    ("ciper-train", ["env.image_size=0"], ["env.image_size=0", "expected an int in [16, 1024]"]),
    ("ciper-rollout", ["env.image_size=7", "dataset.path=data/x"], ["env.image_size=7", "expected an int in"]),
    ("ciper-rollout", ["env.split=tset", "dataset.path=data/x"], ["env.split='tset'", "expected one of", "train"]),
    ("ciper-rollout", ["dataset.steps=-1", "dataset.path=data/x"], ["dataset.steps=-1", "expected an int >= 1"]),
    ("ciper-eval", [], ["eval.checkpoint=null", "eval.checkpoint=PATH"]),
    ("ciper-eval", ["eval.checkpoint=notes.txt"], ["eval.checkpoint=notes.txt", "not a checkpoint"]),
    ("ciper-view", ["view.video_format=avi"], ["view.video_format='avi'", "expected one of gif, mp4"]),
    ("ciper-view", ["run_dir=out"], ["run_dir=out", "hydra.run.dir=PATH"]),
    ("ciper-view", ["view.source=dataset", "dataset.path=missing"], ["dataset.path=missing", "no dataset"]),
]


@pytest.mark.parametrize(("script", "args", "expected"), BAD_INPUT, ids=[" ".join([s, *a]) for s, a, _ in BAD_INPUT])
def test_bad_input_is_one_line_naming_the_key_exit_2_and_writes_nothing(tmp_path, script, args, expected):
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    done = run_script(script, *args, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith(f"{script}: error: ")
    for text in expected:
        assert text in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # no run folder, no dataset


def test_full_error_still_shows_the_traceback(tmp_path):
    done = run_script("ciper-train", "train.steps=0", cwd=tmp_path, env={"HYDRA_FULL_ERROR": "1"})
    assert done.returncode != 0 and "Traceback" in done.stderr and "train.steps=0" in done.stderr


def test_help_lists_keys_with_the_schema_comments_under_the_script_name(tmp_path):
    done = run_script("ciper-train", "--help", cwd=tmp_path)
    assert done.returncode == 0
    assert "ciper-train [key=value ...]" in done.stdout and "train_app is powered by Hydra" not in done.stdout
    assert "train.steps=300" in done.stdout and "optimisation steps" in done.stdout
    assert "train.allow_changes=false" in done.stdout
    resolved = run_script("ciper-train", "--cfg", "job", "--resolve", cwd=tmp_path)
    assert resolved.returncode == 0, resolved.stderr
    assert "run_dir: runs/ciper-train/" in resolved.stdout


@pytest.mark.parametrize("env_id", [envs.OBJECT_VIEW_ID, envs.IMAGE_VIEW_ID])
def test_env_action_set_defaults_to_the_envs_own(make_config, env_id):
    """One default per key: without env.action_set a run gets the action set the env takes."""
    from conf.schema import EnvConfig

    env = gym.make(env_id, image_size=16)
    own = env.unwrapped.action_set
    env.close()
    assert make_config(f"env.id={env_id}").env.action_set == own
    assert EnvConfig(id=env_id).action_set == own


def test_typed_config_is_the_schema_dataclass_and_stores_as_the_composed_one(make_config):
    from omegaconf import OmegaConf

    from conf.schema import CiperConfig
    from conf.typed import plain_config, typed_config

    cfg = make_config("method=simclr", "env.image_size=32")
    typed = typed_config(cfg)
    assert isinstance(typed, CiperConfig) and typed_config(typed) is typed
    assert typed.env.image_size == 32 and typed.method.time_offset == 0 and isinstance(typed.method.jitter, list)
    # checkpoints and dataset headers store plain_config: the same as before the conversion
    assert plain_config(typed) == OmegaConf.to_container(cfg, resolve=True) == plain_config(cfg)


def test_run_folder_is_named_after_the_script_and_its_config_is_resolved(tmp_path):
    done = run_script("ciper-view", *QUICK_VIEW, "view.video_format=mp4", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (run_dir,) = (tmp_path / "runs" / "ciper-view").iterdir()
    saved = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert Path(saved["run_dir"]).resolve() == run_dir.resolve()
    assert "${" not in (run_dir / ".hydra" / "config.yaml").read_text()
    assert (run_dir / "rollout.mp4").stat().st_size > 0


def test_multirun_writes_a_summary_table_over_the_sweep(tmp_path):
    done = run_script("ciper-view", "-m", *QUICK_VIEW, "view.steps=2,3", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (sweep,) = (tmp_path / "runs" / "ciper-view" / "multirun").iterdir()
    table = (sweep / "summary.md").read_text().splitlines()
    assert table[0].startswith("| job | overrides |")
    assert len(table) == 4 and "view.steps=2" in table[2] and "view.steps=3" in table[3]
    assert "summary.md" in done.stdout


@pytest.mark.parametrize("env_id", [envs.OBJECT_VIEW_ID, "ciper/ImageView-v0"])
def test_step_or_reset_after_close_says_the_env_is_closed(env_id):
    env = gym.make(env_id, image_size=16)
    env.reset(seed=0)
    env.close()
    with pytest.raises(RuntimeError, match=r"step\(\) after close\(\)"):
        env.step(env.action_space.sample())
    with pytest.raises(RuntimeError, match=r"reset\(\) after close\(\)"):
        env.reset()
