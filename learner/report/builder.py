"""``report.md``, ``report.json`` and the PNGs of a report, from the jobs' results.

:func:`build_report` runs (or reuses) every job of :mod:`learner.report.jobs` in the report's
folder under one progress bar, then hands the per-seed scores to the pure aggregation of
:mod:`learner.report.tables` and writes the files: the setup, the settings every run used
(read back from their saved configs), the tables with the references, the paired per-seed
differences of ``report.comparisons``, the target checks and the plots.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

import envs
from agent.atomic_files import write_json_atomic
from agent.curious import model_path_of
from agent.view_app import dataset_transitions, object_labels, rollout_transitions, view_grid
from conf.app_common import flatten
from envs.world import World
from learner.evaluation.plots import (
    action_histograms,
    error_model_history,
    loss_curves,
    metric_bars,
    score_curves,
)
from learner.evaluation.references import REFERENCE_MEANING
from learner.report import tables
from learner.report.jobs import (
    Job,
    StepProgress,
    compose_in_app,
    job_steps,
    job_weight,
    passed_through,
    report_jobs,
    run_job,
    run_overrides,
    write_dataset,
)
from learner.training.action_stats import load_actions
from learner.training.curiosity import HISTORY_FILE


def write_views_grid(cfg: DictConfig, dataset: Path | None, path: Path) -> Path:
    """Views of the training data as a grid: one episode (object) per row, steps as columns."""
    rows, steps = cfg.view.rows, cfg.view.steps
    if dataset is not None:
        batch = dataset_transitions(dataset, rows, rows * steps)
    else:  # online reports have no dataset: render a short rollout of the same env and policy
        batch = rollout_transitions(cfg, rows, steps, cfg.view.seed)
    grid = view_grid(batch, rows, steps, cfg.view.upscale, object_labels(cfg.env.id, cfg.env.catalog))
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.ascontiguousarray(grid[..., ::-1])):  # OpenCV writes BGR
        raise OSError(f"cv2.imwrite failed for path={str(path)!r}")
    return path


def per_column_order(world: World, action_set: str) -> list[str]:
    """The evaluation's per-column keys in the world's order: relative change per action
    dimension, then absolute pose per column."""
    return [*(f"relative_pose_r2/{d.name}" for d in world.action_dims(action_set)),
            *(f"absolute_pose_r2/{name}" for name in world.absolute_pose_names())]  # fmt: skip


def write_plots(out: Path, table: dict, histories: dict, labels: Sequence[str], seeds: Sequence[int], steps: int) -> dict[str, str]:
    """Loss curves, headline and per-column metric bars, the embedding of every row (seed
    ``seeds[0]``); caption -> file name."""
    plots: dict[str, str] = {}
    curves = tables.mean_loss_curves(histories, smooth=max(1, steps // 30))
    if curves:
        loss_curves(curves, out / "loss_curves.png", title=f"training losses, mean over {len(seeds)} seed(s)")
        plots["losses (mean over seeds)"] = "loss_curves.png"
    for per_column, name, title in ((False, "metric_bars.png", "mean ± std over seeds"),
                                    (True, "pose_columns.png", "pose R² per column, mean ± std over seeds")):  # fmt: skip
        cells = {m: {k: (c.mean, c.std) for k, c in row.items() if ("/" in k) == per_column} for m, row in table.items()}
        if any(cells.values()):
            # The noise reference is each metric's floor, scored by the same code: the chance line.
            floor = {k: mean for k, (mean, _) in cells.get("noise", {}).items()}
            metric_bars(cells, out / name, title=title + " (dashed: the noise reference)", chance=floor)
            plots["pose R² per column" if per_column else "metrics"] = name
    for label, folder in [*((m, f"{m.replace('@', '_')}_seed{seeds[0]}") for m in labels),
                          ("random", f"reference_random_seed{seeds[0]}")]:  # fmt: skip
        source = out / "runs" / folder / "embedding_test_objects.png"
        name = f"embedding_{label.replace('@', '_')}.png"
        if source.exists():
            shutil.copyfile(source, out / name)
            plots[f"embedding of held-out objects, {label} (seed {seeds[0]}, PCA)"] = name
    return plots


def online_sections(out: Path, jobs: Sequence[Job], run_metrics: dict) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """What only an online report has, as (title, markdown) sections and plots: the actions
    each row's observer took (``actions.json`` summed over seeds), the throughput of learner
    and collectors, and how a curious observer's error model changed (first seed's run)."""
    runs = [j for j in jobs if not j.reference]
    histograms: dict[str, dict[str, Any]] = {}
    for job in runs:
        record = load_actions(out / "runs" / job.folder)
        if record is None:
            continue
        kept = histograms.setdefault(job.label, {**record, "counts": np.zeros_like(np.asarray(record["counts"]))})
        kept["counts"] = kept["counts"] + np.asarray(record["counts"])
    sections, plots = [], {}
    if histograms:
        edges = next(iter(histograms.values()))["edges"]
        per_row = {label: dict(zip(h["columns"], np.asarray(h["counts"]).tolist(), strict=True)) for label, h in histograms.items()}
        action_histograms(per_row, edges, out / "actions.png", title="actions the learner trained on (one-step pairs, all seeds)")
        plots["actions taken, per action column (share per bin)"] = "actions.png"
        sections.append(("Actions taken", "Normalised actions of the one-step pairs the learner trained on, summed over seeds "
                         "(1 = the action's largest step).\n\n" + tables.markdown_actions(histograms)))  # fmt: skip
    throughput = tables.markdown_throughput(run_metrics)
    if throughput:
        sections.append(("Throughput", throughput))
    for job in runs:
        history_path = model_path_of(out / "runs" / job.folder).with_name(HISTORY_FILE)
        if job.seed != runs[0].seed or not history_path.is_file():
            continue
        history = json.loads(history_path.read_text())
        if not history:
            continue
        name = f"error_model_{job.label.replace('@', '_')}.png"
        error_model_history(history, out / name, title=f"{job.label} seed {job.seed}: the curious observer's error model")
        plots[f"error model of {job.label} over training (seed {job.seed})"] = name
        first, last = history[0], history[-1]
        sections.append((f"Error model of {job.label}", f"{len(history)} publications from learner step "
                         f"{first['learner_step']} to {last['learner_step']}; mean predicted error "
                         f"{first['mean_error']:.4f} -> {last['mean_error']:.4f}, noise sd {first['noise_std']:.4f} -> "
                         f"{last['noise_std']:.4f} (seed {job.seed}; `{history_path.relative_to(out)}` has every publication)."))  # fmt: skip
    return sections, plots


def saved_run_configs(out: Path, jobs: Sequence[Job]) -> dict[str, dict[str, Any]]:
    """Flat resolved configs of the report's training runs as saved in their folders."""
    paths = {job.folder: out / "runs" / job.folder / "config.yaml" for job in jobs if not job.reference}
    return {folder: flatten(OmegaConf.to_container(OmegaConf.load(path), resolve=True))
            for folder, path in paths.items() if path.exists()}  # fmt: skip


