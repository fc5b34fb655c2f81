"""What a user meets in the first hour, through the console scripts as subprocesses.

A bad command line is refused before anything heavy runs or anything is written: one line
on stderr naming the key, the value and what is expected, exit code 2, no traceback, no run
folder. ``--help`` lists the keys with the schema's comments, run folders are named after the
scripts, the saved config is resolved, a multirun ends with a summary table, and an env
used after ``close()`` says so.
"""

from __future__ import annotations

import os
import shutil
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
    "ciper-view": "agent.view_app", "ciper-report": "learner.report_app",
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
    # issue 22: what used to reach run time, Hydra's listings, and waits that could never end
    ("ciper-train", ["method=cipr"], ["method=cipr: no such method", "ciper, ciper_contrastive", "did you mean ciper?"]),
    ("ciper-train", ["-m", "method=ciper,simclr_ttt"], ["method=simclr_ttt: no such method", "simclr_tt"]),
    ("ciper-report", ["report=objectz"], ["report=objectz: no such report", "objects, paper, policies, quick, scaling, static"]),
    ("ciper-report", ["report.mode=ofline"], ["report.mode='ofline'", "expected one of offline, online"]),
    ("ciper-train", ["method.crop_scale=[1.5,0.2]"], ["method.crop_scale=[1.5, 0.2]", "0 < low <= high <= 1"]),
    ("ciper-train", ["method.jitter=[0.4,0.4]"], ["method.jitter=[0.4, 0.4]", "expected 4 strengths"]),
    ("ciper-eval", ["eval.reference=orcale"], ["eval.reference='orcale'", "expected one of oracle, noise"]),
    ("ciper-train", ["train.batch_size=8192", "env.image_size=32"],
     ["train.batch_size=8192", "2048 new views per step", "collector.lead_views=1024", "wait forever"]),
    ("ciper-train", ["buffer.capacity=100", "train.batch_size=128"], ["train.batch_size=128", "buffer.capacity=100"]),
    ("ciper-train", ["env.id=ciper/ImageView-v0", "method.augment_crop=true"],
     ["method.augment_crop=true and env.action_set='geometric'", "crop_x", "both apply"]),
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


# ---------------------------------------------------------------- issue 22: failures found at run time


def assert_one_line_error(done: subprocess.CompletedProcess, script: str, expected: list[str]) -> str:
    """Exit 2, no traceback, the last stderr line ``<script>: error: ...`` holding ``expected``."""
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith(f"{script}: error: "), line
    for text in expected:
        assert text in line, line
    return line


