"""Writing a rollout in the 3DIEBench layout, so code written for 3DIEBench trains on it.

``ciper-rollout dataset.format=3diebench`` collects transitions shard by shard as for its own
format and hands them to :func:`write_benchmark`, which writes every complete episode as one
object folder ``<root>/<category>/<object_id>_<shard>_<episode>/`` (the category name is the
"synset"): view k of the episode (k = 0 is the reset view) as ``image_<k>.jpg`` and its
latents as ``latent_<k>.npy`` (:func:`envs.iebench_state.latents_from_object_view`: SIE's
seven, then this world's extras). Episodes cut at a shard's end are left out, so every
object has ``env.episode_steps + 1`` views (50, as SIE's loader assumes, with
``env.episode_steps=49``). Objects of the catalogue's train split are listed in
``train_images.npy`` / ``train_labels.npy``, those of its test split in ``val_*`` (SIE's
names); ``env.split=categorised`` collects both. ``ciper_3diebench.json`` records the
settings and the latent names; it is written first (incomplete) and again last, so a rerun
of a finished dataset writes nothing, and a killed one is written again (the same views:
shards are seeded). The layout itself is :mod:`envs.iebench_layout`'s.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from agent.atomic_files import write_json_atomic
from agent.transitions import TransitionBatch, episode_id_base
from conf.app_common import key_differences
from conf.validate import ConfigError
from envs import OBJECT_VIEW_ID, iebench_layout, iebench_state
from envs.catalog import load_catalog

MARKER_NAME = "ciper_3diebench.json"
#: The list each catalogue split's objects go to (SIE's names).
LIST_OF_SPLIT = {"train": "train", "test": "val"}
#: ``env.split`` values whose objects all have a category (3DIEBench labels every object).
LABELLED_SELECTIONS = ("train", "test", "categorised")


def read_marker(root: Path) -> dict[str, Any] | None:
    """The settings record of a folder this writer made, or None."""
    path = Path(root) / MARKER_NAME
    return json.loads(path.read_text()) if path.is_file() else None


def check_benchmark_target(root: Path, header: dict[str, Any], overwrite: bool) -> None:
    """Refuse, before anything is written, what :func:`write_benchmark` must not do: another
    world than ObjectView, objects without categories, a folder it did not write, or one it
    wrote with other settings (unless ``overwrite``)."""
    env = header["env"]
    if env["id"] != OBJECT_VIEW_ID:
        raise ConfigError(f"env.id={env['id']!r}: dataset.format=3diebench writes the object's rotation latents of "
                          f"{OBJECT_VIEW_ID}; this world has none")  # fmt: skip
    if env["split"] not in LABELLED_SELECTIONS:
        raise ConfigError(f"env.split={env['split']!r}: 3DIEBench labels every object with a category; use one of "
                          f"{', '.join(LABELLED_SELECTIONS)} (categorised: train objects to train_*, test objects to val_*)")  # fmt: skip
    if not root.exists():
        return
    marker = read_marker(root)
    if marker is None:
        if not root.is_dir() or any(root.iterdir()):
            raise ConfigError(f"dataset.path={root}: holds files ciper-rollout did not write as 3DIEBench (no {MARKER_NAME}); "
                              "use another dataset.path")  # fmt: skip
    elif marker["header"] != header and not overwrite:
        raise ConfigError(
            f"dataset.path={root}: made with another config (stored -> requested: "
            f"{'; '.join(key_differences(marker['header'], header))}); use another dataset.path, or dataset.overwrite=true to replace it"
        )


def write_benchmark(root: Path, header: dict[str, Any], shards: Iterable[tuple[int, TransitionBatch]]) -> dict[str, Any]:
    """Write the transitions of ``shards`` ((index, batch) as collected) into ``root`` in the
    3DIEBench layout (checked by :func:`check_benchmark_target` first); returns counts."""
    root = Path(root)
    marker = read_marker(root)
    if marker is not None and marker["header"] == header and marker.get("complete"):
        return {**marker["counts"], "dataset": str(root), "format": "3diebench", "written": False}
    if marker is not None and marker["header"] != header:  # dataset.overwrite=true (checked)
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    write_json_atomic(root / MARKER_NAME, {"complete": False, "header": header})
    catalog = load_catalog(header["env"]["catalog"])
    views_per_object = int(header["env"]["episode_steps"]) + 1
    lists: dict[str, list[tuple[str, int]]] = {name: [] for name in LIST_OF_SPLIT.values()}
    views_left_out = 0
    for index, batch in shards:
        for rows in _episodes(batch):
            if not np.array_equal(batch.step[rows], np.arange(views_per_object)):
                views_left_out += rows.size  # cut at the shard's end
                continue
            entry = catalog.entries[int(batch.object_index[rows[0]])]
            label = int(batch.category[rows[0]])
            local = int(batch.episode_id[rows[0]]) - episode_id_base(index)
            relative = f"{catalog.categories[label]}/{entry.object_id}_{index:04d}_{local:04d}"
            _write_object(root / relative, batch.view[rows], iebench_state.latents_from_object_view(batch.state[rows]))
            lists[LIST_OF_SPLIT[entry.split]].append((relative, label))
    for split, objects in lists.items():
        if objects:
            objects.sort()
            iebench_layout.write_split_lists(root, split, [o for o, _ in objects], [label for _, label in objects])
    counts = {
        "objects": {split: len(objects) for split, objects in lists.items()},
        "views_per_object": views_per_object,
        "views": views_per_object * sum(len(objects) for objects in lists.values()),
        "views_left_out": views_left_out,
        "latent_names": list(iebench_state.OBJECT_VIEW_LATENT_NAMES),
    }
    write_json_atomic(root / MARKER_NAME, {"complete": True, "header": header, "counts": counts})
    return {**counts, "dataset": str(root), "format": "3diebench", "written": True}


def _episodes(batch: TransitionBatch) -> list[np.ndarray]:
    """Rows of each episode of ``batch``, in step order."""
    order = np.lexsort((batch.step, batch.episode_id))
    starts = np.flatnonzero(np.diff(batch.episode_id[order], prepend=-1) != 0)
    return np.split(order, starts[1:])


def _write_object(folder: Path, views: np.ndarray, latents: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k, (view, latent) in enumerate(zip(views, latents, strict=True)):
        iebench_layout.write_view(iebench_layout.image_path(folder, k), view)
        iebench_layout.write_latent(iebench_layout.latent_path(folder, k), latent)
