"""Can the views carry what CIPER is asked to learn? Two measurements on the shipped scenes.

1. Per-column visibility: from each of ``--scenes`` random start views (held-out objects /
   images, nuisances fixed per episode so only the action moves the image), a unit step
   (+1.0) of one action column; the table gives the mean absolute grey-level change of the
   32x32 view (0-255, over pixels and channels), its 10th percentile and the fraction of
   scenes at or above ``--threshold``.
2. Colour-only positive retrieval: a default rollout (the env's defaults, a smooth random
   policy), anchors = view t of 64 episodes, candidates = view t+1 of the same 64 episodes;
   each anchor retrieves the nearest candidate by a colour feature with no learning (mean
   RGB; a per-channel 8-bin histogram). A high top-1 means a contrastive loss can be solved
   by matching colours (chance is 1/64 = 1.6%).

Run: ``python bench/scene_validity.py [--scenes 32] [--size 32] [--trials 8]``.
``tests/test_scene_validity.py`` asserts the visibility threshold on fewer scenes.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np

import envs

ACTION_SETS = {envs.OBJECT_VIEW_ID: ("camera", "object", "light", "full"), envs.IMAGE_VIEW_ID: ("geometric", "photometric", "full")}
#: Visible: a unit step changes the 32x32 view by at least this many grey levels on average.
VISIBLE_GREY_LEVELS = 2.0


def fixed_nuisance_kwargs(env_id: str) -> dict:
    """Env kwargs that keep every nuisance fixed within an episode (visibility of the action alone)."""
    return {"nuisance": "per_episode"}


def unit_step_changes(
    env_id: str, action_set: str, scenes: int, size: int, split: str = "test", first_seed: int = 10_000
) -> np.ndarray:
    """(scenes, A) mean absolute change (grey levels) of the view under a +1.0 step of each column."""
    env = gym.make(env_id, action_set=action_set, image_size=size, split=split, **fixed_nuisance_kwargs(env_id))
    dims = env.action_space.shape[0]
    changes = np.empty((scenes, dims))
    for scene in range(scenes):
        start, info = env.reset(seed=first_seed + scene)
        for column in range(dims):
            env.reset(options={"object_index": info["object_index"], "state": info["state"]})
            action = np.zeros(dims, dtype=np.float32)
            action[column] = 1.0
            view, *_ = env.step(action)
            changes[scene, column] = np.abs(view.astype(np.int16) - start.astype(np.int16)).mean()
    env.close()
    return changes


def visibility_table(scenes: int, size: int, threshold: float) -> list[str]:
    lines = [
        f"Per-column visibility: +1.0 step, {scenes} held-out scenes, {size}x{size}, threshold {threshold:g} grey levels",
        "| env | action_set | column | mean change | 10th pct | scenes >= threshold |",
        "|---|---|---|---:|---:|---:|",
    ]
    for env_id, action_sets in ACTION_SETS.items():
        module = envs.world_module(env_id)
        for action_set in action_sets:
            changes = unit_step_changes(env_id, action_set, scenes, size)
            for column, dim in enumerate(module.action_dims(action_set)):
                values = changes[:, column]
                lines.append(
                    f"| {env_id.split('/')[1]} | {action_set} | {dim.name} | {values.mean():.2f} | "
                    f"{np.percentile(values, 10):.2f} | {np.mean(values >= threshold):.0%} |"
                )
    return lines


def colour_features(views: np.ndarray) -> dict[str, np.ndarray]:
    """Colour-only features of uint8 views (N, H, W, 3): mean RGB and per-channel histograms."""
    pixels = views.reshape(len(views), -1, 3).astype(np.float64)
    histogram = np.stack(
        [np.stack([np.histogram(p[:, c], bins=8, range=(0, 256))[0] for c in range(3)]).ravel() for p in pixels]
    ) / pixels.shape[1]
    return {"mean RGB": pixels.mean(axis=1), "RGB histogram (3x8 bins)": histogram}


def default_rollout_pairs(env_id: str, episodes: int, size: int, seed: int, offset: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(view t, view t+offset) of ``episodes`` episodes of the env's defaults, a random t in each."""
    env = gym.make(env_id, image_size=size)
    rng = np.random.default_rng(seed)
    env.action_space.seed(seed)
    anchors, positives = [], []
    for episode in range(episodes):
        view, _ = env.reset(seed=seed * 1000 + episode)
        views = [view]
        for _ in range(int(rng.integers(1, 8)) + offset):
            view, *_ = env.step(env.action_space.sample() * 0.5)
            views.append(view)
        anchors.append(views[-1 - offset])
        positives.append(views[-1])
    env.close()
    return np.stack(anchors), np.stack(positives)


def retrieval_top1(anchor_features: np.ndarray, positive_features: np.ndarray) -> float:
    """Fraction of anchors whose nearest candidate (Euclidean) is their own positive."""
    distances = np.linalg.norm(anchor_features[:, None, :] - positive_features[None, :, :], axis=-1)
    return float(np.mean(distances.argmin(axis=1) == np.arange(len(anchor_features))))


def retrieval_table(trials: int, size: int, candidates: int = 64) -> list[str]:
    lines = [
        f"Colour-only positive retrieval: top-1 among {candidates} candidates, default rollout, "
        f"{size}x{size}, mean over {trials} draws (chance {1 / candidates:.1%})",
        "| env | feature | top-1 |",
        "|---|---|---:|",
    ]
    for env_id in ACTION_SETS:
        scores: dict[str, list[float]] = {}
        for trial in range(trials):
            anchors, positives = default_rollout_pairs(env_id, candidates, size, seed=trial + 1)
            a, p = colour_features(anchors), colour_features(positives)
            for name in a:
                scores.setdefault(name, []).append(retrieval_top1(a[name], p[name]))
        for name, values in scores.items():
            lines.append(f"| {env_id.split('/')[1]} | {name} | {np.mean(values):.1%} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=32)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--threshold", type=float, default=VISIBLE_GREY_LEVELS)
    args = parser.parse_args()
    print("\n".join(visibility_table(args.scenes, args.size, args.threshold)))
    print()
    print("\n".join(retrieval_table(args.trials, args.size)))


if __name__ == "__main__":
    main()
