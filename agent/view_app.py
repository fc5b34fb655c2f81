"""``ciper-view``: look at what the observer sees, as a PNG grid and a video of a rollout.

The grid has one row per episode (its object and category on the left) and one column per
consecutive step. The video plays the episodes one after another. The views come from a live
rollout of ``env.*`` with the ``policy.*`` observer (``view.source=env``, the default) or from
the saved dataset at ``dataset.path`` (``view.source=dataset``). Both files go into the run
folder. The ``view.*`` keys (``conf.schema.ViewConfig``) choose the source and the sizes.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from omegaconf import DictConfig

import envs
from agent.atomic_files import write_json_atomic
from agent.collector import Collector, make_vector_env
from agent.dataset import ViewPairDataset
from agent.policies import make_policy
from agent.shards import read_manifest
from agent.transitions import MemorySink, TransitionBatch
from conf.app import hydra_app
from conf.app_common import resolve_path
from conf.schema import CiperConfig
from conf.typed import plain_config, typed_config
from conf.validate import ConfigError
from envs.catalog import load_catalog

SOURCES = ("env", "dataset")
VIDEO_FORMATS = ("gif", "mp4")
_LABEL_WIDTH = 96
_HEADER_HEIGHT = 18
_GAP = 2


def view_options(cfg: CiperConfig) -> dict[str, Any]:
    """The ``view.*`` keys as a dict; bad choices raise naming them."""
    options = plain_config(cfg.view)
    if options["source"] not in SOURCES:
        raise ValueError(f"view.source={options['source']!r}: expected one of {SOURCES}")
    if options["video_format"] not in VIDEO_FORMATS:
        raise ValueError(f"view.video_format={options['video_format']!r}: expected one of {VIDEO_FORMATS}")
    for key in ("rows", "steps", "video_steps", "fps", "upscale"):
        if int(options[key]) < 1:
            raise ValueError(f"view.{key}={options[key]!r}: expected an int >= 1")
    return options


def rollout_transitions(cfg: CiperConfig, num_envs: int, vector_steps: int, seed: int) -> TransitionBatch:
    """A live rollout: ``vector_steps`` steps of ``num_envs`` envs (in this process)."""
    sink = MemorySink()
    vector_env = make_vector_env(cfg.env, num_envs, "sync", seed)
    policy = make_policy(cfg.policy, vector_env.single_action_space, num_envs, seed, action_set=cfg.env.action_set)
    collector = Collector(vector_env, policy, sink)
    try:
        collector.collect(vector_steps, progress=False)
    finally:
        collector.close()
    return TransitionBatch.concatenate(sink.batches)


def dataset_transitions(root: Path, episodes: int, frames: int) -> TransitionBatch:
    """The first ``episodes`` episodes of a saved dataset, enough for ``frames`` views."""
    dataset = ViewPairDataset(root, verify=False)
    chosen: list[TransitionBatch] = []
    seen: set[int] = set()
    for batch in dataset.iter_views():
        chosen.append(batch)
        seen.update(batch.episode_id.tolist())
        # One episode more than shown, so the shown ones are complete (up to the shard cut).
        if len(seen) > episodes and sum(len(b) for b in chosen) >= frames:
            break
    return TransitionBatch.concatenate(chosen)


def episodes_in_order(batch: TransitionBatch) -> list[np.ndarray]:
    """Transition indices of each episode, episodes by first appearance, steps ascending."""
    _, first = np.unique(batch.episode_id, return_index=True)
    order = []
    for start in np.sort(first):
        rows = np.flatnonzero(batch.episode_id == batch.episode_id[start])
        order.append(rows[np.argsort(batch.step[rows], kind="stable")])
    return order


def _magnify(view: np.ndarray, upscale: int) -> np.ndarray:
    return np.repeat(np.repeat(view, upscale, axis=0), upscale, axis=1)


def _text(image: np.ndarray, text: str, x: int, y: int) -> None:
    cv2.putText(image, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (20, 20, 20), 1, cv2.LINE_AA)


def object_labels(env_id: str, catalog: str | None) -> Callable[[int, int], tuple[str, str]]:
    """``label(object_index, category) -> (line 1, line 2)`` with the catalogue's names
    for ObjectView; plain indices otherwise."""
    if env_id != envs.OBJECT_VIEW_ID:
        return lambda index, category: (f"image {index}", f"class {category}")
    names = load_catalog(catalog)
    return lambda index, category: (names[index].object_id, names[index].category or "(none)")


def view_grid(
    batch: TransitionBatch, rows: int, steps: int, upscale: int,
    label: Callable[[int, int], tuple[str, str]] | None = None,
) -> np.ndarray:  # fmt: skip
    """RGB grid: episodes as rows (labelled with object and category), steps as columns."""
    label = label or (lambda index, category: (f"object {index}", f"category {category}"))
    episodes = episodes_in_order(batch)[:rows]
    side = batch.view.shape[1] * upscale
    columns = min(steps, max(len(e) for e in episodes))
    height = _HEADER_HEIGHT + len(episodes) * (side + _GAP)
    width = _LABEL_WIDTH + columns * (side + _GAP)
    grid = np.full((height, width, 3), 255, dtype=np.uint8)
    for c in range(columns):
        _text(grid, f"t={c}", _LABEL_WIDTH + c * (side + _GAP) + 2, _HEADER_HEIGHT - 5)
    for r, rows_of_episode in enumerate(episodes):
        top = _HEADER_HEIGHT + r * (side + _GAP)
        first = rows_of_episode[0]
        line1, line2 = label(int(batch.object_index[first]), int(batch.category[first]))
        _text(grid, line1, 4, top + side // 2 - 4)
        _text(grid, line2, 4, top + side // 2 + 12)
        for c, index in enumerate(rows_of_episode[:columns]):
            left = _LABEL_WIDTH + c * (side + _GAP)
            grid[top : top + side, left : left + side] = _magnify(batch.view[index], upscale)
    return grid


def video_frames(batch: TransitionBatch, count: int, upscale: int) -> list[np.ndarray]:
    """The first ``count`` views of the episodes played one after another."""
    order = np.concatenate(episodes_in_order(batch))[:count]
    return [_magnify(batch.view[i], upscale) for i in order]


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Hide what native code (FFmpeg probing encoders) writes to file descriptor 2."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def open_mp4_writer(path: Path, fps: int, size: tuple[int, int]) -> tuple[cv2.VideoWriter, str]:
    """An OpenCV writer in H.264 (``avc1``, what browsers play) when this OpenCV build has
    the encoder, else MPEG-4 Part 2 (``mp4v``); returns it and the codec used."""
    for codec in ("avc1", "mp4v"):
        with _native_stderr_silenced():
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), float(fps), size)
        if writer.isOpened():
            return writer, codec
    raise RuntimeError(f"{path}: OpenCV could not open an avc1 or mp4v writer; try view.video_format=gif")


def write_video(frames: list[np.ndarray], path: Path, fps: int) -> str:
    """Write RGB ``frames`` as a GIF (Pillow) or an MP4 (OpenCV), chosen by suffix;
    returns the codec (``gif``, ``avc1`` or ``mp4v``)."""
    if path.suffix == ".gif":
        from PIL import Image  # Pillow arrives with matplotlib

        images = [Image.fromarray(frame) for frame in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
        return "gif"
    height, width = frames[0].shape[:2]
    writer, codec = open_mp4_writer(path, fps, (width, height))
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    if codec != "avc1":
        print(f"note: this OpenCV build has no H.264 (avc1) encoder, so {path.name} is MPEG-4 Part 2 (mp4v), "
              "which browsers do not play; view.video_format=gif plays everywhere", file=sys.stderr)  # fmt: skip
    return codec


def render_views(cfg: CiperConfig | DictConfig) -> dict[str, Any]:
    """Write the grid PNG and the video into ``cfg.run_dir``; returns their paths."""
    cfg = typed_config(cfg)
    options = view_options(cfg)
    rows, steps, frames = int(options["rows"]), int(options["steps"]), int(options["video_steps"])
    if options["source"] == "env":
        # Each env starts an episode at once, so `rows` envs give `rows` episodes side by side.
        batch = rollout_transitions(cfg, rows, max(steps, math.ceil(frames / rows)), int(options["seed"]))
        source = f"live {cfg.env.id} with policy {cfg.policy.name}"
        env_id, catalog = cfg.env.id, cfg.env.catalog
    else:
        root = resolve_path(cfg.dataset.path)
        batch = dataset_transitions(root, rows, frames)
        source = f"dataset {root}"
        saved_env = (read_manifest(root) or {}).get("header", {}).get("env", {})
        env_id, catalog = saved_env.get("id", cfg.env.id), saved_env.get("catalog")
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    grid_path = run_dir / "views.png"
    grid = view_grid(batch, rows, steps, int(options["upscale"]), object_labels(env_id, catalog))
    if not cv2.imwrite(str(grid_path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)):
        raise RuntimeError(f"{grid_path}: OpenCV could not write the PNG")
    video_path = run_dir / f"rollout.{options['video_format']}"
    codec = write_video(video_frames(batch, frames, int(options["upscale"])), video_path, int(options["fps"]))
    return {"source": source, "grid": str(grid_path), "video": str(video_path), "video_codec": codec, "view": options}


def _task(cfg: CiperConfig | DictConfig) -> None:
    """Render views of a rollout (live or from a dataset) to a PNG grid and a video."""
    cfg = typed_config(cfg)
    outputs = render_views(cfg)
    write_json_atomic(Path(cfg.run_dir) / "metrics.json", outputs)
    print(f"views of {outputs['source']}\ngrid:  {outputs['grid']}\nvideo: {outputs['video']}")


def check_source(cfg: DictConfig) -> None:
    """``view.source=dataset`` needs a dataset at ``dataset.path`` (checked before writing)."""
    if cfg.view.source == "dataset" and read_manifest(resolve_path(cfg.dataset.path)) is None:
        raise ConfigError(
            f"dataset.path={cfg.dataset.path}: no dataset there (no manifest.json) for view.source=dataset; "
            "write one with ciper-rollout, or use view.source=env"
        )


main = hydra_app(_task, check=check_source)

if __name__ == "__main__":
    main()
