"""Does curiosity help? CIPER trained online with policy=random, smooth and curious, same budget.

Run: ``python bench/curious_vs_random.py [--steps 800] [--seeds 0] [key=value overrides ...]``;
the default (3 policies x 1 seed, 32x32 views, a width-8 encoder) takes ~5 minutes on a
2-core CPU; ``--steps 5000 --seeds 0 1 2 train.device=auto model.encoder=resnet18 env.image_size=64``
on a GPU box for a real answer. Every run has the same config, seed, steps and batch size; only
``policy`` differs. Reported per run: the training loss trajectory (window means; the
training prediction loss of ``curious`` is on pairs it chose *because* they are hard, so
it is not comparable across policies), the prediction head's R^2 on one fixed set of
uniform-random-action pairs of held-out objects (raw action units, so each run's target
normaliser does not matter), and, from ``learner.evaluation.evaluate_encoder``, the
relative-pose R^2 of an MLP probe on frozen features of held-out objects. For the curious
run, the last published error model's predicted error along each action axis shows where
the head was worst. Results are printed (and written to ``--out`` as JSON when given).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import envs
from agent.curious import load_error_model, model_path_of
from conf.compose import compose_config
from conf.schema import CiperConfig
from conf.typed import typed_config
from learner.data.images import model_input
from learner.evaluation.evaluate import evaluate_encoder
from learner.nets.pair_model import PairModel
from learner.training.checkpoint import load_model
from learner.training.curiosity import curious_training
from learner.training.loop import train

TINY = ("env.image_size=32", "model.width=8", "model.proj_hidden=128", "model.proj_dim=32",
        "model.pred_hidden=128", "train.batch_size=32", "collector.num_workers=1", "collector.num_envs=2",
        "collector.vectorization=sync", "buffer.warmup_views=128", "train.evaluate=false",
        "train.device=cpu", "policy.curious_refresh_steps=10", "eval.views_per_object=8", "eval.probe_epochs=60", "eval.plots=false")  # fmt: skip


def validation_pairs(cfg: CiperConfig, num_pairs: int, seed: int) -> dict[str, np.ndarray]:
    """One-step pairs of held-out (eval.test_split) objects under uniform random actions."""
    world = envs.world_module(cfg.env.id)
    env = gym.make(cfg.env.id, action_set=cfg.env.action_set, image_size=cfg.env.image_size,
                   split=cfg.eval.test_split, episode_steps=16)  # fmt: skip
    rng = np.random.default_rng(seed)
    view_a, view_b, target = [], [], []
    observation, info = env.reset(seed=seed)
    while len(view_a) < num_pairs:
        action = rng.uniform(env.action_space.low, env.action_space.high).astype(np.float32)
        next_observation, _, terminated, truncated, next_info = env.step(action)
        view_a.append(observation)
        view_b.append(next_observation)
        target.append(world.relative_action(info["state"], next_info["state"], cfg.env.action_set))
        observation, info = next_observation, next_info
        if terminated or truncated:
            observation, info = env.reset()
    env.close()
    return {"view_a": np.stack(view_a), "view_b": np.stack(view_b), "target": np.stack(target)}


@torch.no_grad()
def prediction_r2(model: PairModel, pairs: dict[str, np.ndarray]) -> list[float]:
    """The head's R^2 per action column, predictions mapped back to raw units through the
    model's own running normaliser statistics."""
    model.eval()
    n = len(pairs["target"])
    views = torch.from_numpy(np.concatenate([pairs["view_a"], pairs["view_b"]]))
    features = model.encode(model_input(views))
    prediction = model.method.prediction  # learner.methods.action_prediction.ActionPrediction
    norm = prediction.normalizer.norm
    predicted = prediction.head(torch.cat([features[:n], features[n:]], dim=1))
    raw = predicted * torch.sqrt(norm.running_var + norm.eps) + norm.running_mean
    target = torch.from_numpy(pairs["target"]).double()
    raw = raw[:, : target.shape[1]]  # the action's columns (the augmentation's follow)
    residual = ((raw.double() - target) ** 2).mean(0)
    variance = target.var(0, unbiased=False).clamp_min(1e-12)
    return [float(r) for r in 1.0 - residual / variance]


def window_means(history: list[dict[str, float]], name: str, windows: int = 5) -> list[float]:
    values = np.array([h[name] for h in history])
    return [float(chunk.mean()) for chunk in np.array_split(values, windows)]


