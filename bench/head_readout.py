"""What CIPER's own action-prediction head reads from held-out pairs, column by column.

Run: ``python bench/head_readout.py RUN_DIR [RUN_DIR ...]`` on trained ``ciper`` (or
``predict``) run folders, e.g. ``runs/ciper-report/objects/runs/ciper_seed*``.

The report's relative-pose probe asks whether the frozen features *hold* the change between
two views (an MLP fitted on training objects). This asks the model itself: its prediction
head, as trained, on pairs of consecutive views (one step apart, no learner augmentation) of
the run's held-out probe objects (the run's own env and eval settings), scored as R² per
action column in the head's normalised target space (the action normaliser's running
statistics; R² does not depend on that per-column scaling). Two-valued columns (a flip
happened or not), which the head classifies, are scored as accuracy instead, named
``<column> (accuracy)``. A column that the head reads well but the probe does not is a
probe limitation; a column that neither reads is not in the features. Prints one table
row per run, then the mean over runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import envs  # noqa: E402
from agent.probe_views import pairs_within, render_probe_views  # noqa: E402
from learner.data.pair_sources import relative_action_fn  # noqa: E402
from learner.evaluation.features import extract_features  # noqa: E402
from learner.evaluation.metrics import r2_per_column  # noqa: E402
from learner.training.checkpoint import load_model  # noqa: E402


def head_readout(run: Path) -> tuple[list[str], np.ndarray]:
    """Names of the relative-action columns and the head's R² on each, for one run folder."""
    cfg = OmegaConf.load(run / "config.yaml")
    model, _ = load_model(run / "checkpoints" / "last.pt")
    prediction = getattr(model.method, "prediction", None)  # learner.methods.action_prediction
    if prediction is None:
        raise SystemExit(f"{run}: method {cfg.method.name} has no prediction head to read")
    names = json.loads((run / "metrics.json").read_text())["prediction_target"]
    views = render_probe_views(cfg.env, cfg.eval.test_split, cfg.eval.views_per_object, cfg.eval.seed,
                               objects_limit=cfg.eval.objects_limit)  # fmt: skip
    a, b = pairs_within(views.episode, views.step, 1, 1)  # consecutive views
    features = torch.from_numpy(extract_features(model, views.views))
    action = relative_action_fn(envs.world_module(cfg.env.id), cfg.env.action_set)(views.state[a], views.state[b])
    raw = torch.zeros(len(a), len(names))  # the learner's augmentation deltas are 0: none applied
    raw[:, : action.shape[1]] = torch.from_numpy(np.asarray(action, dtype=np.float32))
    with torch.inference_mode():
        predicted = prediction.head(torch.cat([features[a], features[b]], dim=1))
        target = prediction.normalizer(raw)
    k = action.shape[1]
    scores = r2_per_column(target[:, :k].numpy(), predicted[:, :k].numpy())
    discrete = prediction.discrete[:k].numpy()
    for column in np.flatnonzero(discrete):  # logits of a 0/1 target: accuracy, not R²
        scores[column] = float(((predicted[:, column] > 0) == (raw[:, column] > 0.5)).float().mean())
    return [f"{n} (accuracy)" if d else n for n, d in zip(names[:k], discrete, strict=True)], scores


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="ciper or predict run folders")
    args = parser.parse_args(argv)
    results: dict[str, dict[str, float]] = {}
    for run in args.runs:
        names, r2 = head_readout(run)
        results[run.name] = dict(zip(names, map(float, r2), strict=True))
    names = list(next(iter(results.values())))
    print("| run | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for run, row in results.items():
        print(f"| {run} | " + " | ".join(f"{row[n]:.3f}" for n in names) + " |")
    mean = {n: float(np.mean([row[n] for row in results.values()])) for n in names}
    print("| mean | " + " | ".join(f"{mean[n]:.3f}" for n in names) + " |")
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
