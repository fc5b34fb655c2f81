"""``ciper-train``: train CIPER or a baseline online (live collectors) or offline (a dataset).

Examples::

    ciper-train                                   # short default CIPER run, online, CPU OK
    ciper-train method=simclr train.steps=2000
    ciper-train train.mode=offline train.dataset=data/rollout   # env.* taken from the dataset
    ciper-train train.mode=offline train.dataset=data/3DIEBench env.image_size=64   # a 3DIEBench folder
    ciper-train hydra.run.dir=runs/exp1           # rerun the same line to resume exp1

Before anything is written the run folder is checked: a resume (the folder holds a
checkpoint) with other settings than the checkpoint's is refused naming the keys, unless
``train.allow_changes=true`` (the changes are then recorded in ``config_changes.json``); a
run that already finished is not trained or evaluated again, its ``metrics.json`` is kept.
Settings that could never run are refused too: an online batch the collectors could never
feed, a batch that cannot fit in memory. A learner augmentation that the env's actions
already apply is turned off unless given explicitly (``conf.settle``). A signal (Ctrl-C,
SIGTERM) checkpoints and ends with the line that resumes the run, also while it waits for data.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

import envs
from agent.atomic_files import write_json_atomic
from agent.iebench_dataset import open_split
from agent.shards import read_manifest
from conf.app import hydra_app, overridden_keys, rerun_command
from conf.app_common import key_differences, resolve_path
from conf.schema import CiperConfig
from conf.settle import settle_augmentations
from conf.typed import plain_config, typed_config
from conf.validate import ConfigError, check_env_arguments
from envs.iebench_layout import is_benchmark_folder
from learner.data.pair_sources import online_feed_problem
from learner.data.targets import run_targets
from learner.methods.registry import architecture_of
from learner.training.checkpoint import check_architecture, load_checkpoint
from learner.training.curiosity import policy_hooks
from learner.training.device import select_device
from learner.training.loop import train
from learner.training.memory import batch_memory_problem
from learner.training.run_summary import print_summary

log = logging.getLogger(__name__)

# AdamW learning rates outside this range are far from any that trains these models.
SANE_LR = (1e-7, 1.0)

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
    key that disagrees with the dataset is an error. A folder in the 3DIEBench layout
    (split lists, no manifest) makes the run one of the 3DIEBench world instead."""
    root = resolve_path(cfg.train.dataset)
    if is_benchmark_folder(root):
        adopt_benchmark_env(cfg, root)
        return
    try:
        manifest = read_manifest(root)
    except ValueError as error:
        raise ConfigError(f"train.dataset={cfg.train.dataset}: {error}") from error
    if manifest is None:
        raise ConfigError(f"train.dataset={cfg.train.dataset}: no dataset at {root} (no manifest.json, nor the "
                          "<split>_images.npy lists of a 3DIEBench folder); write one with ciper-rollout")  # fmt: skip
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


def adopt_benchmark_env(cfg: DictConfig, root: Path) -> None:
    """Offline on a 3DIEBench folder: ``env.id`` becomes the 3DIEBench world, ``env.catalog``
    the folder (unless given: the probes may read another one) and ``env.action_set`` that
    world's default unless given; ``env.image_size`` is the size the views are resized to.
    The folder's lists for ``env.split`` and the evaluation splits are checked, and every
    object folder of the training split scanned for missing views, before anything is written."""
    given = overridden_keys()
    if "env.id" in given and cfg.env.id != envs.IEBENCH_ID:
        raise ConfigError(f"env.id={cfg.env.id!r}: train.dataset={cfg.train.dataset} is a 3DIEBench folder; "
                          f"drop the override (its world is env.id={envs.IEBENCH_ID})")  # fmt: skip
    with open_dict(cfg):
        cfg.env.id = envs.IEBENCH_ID
        if "env.action_set" not in given:
            cfg.env.action_set = envs.world_module(envs.IEBENCH_ID).DEFAULT_ACTION_SET
        if "env.catalog" not in given:
            cfg.env.catalog = str(root)
    check_env_arguments(cfg.env, [("eval.train_split", cfg.eval.train_split), ("eval.test_split", cfg.eval.test_split)])
    open_split(str(root), cfg.env.split, cfg.env.image_size)


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
    """Refuse, before anything is written, settings that could never run and a resume that
    would change what is learned; settle the augmentations against the env's actions."""
    if cfg.train.mode == "offline":
        adopt_dataset_env(cfg)
    for note in settle_augmentations(cfg, overridden_keys()):
        log.info(note)
    check_feasible(cfg)
    run_dir = Path(cfg.run_dir)
    if not (cfg.train.resume and checkpoint_path(run_dir).exists()):
        return
    changes = config_changes(cfg, run_dir)
    if changes and not cfg.train.allow_changes:
        raise ConfigError(
            f"train.resume=true: {run_dir} holds a run with other settings (checkpoint -> now: {'; '.join(changes)}); "
            "rerun with its settings, use another hydra.run.dir, or train.allow_changes=true to go on with the new ones"
        )
    if changes:  # allowed: but no setting may change the shapes of the checkpoint's weights
        typed = typed_config(cfg)
        _, layout = run_targets(typed, envs.world_module(typed.env.id))
        saved = load_checkpoint(checkpoint_path(run_dir))["architecture"]
        check_architecture(checkpoint_path(run_dir), saved, architecture_of(typed, layout))


def check_feasible(cfg: DictConfig) -> None:
    """Refuse an online batch the collectors could never feed and a batch that cannot fit in
    memory; warn about a learning rate far outside the range that trains."""
    problem = online_feed_problem(cfg) if cfg.train.mode == "online" else None
    problem = problem or batch_memory_problem(cfg, select_device(cfg.train.device))
    if problem is not None:
        raise ConfigError(problem)
    low, high = SANE_LR
    if not low <= cfg.optim.lr <= high:
        log.warning("optim.lr=%g is far outside the learning rates AdamW trains these models with (about %g to %g; "
                    "default 5e-4): expect the loss to diverge or not to move", cfg.optim.lr, low, high)  # fmt: skip


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
    policy_factory, callbacks = policy_hooks(cfg, envs.world_module(cfg.env.id), run_dir)
    metrics = train(cfg, run_dir, policy_factory=policy_factory, callbacks=callbacks)
    print_summary(metrics)
    print(f"run folder: {run_dir}")
    if metrics["stopped_by"] and not metrics["completed"]:
        print(f"ciper-train: stopped by {metrics['stopped_by']} at step {metrics['steps']}/{cfg.train.steps}; "
              f"checkpoint kept in {metrics['checkpoint']}; resume with: {rerun_command('ciper-train', run_dir)}", file=sys.stderr)  # fmt: skip


main = hydra_app(run, check=check_run)

if __name__ == "__main__":
    main()
