"""Checkpoints that are safe to share: written atomically, read with ``weights_only=True``.

A checkpoint holds the model, optimiser and schedule state, the step, every RNG state
needed for an exact resume, and an ``architecture`` record (method, encoder, heads, action
and image sizes). Loading never unpickles arbitrary objects, and loading into a model of
another architecture fails with the keys that differ.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

import envs
from agent.atomic_files import write_bytes_atomic
from conf.schema import CiperConfig
from learner.encoders import ENCODER_VERSION
from learner.model import CiperModel, build_model

FORMAT_VERSION = 1


def architecture_of(cfg: CiperConfig, action_dim: int) -> dict[str, Any]:
    """The config keys that decide the shapes of the weights (plus what they mean)."""
    return {
        "method": cfg.method.name,
        "encoder": cfg.model.encoder,
        "stem": cfg.model.stem,
        "width": cfg.model.width,
        "proj_hidden": cfg.model.proj_hidden,
        "proj_dim": cfg.model.proj_dim,
        "pred_hidden": cfg.model.pred_hidden,
        "encoder_version": ENCODER_VERSION,
        "action_dim": int(action_dim),
        "env_id": cfg.env.id,
        "action_set": cfg.env.action_set,
        "image_size": cfg.env.image_size,
    }


def model_from_architecture(arch: dict[str, Any]) -> CiperModel:
    """A freshly initialised model with the shapes recorded in ``arch``."""
    encoder_kw: dict[str, Any] = {"stem": arch["stem"]} if arch["encoder"] == "resnet18" else {"width": arch["width"]}
    return build_model(
        arch["method"],
        arch["encoder"],
        action_dim=arch["action_dim"],
        proj_hidden=arch["proj_hidden"],
        proj_dim=arch["proj_dim"],
        pred_hidden=arch["pred_hidden"],
        discrete_columns=_discrete_columns(arch),
        **encoder_kw,
    )


def _discrete_columns(arch: dict[str, Any]) -> list[bool]:
    """Two-valued target columns: the action's own; augmentation columns after them never are."""
    action = envs.world_module(arch["env_id"]).relative_action_discrete(arch["action_set"]).tolist()
    return action + [False] * (int(arch["action_dim"]) - len(action))


def rng_states() -> dict[str, Any]:
    """Torch's global generators; everything else in the loop draws from its own seeded
    generator whose state is saved beside these (pair source, augmentation)."""
    states: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(path: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (``agent.atomic_files``): a kill or a full
    disk during the write leaves the previous checkpoint untouched and no partial file."""
    return write_bytes_atomic(path, lambda handle: torch.save({"format_version": FORMAT_VERSION, **payload}, handle))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``: a pickled payload is refused unrun."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path}: no such file")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; a text file or log is not one
        raise ValueError(f"checkpoint {path}: not a checkpoint (expected the .pt file ciper-train writes)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise ValueError(
            f"checkpoint {path}: refused or unreadable ({type(error).__name__}: {str(error).splitlines()[0]}); "
            "only tensors and plain containers are loaded (weights_only=True)"
        ) from error
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"checkpoint {path}: not a ciper checkpoint of format version {FORMAT_VERSION}")
    return payload


def check_eval_checkpoint(cfg: DictConfig) -> None:
    """``eval.checkpoint`` names a checkpoint file (checked before ``ciper-eval`` writes)."""
    from conf.app_common import resolve_path
    from conf.validate import ConfigError

    if cfg.eval.reference is not None:  # a reference needs no checkpoint
        return
    if cfg.eval.checkpoint is None:
        raise ConfigError("eval.checkpoint=null: expected the checkpoint to evaluate, eval.checkpoint=PATH")
    path = resolve_path(cfg.eval.checkpoint)
    if not path.is_file():
        raise ConfigError(f"eval.checkpoint={cfg.eval.checkpoint}: no checkpoint file at {path}")
    if not zipfile.is_zipfile(path):
        raise ConfigError(f"eval.checkpoint={cfg.eval.checkpoint}: not a checkpoint (expected the .pt file ciper-train writes)")


def check_architecture(path: Path, saved: dict[str, Any], expected: dict[str, Any]) -> None:
    """Raise naming every key where a checkpoint's architecture differs from the config's."""
    differing = {k: (saved.get(k), expected.get(k)) for k in sorted(set(saved) | set(expected)) if saved.get(k) != expected.get(k)}
    if differing:
        details = ", ".join(f"{k}: checkpoint {a!r} vs config {b!r}" for k, (a, b) in differing.items())
        raise ValueError(f"checkpoint {path} was made with another architecture: {details}")


def load_model(path: Path, map_location: str | torch.device = "cpu") -> tuple[CiperModel, dict[str, Any]]:
    """The trained model of a checkpoint (in eval mode) and its ``architecture`` record."""
    payload = load_checkpoint(path, map_location)
    saved_version = payload["architecture"].get("encoder_version")
    if saved_version != ENCODER_VERSION:
        raise ValueError(
            f"checkpoint {path}: encoder_version={saved_version!r}, this code builds version "
            f"{ENCODER_VERSION} (the encoder's layers changed since it was saved); retrain it"
        )
    model = model_from_architecture(payload["architecture"])
    model.load_state_dict(payload["model"])
    model.eval()
    return model, payload["architecture"]