def setup_lines(cfg: DictConfig, shared: DictConfig, dataset: Path | None, user: Sequence[str],
                run_metrics: dict, references: Sequence[str], total_s: float) -> list[str]:  # fmt: skip
    """The report's "Setup" bullets: what ran, on which data, evaluated how, against what."""
    r, env, ev = cfg.report, shared.env, shared.eval
    walls = [m["wall_s"] for by_seed in run_metrics.values() for m in by_seed.values() if "wall_s" in m]
    first = next(iter(next(iter(run_metrics.values())).values()))
    data = f"one shared dataset of {int(r.dataset_steps)} transitions ({dataset})" if dataset else "online collectors"
    moved = {m: tables.cell([run.get("encoder_weight_change", math.nan) for run in by_seed.values()])
             for m, by_seed in run_metrics.items() if m.partition("@")[0] in r.methods}  # fmt: skip
    variants = f"; under each of the variants {', '.join(f'{v} {list(o)}' for v, o in r.variants.items())}" if r.variants else ""
    return [
        f"methods {', '.join(map(str, r.methods))}; seeds {list(r.seeds)}; {int(r.steps)} steps of {int(r.batch_size)} pairs"
        f"{variants}; encoder `{r.encoder}`; each method's pairs (method.time_offset) and settings: next section",
        f"data: {data}; env `{env.id}`, action set `{env.action_set}`, {int(env.image_size)}x{int(env.image_size)} px",
        f"evaluation: {int(ev.views_per_object)} views per object and split, pose MLP early-stopped within "
        f"{int(ev.probe_epochs)} epochs, kNN k={int(ev.knn_k)}, view seed {int(ev.seed)}, "
        f"objects per split {ev.objects_limit if ev.objects_limit is not None else 'all'} "
        "(each run's exact settings: next section)",
        f"user overrides passed to every run: {list(user) if user else 'none'}",
        "encoder weight change from its seeded initialisation, ||w - w_init|| / ||w_init|| (mean ± sd over seeds): "
        + ", ".join(f"{m} {c.mean:.3f} ± {c.std:.3f}" for m, c in moved.items()),
        f"device {first.get('device', '?')}; training wall time per run "
        f"{np.mean(walls) if walls else math.nan:.0f} s (mean); this invocation {total_s:.0f} s",
        "references (the same evaluation code; only `random` varies with the seed): "
        + "; ".join(f"`{ref}` = {REFERENCE_MEANING[ref]}" for ref in references),
        "shortcut_colour_top1: colour histograms retrieve a trained pair's positive among 64 this often "
        "(chance 0.016); high means the pairs are solvable by colour matching",
    ]


