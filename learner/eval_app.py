"""``ciper-eval``: frozen-encoder evaluation of a saved checkpoint, or of a reference.

Examples::

    ciper-eval eval.checkpoint=runs/ciper-train/2026-11-02_10-00-00/checkpoint.pt
    ciper-eval eval.checkpoint=ckpt.pt eval.views_per_object=48 train.device=cuda
    ciper-eval eval.reference=oracle env.image_size=32     # or noise | nuisance | pixels | random

A reference needs no checkpoint: its features (the true pose, noise, the scene's nuisance
values, raw pixels, an untrained encoder) go through the same probes as an encoder's, on the
views of ``env.*``, so every score has its ceiling and floor beside it.

The world (``env.id``, ``env.action_set``, ``env.image_size``), the architecture
(``model.*``) and the method are the ones the checkpoint was trained with, read from its
records before anything is written: an override of those keys that disagrees is refused
naming the key, the checkpoint's value and the given one, rather than a silent evaluation of
something else, and the run folder's ``config.yaml`` records what was evaluated. Other
``env.*`` keys (catalogue, renderer) and the ``eval.*`` keys apply as given. The metrics
(:data:`learner.evaluation.METRIC_NAMES`) are printed as a table and written to
``metrics.json`` under ``"eval"`` (the layout ``ciper-train`` uses), with the embedding PNG,
into the run folder.
"""

from __future__ import annotations

import logging
import time
import zipfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

import envs
from agent.atomic_files import write_json_atomic
from conf.app import hydra_app, overridden_keys
from conf.app_common import resolve_path
from conf.schema import CiperConfig, EnvConfig
from conf.settle import settle_augmentations
from conf.typed import plain_config, typed_config
from conf.validate import ConfigError
from learner.evaluation.evaluate import evaluate_encoder, evaluate_reference, render_probes
from learner.evaluation.references import REFERENCE_MEANING, REFERENCES
from learner.evaluation.scores import METRIC_NAMES
from learner.evaluation.shortcut import probe_pairs_shortcut
from learner.methods.registry import settings_from_record
from learner.training.checkpoint import load_checkpoint, load_model
from learner.training.device import select_device

log = logging.getLogger(__name__)

# env keys that decide what the encoder saw, and their names in the architecture record.
ARCHITECTURE_ENV_KEYS = {"id": "env_id", "action_set": "action_set", "image_size": "image_size"}
# model keys that decide the shapes of the weights (their names in the record are the same).
ARCHITECTURE_MODEL_KEYS = ("encoder", "stem", "width", "proj_hidden", "proj_dim", "pred_hidden")


def checkpoint_env(env_cfg: EnvConfig | DictConfig, architecture: dict[str, Any], overridden: set[str]) -> EnvConfig:
    """``env_cfg`` with the world of the checkpoint; raises when an explicit override of
    ``env.id``, ``env.action_set`` or ``env.image_size`` disagrees with it."""
    for key, record in ARCHITECTURE_ENV_KEYS.items():
        given, saved = getattr(env_cfg, key), architecture[record]
        if f"env.{key}" in overridden and given != saved:
            raise ValueError(
                f"env.{key}={given!r}: the checkpoint was trained with env.{key}={saved!r}; "
                f"drop the override or evaluate a checkpoint of that world"
            )
    world = {key: architecture[record] for key, record in ARCHITECTURE_ENV_KEYS.items()}
    return EnvConfig(**{**plain_config(env_cfg), **world})


def run(cfg: CiperConfig | DictConfig) -> dict[str, Any]:
    """Evaluate ``eval.checkpoint`` (or the reference ``eval.reference``); print a table;
    write metrics.json and PNGs to the run folder."""
    cfg = typed_config(cfg)
    run_dir = Path(cfg.run_dir)
    started = time.perf_counter()
    if cfg.eval.reference is not None:
        record = evaluate_reference_record(cfg, run_dir)
    else:
        record = evaluate_checkpoint_record(cfg, run_dir)
    record["eval_s"] = time.perf_counter() - started
    write_json_atomic(run_dir / "metrics.json", record)
    env = record["env"]
    print(f"\n{record['title']} on {env['id']} [{env['action_set']}], "
          f"{cfg.eval.views_per_object} views per object, {record['eval_s']:.1f} s")  # fmt: skip
    print_scores(record["eval"])
    print(f"run folder: {run_dir}")
    return record


def print_scores(scores: dict[str, float]) -> None:
    """The headline metrics, then the per-column pose R^2 indented under them."""
    width = max(len(name) for name in scores)
    for name in METRIC_NAMES:
        print(f"  {name:<{width}}  {scores[name]:7.3f}")
        for column in (k for k in scores if k.startswith(name + "/")):
            print(f"    {column:<{width - 2}}  {scores[column]:7.3f}")
    print("  (shortcut_colour_top1: colour histograms retrieve a pair's positive among 64; chance 0.016)")