def folder_state(root: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every path under ``root``: any write shows."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def flip_a_byte(shard: Path) -> str:
    path = shard / "view.npy"
    data = bytearray(path.read_bytes())
    data[-7] ^= 0xFF
    path.write_bytes(bytes(data))
    return "view.npy"


def remove_a_file(shard: Path) -> str:
    (shard / "state.npy").unlink()
    return "state.npy"


def truncate_a_file(shard: Path) -> str:
    path = shard / "view.npy"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return "view.npy"


DAMAGE = {"bit flip": flip_a_byte, "missing file": remove_a_file, "truncated file": truncate_a_file}
OFFLINE_STEPS = ("train.mode=offline", "train.steps=2", "train.batch_size=8", "train.evaluate=false", "model.width=8")


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_dataset_is_one_line_naming_shard_and_file_and_leaves_no_run_folder(tiny_dataset, tmp_path, damage):
    dataset = tmp_path / "data"
    shutil.copytree(tiny_dataset, dataset)
    file = DAMAGE[damage](dataset / "shard_00001")
    done = run_script("ciper-train", *OFFLINE_STEPS, f"train.dataset={dataset}", cwd=tmp_path)
    assert_one_line_error(done, "ciper-train", ["shard_00001", file, "rerun the ciper-rollout command"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no runs/, no .hydra


def test_full_error_keeps_the_traceback_of_a_run_time_user_error(tiny_dataset, tmp_path):
    dataset = tmp_path / "data"
    shutil.copytree(tiny_dataset, dataset)
    flip_a_byte(dataset / "shard_00002")
    done = run_script("ciper-train", *OFFLINE_STEPS, f"train.dataset={dataset}", cwd=tmp_path, env={"HYDRA_FULL_ERROR": "1"})
    assert done.returncode != 0 and "Traceback" in done.stderr and "CorruptShardError" in done.stderr


def test_a_batch_that_cannot_fit_in_memory_is_refused_with_the_arithmetic(tiny_dataset, tmp_path):
    done = run_script("ciper-train", "train.mode=offline", f"train.dataset={tiny_dataset}", "train.batch_size=1000000000",
                      cwd=tmp_path)  # fmt: skip
    assert_one_line_error(done, "ciper-train", ["train.batch_size=1000000000", "GiB", "available", "lower train.batch_size"])
    assert not (tmp_path / "runs").exists()


@pytest.fixture(scope="module")
def width8_checkpoint(tiny_dataset, tmp_path_factory) -> Path:
    """A 2-step CIPER checkpoint of a width-8 small encoder on 32 px views."""
    from conf.compose import compose_config
    from learner.training.loop import train

    run_dir = tmp_path_factory.mktemp("width8")
    cfg = compose_config([*OFFLINE_STEPS, f"train.dataset={tiny_dataset}", "env.image_size=32", "model.proj_hidden=32",
                          "model.pred_hidden=32", "train.device=cpu"], run_dir=run_dir)  # fmt: skip
    train(cfg, run_dir)
    return run_dir / "checkpoints" / "last.pt"


@pytest.mark.parametrize(
    ("override", "expected"),
    [("env.image_size=64", "the checkpoint was trained with env.image_size=32"),
     ("model.width=16", "the checkpoint was trained with model.width=8"),
     ("model.proj_hidden=2048", "the checkpoint was trained with model.proj_hidden=32"),
     ("method=simclr", "the checkpoint was trained with method='ciper'")],
)  # fmt: skip
def test_eval_refuses_an_override_that_differs_from_the_checkpoint(width8_checkpoint, tmp_path, override, expected):
    done = run_script("ciper-eval", f"eval.checkpoint={width8_checkpoint}", override, cwd=tmp_path)
    assert_one_line_error(done, "ciper-eval", [override.replace("=simclr", "='simclr'"), expected, "drop the override"])
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.slow
def test_eval_records_the_architecture_it_evaluated(width8_checkpoint, tmp_path):
    done = run_script("ciper-eval", f"eval.checkpoint={width8_checkpoint}", "model.width=8", "eval.views_per_object=2",
                      "eval.objects_limit=12", "eval.probe_epochs=2", "eval.plots=false", "hydra.run.dir=out",
                      cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    saved = yaml.safe_load((tmp_path / "out" / ".hydra" / "config.yaml").read_text())
    assert saved["model"]["width"] == 8 and saved["model"]["proj_hidden"] == 32 and saved["model"]["pred_hidden"] == 32
    assert saved["env"]["image_size"] == 32 and saved["method"]["name"] == "ciper"


def test_report_rerun_with_other_settings_is_refused_before_anything_is_written(make_config, tmp_path):
    from omegaconf import OmegaConf

    from learner.report.jobs import run_overrides

    out = (tmp_path / "report").resolve()
    report = make_config("report=quick", run_dir=out)
    run_dir = out / "runs" / "ciper_seed0"
    run_dir.mkdir(parents=True)
    OmegaConf.save(make_config(*run_overrides(report, [], "ciper", 0, out / "dataset"), run_dir=run_dir), run_dir / "config.yaml")
    before = folder_state(out)
    done = run_script("ciper-report", "report.steps=100", f"hydra.run.dir={out}", cwd=tmp_path)
    assert_one_line_error(done, "ciper-report", [f"hydra.run.dir={out}", "another config", "train.steps: 300 -> 100"])
    assert folder_state(out) == before


def test_a_tiny_image_in_an_image_folder_is_refused_naming_the_file(tmp_path):
    import cv2
    import numpy as np

    for name, side in (("big", 32), ("tiny", 1)):
        (tmp_path / "images" / name).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "images" / name / f"{name}.png"), np.full((side, side, 3), 200, np.uint8))
    with pytest.raises(ValueError, match=r"tiny\.png: 1x1 pixels, smaller than 8x8"):
        gym.make(envs.IMAGE_VIEW_ID, catalog=str(tmp_path / "images"))
    done = run_script("ciper-rollout", "env.id=ciper/ImageView-v0", f"env.catalog={tmp_path / 'images'}",
                      "dataset.path=data", cwd=tmp_path)  # fmt: skip
    assert_one_line_error(done, "ciper-rollout", ["tiny.png", "1x1 pixels"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]


def test_a_never_closed_env_cleans_up_without_a_resource_warning(recwarn):
    import gc

    from envs.bullet_scene import BulletScene

    scene = BulletScene()
    files = scene._files
    assert files.is_dir()
    del scene
    gc.collect()
    assert not files.exists()
    assert not [w for w in recwarn if issubclass(w.category, ResourceWarning)], [str(w.message) for w in recwarn]
    closed = BulletScene()
    closed.close()
    assert not closed._files.exists()


def test_a_resume_that_would_change_the_weights_shapes_is_refused_even_with_allow_changes(
    width8_checkpoint, tiny_dataset, tmp_path
):
    run_dir = tmp_path / "run"
    shutil.copytree(width8_checkpoint.parents[1], run_dir)
    before = folder_state(run_dir)
    done = run_script("ciper-train", *OFFLINE_STEPS, f"train.dataset={tiny_dataset}", "train.steps=4", "model.width=16",
                      "train.allow_changes=true", f"hydra.run.dir={run_dir}", cwd=tmp_path)  # fmt: skip
    assert_one_line_error(done, "ciper-train", ["another architecture", "width: checkpoint 8 vs config 16", "another hydra.run.dir"])
    assert folder_state(run_dir) == before