def build_report(cfg: DictConfig, user: Sequence[str] = ()) -> dict[str, Any]:
    """Run (or resume) every job of the report in ``cfg.run_dir``, then write its files.

    ``user`` are the overrides given to the app, passed on to every run. Returns the
    ``report.json`` payload.
    """
    started = time.perf_counter()
    r, out, user = cfg.report, Path(cfg.run_dir).resolve(), passed_through(user)
    out.mkdir(parents=True, exist_ok=True)
    methods, seeds, variants = [str(m) for m in r.methods], [int(s) for s in r.seeds], list(r.variants)
    if not methods or not seeds:
        raise ValueError(f"report.methods={methods}, report.seeds={seeds}: both need at least one entry")
    dataset = write_dataset(cfg, user, out)
    timings = {"dataset_s": time.perf_counter() - started}
    per_seed: dict[str, dict[int, dict[str, float]]] = {}
    run_metrics: dict[str, dict[int, dict[str, Any]]] = {}
    histories: dict[str, list[list[dict[str, float]]]] = {}
    jobs = report_jobs(methods, seeds, variants)
    # One bar over the whole report in training steps (an evaluation counts EVALUATION_STEPS),
    # so its ETA covers every run and reference still to come.
    with tqdm(total=sum(job_weight(j, cfg) for j in jobs), desc="report", unit="step",
              position=0, dynamic_ncols=True) as bar:  # fmt: skip
        for k, job in enumerate(jobs):
            bar.set_postfix_str(f"job {k + 1}/{len(jobs)}: {job.folder}")
            done = bar.n + job_weight(job, cfg)
            metrics = run_job(job, cfg, user, dataset, out, callbacks=[StepProgress(bar)])
            bar.update(done - bar.n)
            per_seed.setdefault(job.label, {})[job.seed] = {k: float(v) for k, v in metrics["eval"].items()}
            run_metrics.setdefault(job.label, {})[job.seed] = metrics
            history = out / "runs" / job.folder / "loss_history.json"
            if history.exists():
                histories.setdefault(job.label, []).append(json.loads(history.read_text()))
    timings["runs_s"] = time.perf_counter() - started - timings["dataset_s"]

    references = [job.method for job in report_jobs([], seeds[:1])]
    # Env, eval and view settings as every run sees them (report.overrides and the user's applied).
    shared = compose_in_app(run_overrides(cfg, user, methods[0], seeds[0], dataset), out)
    ceilings = [label for label in per_seed if r.ceiling is not None and label.partition("@")[0] == r.ceiling]
    learnable, not_learnable = tables.learnable_columns(per_seed, ceilings[-1]) if ceilings else ([], [])
    per_seed = tables.with_learnable_headline(per_seed, learnable) if ceilings else per_seed
    table = tables.summarise(per_seed, per_column_order(envs.world_module(shared.env.id), shared.env.action_set))
    targets = tables.check_targets(per_seed, r.ours, r.baseline)
    configs = saved_run_configs(out, jobs)
    plots = write_plots(out, table, histories, [j.label for j in jobs if not j.reference and j.seed == seeds[0]], seeds,
                        max(job_steps(j, cfg) for j in jobs))  # fmt: skip
    comparisons = expanded_comparisons([list(pair) for pair in r.comparisons], variants, per_seed)
    sections = []
    if r.curve_key is not None and variants:
        x_of = curve_positions(jobs, configs, r.curve_key)
        plots[f"scores against {r.curve_key} (mean ± sd over seeds)"] = write_curves(out, per_seed, x_of, methods, r.curve_key)
        curve_tables = [tables.markdown_curve(per_seed, a, b, x_of, r.curve_key) for a, b in r.comparisons
                        if all(f"{m}@{v}" in per_seed for m in (a, b) for v in variants)]  # fmt: skip
        sections.append((f"Against {r.curve_key}", "\n\n".join(curve_tables)))
    online, online_plots = online_sections(out, jobs, run_metrics)
    sections += online
    plots.update(online_plots)
    write_views_grid(shared, dataset, out / "views.png")
    plots["training views (one episode per row)"] = "views.png"
    timings["total_s_this_invocation"] = time.perf_counter() - started
    setup = setup_lines(cfg, shared, dataset, user, run_metrics, references, timings["total_s_this_invocation"])
    paired = "\n\n".join(tables.markdown_paired(per_seed, a, b) for a, b in comparisons)
    text = tables.markdown_report(table, targets, title=f"CIPER report ({out.name})", setup=setup,
                                  references=references, plots=plots, paired=paired,
                                  settings=tables.settings_lines(configs), ceiling=ceilings[-1] if ceilings else None,
                                  not_learnable=not_learnable, extra_sections=sections)  # fmt: skip
    (out / "report.md").write_text(text)
    payload = tables.report_payload(
        per_seed, table, targets, config={"report": _plain(cfg.report), "user_overrides": user},
        timings=timings, dataset=str(dataset) if dataset else None, plots=plots,
        learnable={"ceiling": ceilings[-1] if ceilings else None, "learnable": learnable, "not_learnable": not_learnable},
        runs={m: {str(s): {k: v for k, v in met.items() if k != "eval"} for s, met in by_seed.items()}
              for m, by_seed in run_metrics.items()},
    )  # fmt: skip
    write_json_atomic(out / "report.json", payload)
    # Like every app's run folder: the headline numbers as metrics.json (report.json has all).
    headline = {key: payload[key] for key in ("table", "targets", "timings", "learnable") if key in payload}
    write_json_atomic(out / "metrics.json", headline)
    return payload