def error_landscape(run_dir: Path, action_dim: int) -> dict[str, list[float]]:
    """Predicted error of the last published model at -1, -0.5, 0, 0.5, 1 along each axis."""
    path = model_path_of(run_dir)
    if not path.exists():  # a run shorter than policy.curious_refresh_steps publishes nothing
        return {}
    model = load_error_model(path)
    grid = np.linspace(-1.0, 1.0, 5)
    landscape = {}
    for axis in range(action_dim):
        x = np.zeros((grid.size, action_dim))
        x[:, axis] = grid
        landscape[f"axis_{axis}"] = [round(float(v), 4) for v in model.predict(x)[0]]
    landscape["version"] = [float(model.version)]
    return landscape


def run_one(policy: str, seed: int, steps: int, overrides: list[str], root: Path, val: dict[str, np.ndarray],
            evaluate: bool) -> dict[str, Any]:  # fmt: skip
    run_dir = root / f"{policy}_seed{seed}"
    overrides = [*TINY, "method=ciper", "train.mode=online", f"policy={policy}", f"train.steps={steps}",
                 f"train.seed={seed}", *overrides]  # fmt: skip
    cfg = typed_config(compose_config(overrides, run_dir=run_dir))
    factory, callbacks = None, []
    if policy == "curious":
        factory, callback = curious_training(cfg, envs.world_module(cfg.env.id), run_dir)
        callbacks = [callback]
    started = time.perf_counter()
    metrics = train(cfg, run_dir, policy_factory=factory, callbacks=callbacks)
    train_s = time.perf_counter() - started
    history = json.loads((run_dir / "loss_history.json").read_text())
    model, _ = load_model(run_dir / "checkpoints" / "last.pt")
    result: dict[str, Any] = {
        "policy": policy, "seed": seed, "steps": metrics["steps"], "train_s": round(train_s, 1),
        "prediction_loss_windows": window_means(history, "prediction"),
        "contrastive_loss_windows": window_means(history, "contrastive"),
        "val_prediction_r2_columns": prediction_r2(model, val),
    }  # fmt: skip
    if evaluate:
        scores = evaluate_encoder(model, envs.world_module(cfg.env.id), cfg.env, cfg.eval, "cpu")
        result.update({f"eval_{k}": scores[k] for k in ("relative_pose_r2", "absolute_pose_r2", "category_top1_linear")})
    if policy == "curious":
        result["error_landscape"] = error_landscape(run_dir, len(envs.world_module(cfg.env.id).action_dims(cfg.env.action_set)))
        result["curious_publications"] = callbacks[0].publications
        result["collector_pickups"] = sum(1 for _ in (run_dir / "curious" / "pickups").glob("*.json"))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--policies", nargs="+", default=["random", "smooth", "curious"])
    parser.add_argument("--val-pairs", type=int, default=512)
    parser.add_argument("--no-eval", action="store_true", help="skip evaluate_encoder (relative-pose R^2)")
    parser.add_argument("--out", type=Path, default=None, help="also write the results to this JSON file")
    parser.add_argument("overrides", nargs="*", help="config overrides key=value for every run")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))  # one core left to the collector
    base = typed_config(compose_config([*TINY, *args.overrides]))
    val = validation_pairs(base, args.val_pairs, seed=4321)
    evaluate = not args.no_eval
    results = []
    with tempfile.TemporaryDirectory(prefix="curious_bench_") as tmp:
        for seed in args.seeds:
            for policy in args.policies:
                result = run_one(policy, seed, args.steps, args.overrides, Path(tmp), val, evaluate)
                results.append(result)
                print(json.dumps(result), flush=True)
    names = envs.world_module(base.env.id).relative_action_names(base.env.action_set)
    print(f"\nvalidation R^2 columns: {', '.join(names)}")
    print(f"\n{'policy':8s} {'seed':>4s} {'pred loss (first->last window)':>32s} {'val pred R2 per column':>30s} "
          f"{'rel-pose R2':>12s} {'train s':>8s}")  # fmt: skip
    for r in results:
        windows = r["prediction_loss_windows"]
        pose = r.get("eval_relative_pose_r2", float("nan"))
        print(f"{r['policy']:8s} {r['seed']:4d} {windows[0]:15.4f} -> {windows[-1]:<14.4f} "
              f"{' '.join(f'{v:6.2f}' for v in r['val_prediction_r2_columns']):>30s} {pose:12.4f} {r['train_s']:8.1f}")  # fmt: skip
    if args.out is not None:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=2))
        print(f"written {args.out}")


if __name__ == "__main__":
    main()
