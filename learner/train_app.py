"""``ciper-train``: train CIPER or a baseline online (live collectors) or offline (a dataset).

Examples::

    ciper-train                                   # short default CIPER run, online, CPU OK
    ciper-train method=simclr train.steps=2000
    ciper-train train.mode=offline train.dataset=data/rollout   # env.* taken from the dataset
    ciper-train hydra.run.dir=runs/exp1           # rerun the same line to resume exp1

Before anything is written the run folder is checked: a resume (the folder holds a
checkpoint) with other settings than the checkpoint's is refused naming the keys, unless
``train.allow_changes=true`` (the changes are then recorded in ``config_changes.json``); a
run that already finished is not trained or evaluated again, its ``metrics.json`` is kept.
A signal (Ctrl-C, SIGTERM) checkpoints and ends with the line that resumes the run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

import envs
from agent.atomic_files import write_json_atomic
from agent.shards import read_manifest
from conf.app import hydra_app, overridden_keys, rerun_command
from conf.app_common import key_differences, resolve_path
from conf.schema import CiperConfig
from conf.typed import plain_config, typed_config
from conf.validate import ConfigError
from learner.training.checkpoint import load_checkpoint
from learner.training.curiosity import curious_training
from learner.training.loop import train
from learner.training.run_summary import print_summary

# Keys a resumed run may change freely: where and how it runs, not what it learns.
RESUME_FREE_KEYS = (
    "run_dir", "train.resume", "train.stop_after", "train.evaluate", "train.device", "train.loader_workers",
    "train.log_every", "train.checkpoint_every", "train.allow_changes", "train.compile", "collector.ray_address",
    "eval", "report", "view", "dataset",
)  # fmt: skip


def checkpoint_path(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "last.pt"


def adopt_dataset_env(cfg: DictConfig) -> None:
    """Offline: take ``env.*`` from the dataset's manifest; an explicit override of an env
    key that disagrees with the dataset is an error."""
    root = resolve_path(cfg.train.dataset)
    try:
        manifest = read_manifest(root)
    except ValueError as error:
        raise ConfigError(f"train.dataset={cfg.train.dataset}: {error}") from error
    if manifest is None:
        raise ConfigError(f"train.dataset={cfg.train.dataset}: no dataset at {root} (no manifest.json); write one with ciper-rollout")
    given = overridden_keys()
    with open_dict(cfg):
        for key, value in manifest["header"]["env"].items():
            if key not in cfg.env or cfg.env[key] == value:
                continue
            if f"env.{key}" in given:
                raise ConfigError(
                    f"env.{key}={cfg.env[key]!r}: the dataset {root} was made with env.{key}={value!r}; "
                    "drop the override (offline training takes env.* from the dataset)"
                )
            cfg.env[key] = value


def config_changes(cfg: CiperConfig | DictConfig, run_dir: Path) -> list[str]:
    """``key: checkpoint -> now`` for every setting that differs from the checkpoint's."""
    try:
        saved = load_checkpoint(checkpoint_path(run_dir)).get("config")
    except ValueError as error:
        raise ConfigError(f"train.resume=true: {error}; use another hydra.run.dir or train.resume=false") from error
    if saved is None:
        return []
    current = plain_config(cfg)
    return [
        change for change in key_differences(saved, current)
        if not change.split(":", 1)[0].startswith(tuple(f"{k}." for k in RESUME_FREE_KEYS) + RESUME_FREE_KEYS)
    ]  # fmt: skip


def check_run(cfg: DictConfig) -> None:
    """Refuse, before anything is written, a resume that would change what is learned."""
    if cfg.train.mode == "offline":
        adopt_dataset_env(cfg)
    run_dir = Path(cfg.run_dir)
    if not (cfg.train.resume and checkpoint_path(run_dir).exists()):
        return
    changes = config_changes(cfg, run_dir)
    if changes and not cfg.train.allow_changes:
        raise ConfigError(
            f"train.resume=true: {run_dir} holds a run with other settings (checkpoint -> now: {'; '.join(changes)}); "
            "rerun with its settings, use another hydra.run.dir, or train.allow_changes=true to go on with the new ones"
        )


def record_changes(cfg: CiperConfig, run_dir: Path) -> None:
    """Append this resume's setting changes to ``config_changes.json`` (allow_changes)."""
    if not (cfg.train.resume and cfg.train.allow_changes and checkpoint_path(run_dir).exists()):
        return
    changes = config_changes(cfg, run_dir)
    if changes:
        path = run_dir / "config_changes.json"
        history = json.loads(path.read_text()) if path.is_file() else []
        write_json_atomic(path, [*history, {"changes": changes}])
        print(f"resuming with changed settings (train.allow_changes=true): {'; '.join(changes)}", file=sys.stderr)


def finished_metrics(cfg: CiperConfig, run_dir: Path) -> dict[str, Any] | None:
    """The kept metrics of a run in ``run_dir`` that already trained ``train.steps`` steps."""
    path = run_dir / "metrics.json"
    if not (cfg.train.resume and path.is_file() and checkpoint_path(run_dir).exists()):
        return None
    metrics = json.loads(path.read_text())
    return metrics if metrics.get("completed") and metrics.get("steps", 0) >= cfg.train.steps else None


def run(cfg: CiperConfig | DictConfig) -> None:
    """Train as configured; print what was learned; files go to the run folder."""
    cfg = typed_config(cfg)
    run_dir = Path(cfg.run_dir)
    kept = finished_metrics(cfg, run_dir)
    if kept is not None:
        print_summary(kept)
        print(f"{run_dir} already finished {kept['steps']} steps; nothing trained, its metrics.json is kept "
              f"(ciper-eval eval.checkpoint={checkpoint_path(run_dir)} evaluates it again)")  # fmt: skip
        return
    record_changes(cfg, run_dir)
    if cfg.policy.name == "curious":
        policy_factory, curiosity = curious_training(cfg, envs.world_module(cfg.env.id), run_dir)
        metrics = train(cfg, run_dir, policy_factory=policy_factory, callbacks=[curiosity])
    else:
        metrics = train(cfg, run_dir)
    print_summary(metrics)
    print(f"run folder: {run_dir}")
    if metrics["stopped_by"] and not metrics["completed"]:
        print(f"ciper-train: stopped by {metrics['stopped_by']} at step {metrics['steps']}/{cfg.train.steps}; "
              f"checkpoint kept in {metrics['checkpoint']}; resume with: {rerun_command('ciper-train', run_dir)}", file=sys.stderr)  # fmt: skip


main = hydra_app(run, check=check_run)

if __name__ == "__main__":
    main()
