"""On-disk storage of transitions: crash-safe shards of plain ``.npy`` files plus a manifest.

A dataset is a folder holding ``manifest.json`` and shard folders ``shard_NNNNN/``, each with
one uncompressed ``.npy`` file per `TransitionBatch` field (``view.npy``, ``state.npy`` ...)
and a ``checksums.json`` (size and sha256 of every file). Uncompressed ``.npy`` files can be
memory-mapped, so a reader touches only the views it samples, and ``np.load(...,
allow_pickle=False)`` never runs code from a file. A shard is written into
``shard_NNNNN.tmp/``, fsynced and renamed in one atomic step, and the manifest is replaced
atomically after it, so a crash at any moment leaves complete shards, at most one stale
``.tmp`` folder and at most one complete shard not yet listed (``adopt_orphans`` checks and
lists it). This module knows nothing about environments or policies: what produced the data
travels in the opaque ``header`` dict of the manifest.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from agent.atomic_files import fsync_dir, write_json_atomic
from agent.transitions import TransitionBatch
from conf.errors import UserError

FORMAT_NAME = "ciper-view-shards"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
CHECKSUMS_NAME = "checksums.json"
FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(TransitionBatch))
_SHARD_PATTERN = re.compile(r"^shard_(\d{5,})$")
_HASH_CHUNK = 1 << 22


class CorruptShardError(UserError, RuntimeError):
    """A shard whose files are missing, truncated, modified or of an unexpected type (the
    user can repair it: rerunning the rollout regenerates the shard)."""


def shard_name(index: int) -> str:
    return f"shard_{index:05d}"


def shard_index(name: str) -> int | None:
    """Index of a shard folder name, None when ``name`` is not a complete shard's folder."""
    match = _SHARD_PATTERN.match(name)
    return int(match.group(1)) if match else None


# ---------------------------------------------------------------- durable file writes


def _write_npy(path: Path, array: np.ndarray) -> dict[str, Any]:
    """Save ``array`` as ``.npy``, fsync it, and return its size and sha256."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    data = buffer.getbuffer()
    try:
        with open(path, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        if error.filename is None:  # "No space left on device" alone does not say where
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------- shard checks and reads


def field_specs(batch: TransitionBatch) -> dict[str, dict[str, Any]]:
    """dtype and per-transition shape of every field, as stored in the manifest header."""
    return {
        name: {"dtype": array.dtype.str, "shape": list(array.shape[1:])}
        for name, array in batch.as_dict().items()
    }


def verify_shard(shard_dir: Path, files: dict[str, dict[str, Any]], checksums: bool = True) -> None:
    """Raise `CorruptShardError` naming the shard and file unless every file matches ``files``.

    Sizes are always compared (cheap, catches truncation); sha256 only with ``checksums``.
    """
    for file_name, expected in sorted(files.items()):
        path = shard_dir / file_name
        if not path.is_file():
            raise CorruptShardError(f"shard {shard_dir.name}: {file_name} is missing ({shard_dir})")
        size = path.stat().st_size
        if size != expected["bytes"]:
            raise CorruptShardError(
                f"shard {shard_dir.name}: {file_name} has {size} bytes, expected {expected['bytes']} "
                f"(truncated or modified; {shard_dir})"
            )
        if checksums:
            digest = file_sha256(path)
            if digest != expected["sha256"]:
                raise CorruptShardError(
                    f"shard {shard_dir.name}: {file_name} sha256 {digest} does not match the "
                    f"recorded {expected['sha256']} (corrupted or modified; {shard_dir})"
                )


def open_shard_field(
    shard_dir: Path, name: str, spec: dict[str, Any], length: int
) -> np.ndarray:
    """Memory-map one field of a shard, refusing any dtype or shape other than ``spec``.

    The ``.npy`` header is parsed before mapping, so an object (pickled) array is refused
    without ever being unpickled; ``allow_pickle=False`` guards the load as well.
    """
    path = shard_dir / f"{name}.npy"
    with open(path, "rb") as handle:
        try:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
            else:
                raise ValueError(f"unsupported .npy version {version}")
        except ValueError as error:
            raise CorruptShardError(f"shard {shard_dir.name}: {name}.npy has no valid .npy header: {error}") from None
    expected_dtype = np.dtype(spec["dtype"])
    expected_shape = (length, *spec["shape"])
    if dtype.hasobject or dtype != expected_dtype or tuple(shape) != expected_shape:
        raise CorruptShardError(
            f"shard {shard_dir.name}: {name}.npy holds dtype {dtype} shape {tuple(shape)}, "
            f"expected dtype {expected_dtype} shape {expected_shape} (object arrays are never loaded)"
        )
    return np.load(path, mmap_mode="r", allow_pickle=False)


# ---------------------------------------------------------------- manifest


def read_manifest(root: str | Path) -> dict[str, Any] | None:
    """The manifest of the dataset at ``root``, or None when there is none yet."""
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as handle:
        manifest = json.load(handle)
    if manifest.get("format") != FORMAT_NAME or manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: format {manifest.get('format')!r} version {manifest.get('format_version')!r}, "
            f"expected {FORMAT_NAME!r} version {FORMAT_VERSION}"
        )
    return manifest


def remove_dataset(root: str | Path) -> None:
    """Delete a dataset's manifest and shard folders (and nothing else in ``root``)."""
    root = Path(root)
    for path in root.glob("shard_*"):
        if path.is_dir() and (shard_index(path.name) is not None or path.suffix == ".tmp"):
            shutil.rmtree(path)
    (root / MANIFEST_NAME).unlink(missing_ok=True)
    for stale in root.glob(f".{MANIFEST_NAME}.*.tmp"):  # agent.atomic_files' temporary names
        stale.unlink()


