"""Checkpoints that are safe to share: written atomically, read with ``weights_only=True``.

A checkpoint holds the model, optimiser and schedule state, the step, every RNG state
needed for an exact resume, an ``architecture`` record (method, encoder, heads, target
columns, the world and image size) and the method's settings, from which
``learner.methods.registry`` rebuilds any method. Loading never unpickles arbitrary objects,
and loading into a model of another architecture fails with the keys that differ.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import torch

from agent.atomic_files import write_bytes_atomic
from conf.errors import UserError
from learner.methods.registry import build_model, settings_from_record
from learner.nets.encoders import ENCODER_VERSION
from learner.nets.pair_model import PairModel

#: 2: the model is an encoder plus a method module (``learner.methods``) and the method's
#: settings are saved beside the architecture.
FORMAT_VERSION = 2


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
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise ValueError(f"checkpoint {path}: not a ciper checkpoint (no format_version)")
    if payload["format_version"] != FORMAT_VERSION:
        raise ValueError(f"checkpoint {path}: format version {payload['format_version']}, this code reads version "
                         f"{FORMAT_VERSION} (the model's layout changed since it was saved); retrain it")  # fmt: skip
    return payload


class CheckpointMismatch(UserError, ValueError):
    """A checkpoint that cannot continue or serve this run (another architecture, another
    number of ranks): the user picks another run folder or the checkpoint's settings."""


def check_architecture(path: Path, saved: dict[str, Any], expected: dict[str, Any]) -> None:
    """Raise naming every key where a checkpoint's architecture differs from the config's."""
    differing = {k: (saved.get(k), expected.get(k)) for k in sorted(set(saved) | set(expected)) if saved.get(k) != expected.get(k)}
    if differing:
        details = ", ".join(f"{k}: checkpoint {a!r} vs config {b!r}" for k, (a, b) in differing.items())
        raise CheckpointMismatch(f"checkpoint {path} was made with another architecture: {details}; resume it with "
                                 "its settings, or start another run (another hydra.run.dir)")  # fmt: skip


def load_model(path: Path, map_location: str | torch.device = "cpu") -> tuple[PairModel, dict[str, Any]]:
    """The trained model of a checkpoint (in eval mode) and its ``architecture`` record."""
    payload = load_checkpoint(path, map_location)
    saved_version = payload["architecture"].get("encoder_version")
    if saved_version != ENCODER_VERSION:
        raise ValueError(
            f"checkpoint {path}: encoder_version={saved_version!r}, this code builds version "
            f"{ENCODER_VERSION} (the encoder's layers changed since it was saved); retrain it"
        )
    model = build_model(payload["architecture"], settings_from_record(payload["method_settings"]))
    model.load_state_dict(payload["model"])
    model.eval()
    return model, payload["architecture"]

