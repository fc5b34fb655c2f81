"""``ciper-eval``: frozen-encoder evaluation of a saved checkpoint.

Examples::

    ciper-eval eval.checkpoint=runs/ciper-train/2026-11-02_10-00-00/checkpoint.pt
    ciper-eval eval.checkpoint=ckpt.pt eval.views_per_object=48 train.device=cuda

The world (``env.id``, ``env.action_set``, ``env.image_size``) is the one the checkpoint
was trained in, read from its architecture record; an override of those keys that
disagrees is an error rather than a silent evaluation on views the encoder never saw. Other
``env.*`` keys (catalogue, renderer) and the ``eval.*`` keys apply as given. The metrics
(:data:`learner.evaluation.METRIC_NAMES`) are printed as a table and written to
``metrics.json`` under ``"eval"`` (the layout ``ciper-train`` uses), with the embedding PNG,
into the run folder.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from agent.rollout_app import resolve_path
from conf.app import hydra_app, overridden_keys
from learner.checkpoint import check_eval_checkpoint, load_model
from learner.evaluation import METRIC_NAMES, evaluate_encoder
from learner.train import select_device

# env keys that decide what the encoder saw, and their names in the architecture record.
ARCHITECTURE_ENV_KEYS = {"id": "env_id", "action_set": "action_set", "image_size": "image_size"}


def checkpoint_env(env_cfg: DictConfig, architecture: dict[str, Any], overridden: set[str]) -> DictConfig:
    """``env_cfg`` with the world of the checkpoint; raises when an explicit override of
    ``env.id``, ``env.action_set`` or ``env.image_size`` disagrees with it."""
    env = OmegaConf.create(OmegaConf.to_container(env_cfg, resolve=True))
    for key, record in ARCHITECTURE_ENV_KEYS.items():
        saved = architecture[record]
        if f"env.{key}" in overridden and env[key] != saved:
            raise ValueError(
                f"env.{key}={env[key]!r}: the checkpoint was trained with env.{key}={saved!r}; "
                f"drop the override or evaluate a checkpoint of that world"
            )
        env[key] = saved
    return env


def run(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate ``eval.checkpoint``; print a table; write metrics.json and PNGs to the run folder."""
    if cfg.eval.checkpoint is None:
        raise ValueError("eval.checkpoint=None: pass the checkpoint to evaluate, eval.checkpoint=PATH")
    path = resolve_path(cfg.eval.checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"eval.checkpoint={cfg.eval.checkpoint!r}: no checkpoint file at {path}")
    run_dir = Path(cfg.run_dir)
    device = select_device(str(cfg.train.device))
    model, architecture = load_model(path, map_location=device)
    env_cfg = checkpoint_env(cfg.env, architecture, overridden_keys())
    started = time.perf_counter()
    metrics = evaluate_encoder(model.to(device), env_cfg, cfg.eval, device, run_dir)
    eval_s = time.perf_counter() - started
    record = {
        "checkpoint": str(path),
        "architecture": architecture,
        "env": OmegaConf.to_container(env_cfg),
        "device": str(device),
        "eval_s": eval_s,
        "eval": metrics,
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    print(f"\n{architecture['method']} ({architecture['encoder']}) on {env_cfg.id} [{env_cfg.action_set}], "
          f"{cfg.eval.views_per_object} views per object, {eval_s:.1f} s on {device}")  # fmt: skip
    width = max(len(name) for name in METRIC_NAMES)
    for name in METRIC_NAMES:
        print(f"  {name:<{width}}  {metrics[name]:7.3f}")
    print(f"run folder: {run_dir}")
    return record


main = hydra_app(run, check=check_eval_checkpoint)

if __name__ == "__main__":
    main()