class ShardWriter:
    """A `TransitionSink` that buffers transitions and writes them as numbered shards.

    ``write(batch)`` appends and writes every full shard of ``shard_size`` transitions;
    ``finish()`` writes the remaining partial shard. ``write_shard(index, batch)`` writes one
    shard under an explicit index (the rollout app regenerates missing shards this way).
    Opening an existing dataset keeps its shards: ``header`` must then equal the stored one
    (compare first with ``read_manifest``), stale ``.tmp`` folders are deleted, complete
    shards not yet in the manifest are verified and listed, and streaming continues after
    the highest shard index.
    """

    def __init__(self, root: str | Path, header: dict[str, Any], shard_size: int) -> None:
        if not isinstance(shard_size, int | np.integer) or shard_size < 1:
            raise ValueError(f"shard_size={shard_size!r}: expected an int >= 1")
        self.root = Path(root)
        self.shard_size = int(shard_size)
        self.root.mkdir(parents=True, exist_ok=True)
        manifest = read_manifest(self.root)
        if manifest is not None and manifest["header"] != header:
            raise ValueError(
                f"{self.root}: the dataset was made with a different header; "
                "compare with read_manifest() or remove it with remove_dataset()"
            )
        self._manifest: dict[str, Any] = manifest or {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "header": header,
            "fields": None,
            "shards": [],
        }
        self._pending: list[TransitionBatch] = []
        self._pending_count = 0
        self.discard_stale()
        self.adopt_orphans()
        self._save_manifest()

    # ------------------------------------------------------------------ state

    @property
    def manifest(self) -> dict[str, Any]:
        return self._manifest

    def shard_indices(self) -> list[int]:
        return sorted(s["index"] for s in self._manifest["shards"])

    def num_transitions(self) -> int:
        return sum(s["transitions"] for s in self._manifest["shards"])

    def discard_stale(self) -> list[str]:
        """Delete ``*.tmp`` shard folders and manifest temporaries left by an interrupted
        write; returns their names."""
        stale = sorted(p for p in self.root.glob("shard_*.tmp") if p.is_dir())
        for path in stale:
            shutil.rmtree(path)
        manifests = sorted(self.root.glob(f".{MANIFEST_NAME}.*.tmp"))  # agent.atomic_files' names
        for path in manifests:
            path.unlink(missing_ok=True)
        return [p.name for p in stale + manifests]

    def adopt_orphans(self) -> list[int]:
        """List complete shard folders missing from the manifest (a crash between the rename
        and the manifest update) after checking their checksums; corrupt ones are deleted so
        they get written again. Returns the adopted indices."""
        listed = set(self.shard_indices())
        adopted = []
        for path in sorted(self.root.glob("shard_*")):
            index = shard_index(path.name)
            if index is None or index in listed or not path.is_dir():
                continue
            try:
                with open(path / CHECKSUMS_NAME, encoding="utf-8") as handle:
                    saved = json.load(handle)
                entry, specs = saved["entry"], saved["fields"]
                verify_shard(path, entry["files"], checksums=True)
                if self._manifest["fields"] not in (None, specs):
                    raise CorruptShardError(f"{path.name}: fields {specs} differ from the other shards")
            except (OSError, ValueError, KeyError, TypeError, CorruptShardError):
                shutil.rmtree(path)
                continue
            self._manifest["fields"] = specs
            self._record(entry)
            adopted.append(index)
        return adopted

    def validate_listed(self, checksums: bool = False) -> dict[int, str]:
        """Drop listed shards whose files are missing or have the wrong size, or (with
        ``checksums``) a sha256 other than the recorded one; returns ``{index: what is wrong}``
        of the dropped shards so the caller can say so and write them again."""
        dropped = {}
        for entry in list(self._manifest["shards"]):
            try:
                verify_shard(self.root / entry["name"], entry["files"], checksums=checksums)
            except CorruptShardError as error:
                dropped[entry["index"]] = str(error)
                self._manifest["shards"].remove(entry)
                shutil.rmtree(self.root / entry["name"], ignore_errors=True)
        if dropped:
            self._save_manifest()
        return dropped

    def remove_shard(self, index: int) -> None:
        """Unlist shard ``index`` and delete its folder (to write it again)."""
        self._manifest["shards"] = [s for s in self._manifest["shards"] if s["index"] != index]
        self._save_manifest()
        shutil.rmtree(self.root / shard_name(index), ignore_errors=True)

    # ------------------------------------------------------------------ writing

    def write(self, batch: TransitionBatch) -> None:
        """Buffer ``batch``; write every full shard it completes."""
        self._pending.append(batch)
        self._pending_count += len(batch)
        while self._pending_count >= self.shard_size:
            merged = TransitionBatch.concatenate(self._pending)
            head = TransitionBatch(**{k: v[: self.shard_size] for k, v in merged.as_dict().items()})
            tail = TransitionBatch(**{k: v[self.shard_size :] for k, v in merged.as_dict().items()})
            self._pending = [tail] if len(tail) else []
            self._pending_count = len(tail)
            self.write_shard(self._next_index(), head)

    def finish(self) -> None:
        """Write the buffered transitions as a last, possibly partial, shard."""
        if self._pending_count:
            merged = TransitionBatch.concatenate(self._pending)
            self._pending, self._pending_count = [], 0
            self.write_shard(self._next_index(), merged)

    def write_shard(self, index: int, batch: TransitionBatch, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write ``batch`` as shard ``index`` atomically and list it; returns its manifest entry.

        ``extra`` (JSON-serialisable) is stored in the entry, e.g. the renderer actually used.
        """
        if index in self.shard_indices():
            raise ValueError(f"shard index {index}: {shard_name(index)} already exists in {self.root}")
        if len(batch) == 0:
            raise ValueError("batch of 0 transitions: a shard holds at least one")
        specs = field_specs(batch)
        if self._manifest["fields"] is None:
            self._manifest["fields"] = specs
        elif specs != self._manifest["fields"]:
            raise ValueError(f"batch fields {specs}: expected {self._manifest['fields']} like the other shards")
        name = shard_name(index)
        tmp = self.root / f"{name}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        try:
            files = {f"{key}.npy": _write_npy(tmp / f"{key}.npy", value) for key, value in batch.as_dict().items()}
            entry = {
                "name": name,
                "index": int(index),
                "transitions": len(batch),
                "episodes": int(np.unique(batch.episode_id).size),
                "files": files,
                **(extra or {}),
            }
            # checksums.json lets a shard be verified before the manifest lists it (see adopt_orphans).
            write_json_atomic(tmp / CHECKSUMS_NAME, {"entry": entry, "fields": specs})
            fsync_dir(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # e.g. a full disk: free the partial shard now
            raise
        os.rename(tmp, self.root / name)
        fsync_dir(self.root)
        self._record(entry)
        self._save_manifest()
        return entry

    # ------------------------------------------------------------------ helpers

    def _next_index(self) -> int:
        indices = self.shard_indices()
        return indices[-1] + 1 if indices else 0

    def _record(self, entry: dict[str, Any]) -> None:
        self._manifest["shards"].append(entry)
        self._manifest["shards"].sort(key=lambda s: s["index"])

    def _save_manifest(self) -> None:
        shards = self._manifest["shards"]
        self._manifest["counts"] = {
            "shards": len(shards),
            "transitions": sum(s["transitions"] for s in shards),
            "episodes_per_shard": {s["name"]: s["episodes"] for s in shards},
        }
        write_json_atomic(self.root / MANIFEST_NAME, self._manifest)