def evaluate_checkpoint_record(cfg: CiperConfig, run_dir: Path) -> dict[str, Any]:
    """Scores of the checkpoint's frozen encoder; the shortcut on pairs drawn as its run did."""
    if cfg.eval.checkpoint is None:
        raise ValueError("eval.checkpoint=None: pass the checkpoint to evaluate, eval.checkpoint=PATH")
    path = resolve_path(cfg.eval.checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"eval.checkpoint={cfg.eval.checkpoint!r}: no checkpoint file at {path}")
    device = select_device(cfg.train.device)
    model, architecture = load_model(path, map_location=device)
    env_cfg = checkpoint_env(cfg.env, architecture, overridden_keys())
    world = envs.world_module(env_cfg.id)
    metrics = evaluate_encoder(model.to(device), world, env_cfg, cfg.eval, device, run_dir)
    # The run's own method config (pairs, augmentations) where the checkpoint holds it.
    saved = load_checkpoint(path).get("config") or {}
    run_cfg = OmegaConf.create({"env": plain_config(env_cfg), "eval": plain_config(cfg.eval),
                                "buffer": saved.get("buffer") or plain_config(cfg.buffer),
                                "method": saved.get("method") or plain_config(cfg.method)})  # fmt: skip
    metrics["shortcut_colour_top1"] = probe_pairs_shortcut(run_cfg, world, render_probes(env_cfg, cfg.eval)[0])
    title = f"{architecture['method']} ({architecture['encoder']})"
    return {"title": title, "checkpoint": str(path), "architecture": architecture,
            "env": plain_config(env_cfg), "device": str(device), "eval": metrics}  # fmt: skip


def evaluate_reference_record(cfg: CiperConfig, run_dir: Path) -> dict[str, Any]:
    """Scores of the reference ``eval.reference`` on ``env.*``'s probe views (no checkpoint)."""
    name = cfg.eval.reference
    if name not in REFERENCES:
        raise ValueError(f"eval.reference={name!r}: expected one of {list(REFERENCES)}")
    metrics = evaluate_reference(name, cfg, envs.world_module(cfg.env.id), run_dir)
    return {"title": f"reference {name} ({REFERENCE_MEANING[name]})", "reference": name,
            "env": plain_config(cfg.env), "eval": metrics}  # fmt: skip


def check_eval_checkpoint(cfg: DictConfig) -> None:
    """``eval.reference`` names a reference, or ``eval.checkpoint`` a checkpoint file whose
    world, architecture and method ``cfg`` then takes (checked before ``ciper-eval`` writes)."""
    explicit = overridden_keys()
    if cfg.eval.reference is not None:  # a reference needs no checkpoint
        if cfg.eval.reference not in REFERENCES:
            raise ConfigError(f"eval.reference={cfg.eval.reference!r}: expected one of {', '.join(REFERENCES)}")
        for note in settle_augmentations(cfg, explicit):
            log.info(note)
        return
    if cfg.eval.checkpoint is None:
        raise ConfigError("eval.checkpoint=null: expected the checkpoint to evaluate, eval.checkpoint=PATH")
    path = resolve_path(cfg.eval.checkpoint)
    if not path.is_file():
        raise ConfigError(f"eval.checkpoint={cfg.eval.checkpoint}: no checkpoint file at {path}")
    if not zipfile.is_zipfile(path):
        raise ConfigError(f"eval.checkpoint={cfg.eval.checkpoint}: not a checkpoint (expected the .pt file ciper-train writes)")
    try:
        payload = load_checkpoint(path)
    except ValueError as error:
        raise ConfigError(f"eval.checkpoint={cfg.eval.checkpoint}: {error}") from error
    adopt_checkpoint(cfg, payload["architecture"], payload["method_settings"], explicit)


def adopt_checkpoint(cfg: DictConfig, architecture: dict[str, Any], method: dict[str, Any], explicit: set[str]) -> None:
    """Set ``cfg``'s world (``env.id``, ``env.action_set``, ``env.image_size``), ``model.*``
    and ``method`` to the checkpoint's, so the run folder records what is evaluated; an
    explicit override (a key in ``explicit``) that disagrees is a `ConfigError`."""
    recorded = {f"env.{key}": architecture[name] for key, name in ARCHITECTURE_ENV_KEYS.items()}
    recorded |= {f"model.{key}": architecture[key] for key in ARCHITECTURE_MODEL_KEYS if key in architecture}
    recorded |= {f"method.{key}": value for key, value in method.items()}
    if "method" in explicit:
        recorded["method"] = method["name"]
    for key in sorted(explicit & set(recorded)):
        given = cfg.method.name if key == "method" else OmegaConf.select(cfg, key)
        if given != recorded[key]:
            raise ConfigError(f"{key}={given!r}: the checkpoint was trained with {key}={recorded[key]!r}; drop the "
                              "override (ciper-eval evaluates the checkpoint as it was trained)")  # fmt: skip
    with open_dict(cfg):
        cfg.method = OmegaConf.structured(settings_from_record(method))
        for key, value in recorded.items():
            if key.startswith(("env.", "model.")):
                OmegaConf.update(cfg, key, value, merge=False)


main = hydra_app(run, check=check_eval_checkpoint)

if __name__ == "__main__":
    main()