def expanded_comparisons(comparisons: list[list[str]], variants: Sequence[str], per_seed: dict) -> list[tuple[str, str]]:
    """The ``[a, b]`` pairs of ``report.comparisons`` whose rows exist; a pair of plain method
    names stands for the same pair under every variant."""
    out = []
    for a, b in comparisons:
        pairs = [(a, b)] if "@" in a + b or not variants else [(f"{a}@{v}", f"{b}@{v}") for v in variants]
        out += [(x, y) for x, y in pairs if x in per_seed and y in per_seed]
    return out


def curve_positions(jobs: Sequence[Job], configs: dict[str, dict[str, Any]], key: str) -> dict[str, float]:
    """label -> the value of config ``key`` in its runs (as saved), for every variant's label."""
    positions: dict[str, float] = {}
    for job in jobs:
        if not job.reference and job.folder in configs and key in configs[job.folder]:
            positions[job.label] = float(configs[job.folder][key])
    return positions


def write_curves(out: Path, per_seed: dict, x_of: dict[str, float], methods: Sequence[str], key: str) -> str:
    """The headline scores of each method against ``key`` (one line per method, seeds' spread)."""
    metrics = tables.measured_metrics(per_seed, list(x_of), tables.CURVE_METRICS)
    curves: dict[str, dict[str, list[tuple[float, float, float]]]] = {}
    for method in methods:
        for label, x in sorted(((lab, x) for lab, x in x_of.items() if lab.partition("@")[0] == method), key=lambda t: t[1]):
            for metric in metrics:
                c = tables.cell([values.get(metric, math.nan) for values in per_seed[label].values()])
                if c.n:
                    curves.setdefault(metric, {}).setdefault(method, []).append((x, c.mean, c.std))
    score_curves(curves, out / "curves.png", x_label=key)
    return "curves.png"


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True)
