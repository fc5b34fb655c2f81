"""``ciper-report``: train every method of ``report.methods`` on the same data and budget, compare.

One shared dataset is written once into the report's folder (``report.mode=offline``), then
each (method, seed) run trains ``report.steps`` steps in ``runs/<method>_seed<k>/`` with a
config composed from the same tree: ``report.overrides`` (the preset's evaluation budget),
then the user's own overrides given to ``ciper-report`` (``env.*``, ``optim.*`` ...), then the
keys the report fixes for a fair comparison (method, seed, steps, batch, encoder, data).
Every reference of ``learner.evaluation.REFERENCES`` (the true pose, noise, nuisances, raw
pixels, the untrained encoder of each seed) is scored by the same evaluation code. Finished runs (a
``metrics.json`` with ``completed``) are skipped and unfinished ones resume from their
checkpoint, so rerunning a killed report with the same ``hydra.run.dir`` finishes it.
``report.md`` (table, target checks, plots), ``report.json`` and the PNGs land in the
report's folder, ``runs/ciper-report/<preset>/`` unless ``hydra.run.dir`` is given, so a
plain rerun of the same command resumes; ``learner.report`` does the pure aggregation.

Examples::

    ciper-report                                   # report=quick: 4 methods x 3 seeds on CPU
    ciper-report report=static                     # digits, <= 90 min on 2 cores (README)
    ciper-report report=objects                    # the active observer, <= 90 min on 2 cores
    ciper-report report=paper train.device=cuda
    ciper-report hydra.run.dir=runs/report1        # rerun the same line to resume report1
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from agent.atomic_files import write_json_atomic
from conf.app import hydra_app, override_key
from conf.compose import compose_config
from learner import report
from learner.plots import loss_curves, metric_bars

# References scored beside the methods by the same code: the untrained encoder once per
# seed (the exact initial weights of that seed's runs), the deterministic ones once.
PER_SEED_REFERENCES = ("random",)
# An evaluation's share of the progress bar, in training steps: in the pilot (docs/pilot_sweep.md)
# one took 65-110 s where a step of the static preset took ~1.1 s, i.e. 60-100 steps' time.
EVALUATION_STEPS = 80
# Keys the report sets itself; the same key among the user's overrides is replaced.

def passed_through(user_overrides: Sequence[str]) -> list[str]:
    """The user's overrides that go on to every run: not the report's own, Hydra's or the run folder."""
    return [o for o in user_overrides
            if not override_key(o).startswith(("report", "hydra")) and override_key(o) != "run_dir"]  # fmt: skip


def merged_overrides(*layers: Sequence[str]) -> list[str]:
    """Overrides of all layers, a later layer replacing an earlier one's value of the same key
    (Hydra refuses some duplicate keys, e.g. a group chosen twice)."""
    by_key: dict[str, str] = {}
    for layer in layers:
        for override in layer:
            by_key.pop(override_key(override), None)
            by_key[override_key(override)] = override
    return list(by_key.values())


def run_overrides(cfg: DictConfig, user: Sequence[str], method: str, seed: int, dataset: Path | None) -> list[str]:
    """The overrides that compose run (``method``, ``seed``) of the report."""
    r = cfg.report
    fixed = [f"method={method}", f"train.seed={seed}", f"train.steps={int(r.steps)}",
             f"train.batch_size={int(r.batch_size)}", f"model.encoder={r.encoder}", f"train.mode={r.mode}",
             "train.evaluate=true"]  # fmt: skip
    if dataset is not None:
        fixed.append(f"train.dataset={dataset}")
    if method == "simclr_tt":
        fixed.append(f"method.time_offset={int(r.simclr_tt_offset)}")
    if method == "simclr":
        fixed.append(f"method.time_offset={int(r.simclr_offset)}")
    return merged_overrides(list(r.overrides), user, fixed)


def compose_in_app(overrides: Sequence[str], run_dir: Path) -> DictConfig:
    """``compose_config`` from inside a running Hydra app.

    ``compose_config`` initialises Hydra, which refuses while the app's own Hydra is
    initialised; the app's state is set aside for the call and put back afterwards.
    """
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    if not GlobalHydra.instance().is_initialized():
        return compose_config(list(overrides), run_dir=run_dir)
    backup = get_gh_backup()
    GlobalHydra.instance().clear()
    try:
        return compose_config(list(overrides), run_dir=run_dir)
    finally:
        restore_gh_from_backup(backup)


def user_overrides_of_app() -> list[str]:
    """The command-line overrides given to this app (empty outside a Hydra app)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def finished(run_dir: Path) -> dict[str, Any] | None:
    """The run's metrics if it completed and was evaluated, else None."""
    path = run_dir / "metrics.json"
    if not path.exists():
        return None
    metrics = json.loads(path.read_text())
    return metrics if metrics.get("completed") and "eval" in metrics else None


def check_same_config(run_dir: Path, run_cfg: DictConfig) -> None:
    """Refuse to reuse a run folder whose saved config differs from this report's: its
    results would silently describe another experiment."""
    saved_path = run_dir / "config.yaml"
    if not saved_path.exists():
        return
    saved = OmegaConf.to_container(OmegaConf.load(saved_path), resolve=True)
    wanted = OmegaConf.to_container(run_cfg, resolve=True)

    def flat(tree: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(tree, dict):
            return {prefix: tree}
        return {k: v for key, sub in tree.items() for k, v in flat(sub, f"{prefix}{key}.").items()}

    a, b = flat(saved), flat(wanted)
    differing = sorted(k for k in set(a) | set(b) if k != "run_dir." and a.get(k) != b.get(k))
    if differing:
        details = ", ".join(f"{k.rstrip('.')}: {a.get(k)!r} -> {b.get(k)!r}" for k in differing[:8])
        raise ValueError(
            f"{run_dir} holds a run made with another config ({details}); "
            "use another hydra.run.dir or delete that folder"
        )


def write_metrics(run_dir: Path, metrics: dict[str, Any]) -> None:
    write_json_atomic(run_dir / "metrics.json", metrics)  # a killed report never sees half a file


def evaluate_reference_run(name: str, cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Score reference ``name`` (``learner.evaluation.REFERENCES``) on the report's probe views."""
    from learner.evaluation import evaluate_reference

    started = time.perf_counter()
    scores = evaluate_reference(name, cfg, run_dir)
    return {"method": name, "completed": True, "eval": scores, "eval_s": time.perf_counter() - started}


def write_views_grid(cfg: DictConfig, dataset: Path | None, path: Path) -> Path:
    """Views of the training data as a grid: one episode (object) per row, steps as columns."""
    from agent.view_app import dataset_transitions, object_labels, rollout_transitions, view_grid

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


@dataclass(frozen=True)
class Job:
    """One row-maker of the report: a training run of ``method``, or a reference scored
    by the evaluation's code (``reference`` True), for one seed."""

    method: str
    seed: int
    reference: bool = False

    @property
    def folder(self) -> str:
        if not self.reference:
            return f"{self.method}_seed{self.seed}"
        return f"reference_{self.method}" + (f"_seed{self.seed}" if self.method in PER_SEED_REFERENCES else "")


def report_jobs(methods: Sequence[str], seeds: Sequence[int]) -> list[Job]:
    """Every method for every seed, then the references (the seeded one per seed)."""
    from learner.evaluation import REFERENCES

    jobs = [Job(m, s) for m in methods for s in seeds]
    return jobs + [Job(ref, s, reference=True) for ref in REFERENCES for s in (seeds if ref in PER_SEED_REFERENCES else seeds[:1])]


def job_weight(job: Job, steps: int) -> int:
    """``job``'s share of the report's progress bar, in training steps: a run's steps plus
    one evaluation, a reference one evaluation (``EVALUATION_STEPS``)."""
    return EVALUATION_STEPS + (0 if job.reference else steps)


class StepProgress:
    """A training callback that advances the report's bar by each step trained now (steps
    a resumed run had done before are added when the job ends)."""

    def __init__(self, bar: tqdm) -> None:
        self.bar, self.last = bar, None

    def on_step(self, step: int, learner: Any, pairs: Any) -> None:
        self.bar.update(step - (step - 1 if self.last is None else self.last))
        self.last = step


def run_job(job: Job, cfg: DictConfig, user: Sequence[str], dataset: Path | None, out: Path,
            callbacks: Sequence[Any] = ()) -> dict[str, Any]:  # fmt: skip
    """The metrics of ``job``: reused when its folder holds a finished run of the same config;
    ``callbacks`` go to ``learner.train.train`` (the report's progress)."""
    from learner.train import train

    run_dir = out / "runs" / job.folder
    base = "ciper" if job.reference else job.method  # references read the ciper run's env/eval/method
    run_cfg = compose_in_app(run_overrides(cfg, user, base, job.seed, dataset), run_dir)
    check_same_config(run_dir, run_cfg)
    metrics = finished(run_dir)
    if metrics is not None:
        return metrics
    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(run_cfg, run_dir / "config.yaml")  # the resolved config of every run
    if job.reference:
        metrics = evaluate_reference_run(job.method, run_cfg, run_dir)
        write_metrics(run_dir, metrics)
        return metrics
    metrics = train(run_cfg, run_dir, callbacks=callbacks)
    if not metrics.get("completed"):
        raise SystemExit(f"run {run_dir} stopped early ({metrics.get('stopped_by')}); "
                         "rerun ciper-report with the same hydra.run.dir to resume")  # fmt: skip
    return metrics


def write_dataset(cfg: DictConfig, user: Sequence[str], out: Path) -> Path | None:
    """The report's shared dataset (``report.mode=offline``; reused when complete), or None online."""
    r = cfg.report
    if str(r.mode) == "online":
        return None
    if str(r.mode) != "offline":
        raise ValueError(f"report.mode={r.mode!r}: expected 'offline' or 'online'")
    from agent.rollout_app import rollout

    dataset = out / "dataset"
    layers = merged_overrides(list(r.overrides), user, [f"dataset.path={dataset}", f"dataset.steps={int(r.dataset_steps)}"])
    rollout(compose_in_app(layers, out))
    return dataset


def write_plots(out: Path, table: dict, histories: dict, methods: Sequence[str], seeds: Sequence[int], steps: int) -> dict[str, str]:
    """Loss curves, headline and per-column metric bars, embeddings; caption -> file name."""
    plots: dict[str, str] = {}
    curves = report.mean_loss_curves(histories, smooth=max(1, steps // 30))
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
    for method, folder in [*((m, f"{m}_seed{seeds[0]}") for m in methods), ("random", f"reference_random_seed{seeds[0]}")]:
        source = out / "runs" / folder / "embedding_test_objects.png"
        if source.exists():
            shutil.copyfile(source, out / f"embedding_{method}.png")
            plots[f"embedding of held-out objects, {method} (seed {seeds[0]}, PCA)"] = f"embedding_{method}.png"
    return plots


def saved_run_configs(out: Path, jobs: Sequence[Job]) -> dict[str, dict[str, Any]]:
    """Flat resolved configs of the report's training runs as saved in their folders."""
    paths = {job.folder: out / "runs" / job.folder / "config.yaml" for job in jobs if not job.reference}
    return {folder: report.flat_config(OmegaConf.to_container(OmegaConf.load(path), resolve=True))
            for folder, path in paths.items() if path.exists()}  # fmt: skip


def setup_lines(cfg: DictConfig, shared: DictConfig, dataset: Path | None, user: Sequence[str],
                run_metrics: dict, references: Sequence[str], total_s: float) -> list[str]:  # fmt: skip
    """The report's "Setup" bullets: what ran, on which data, evaluated how, against what."""
    from learner.evaluation import REFERENCE_MEANING

    r, env, ev = cfg.report, shared.env, shared.eval
    walls = [m["wall_s"] for by_seed in run_metrics.values() for m in by_seed.values() if "wall_s" in m]
    first = next(iter(next(iter(run_metrics.values())).values()))
    data = f"one shared dataset of {int(r.dataset_steps)} transitions ({dataset})" if dataset else "online collectors"
    moved = {m: report.cell([run.get("encoder_weight_change", math.nan) for run in by_seed.values()])
             for m, by_seed in run_metrics.items() if m in r.methods}  # fmt: skip
    return [
        f"methods {', '.join(map(str, r.methods))}; seeds {list(r.seeds)}; {int(r.steps)} steps of {int(r.batch_size)} pairs; "
        f"encoder `{r.encoder}`; simclr_tt positives up to {int(r.simclr_tt_offset)} steps apart",
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
    methods, seeds = [str(m) for m in r.methods], [int(s) for s in r.seeds]
    if not methods or not seeds:
        raise ValueError(f"report.methods={methods}, report.seeds={seeds}: both need at least one entry")
    dataset = write_dataset(cfg, user, out)
    timings = {"dataset_s": time.perf_counter() - started}
    per_seed: dict[str, dict[int, dict[str, float]]] = {}
    run_metrics: dict[str, dict[int, dict[str, Any]]] = {}
    histories: dict[str, list[list[dict[str, float]]]] = {}
    jobs = report_jobs(methods, seeds)
    # One bar over the whole report in training steps (an evaluation counts EVALUATION_STEPS),
    # so its ETA covers every run and reference still to come.
    with tqdm(total=sum(job_weight(j, int(r.steps)) for j in jobs), desc="report", unit="step",
              position=0, dynamic_ncols=True) as bar:  # fmt: skip
        for k, job in enumerate(jobs):
            bar.set_postfix_str(f"job {k + 1}/{len(jobs)}: {job.folder}")
            done = bar.n + job_weight(job, int(r.steps))
            metrics = run_job(job, cfg, user, dataset, out, callbacks=[StepProgress(bar)])
            bar.update(done - bar.n)
            per_seed.setdefault(job.method, {})[job.seed] = {k: float(v) for k, v in metrics["eval"].items()}
            run_metrics.setdefault(job.method, {})[job.seed] = metrics
            history = out / "runs" / job.folder / "loss_history.json"
            if history.exists():
                histories.setdefault(job.method, []).append(json.loads(history.read_text()))
    timings["runs_s"] = time.perf_counter() - started - timings["dataset_s"]

    references = [job.method for job in report_jobs([], seeds[:1])]
    table, targets = report.summarise(per_seed), report.check_targets(per_seed)
    plots = write_plots(out, table, histories, methods, seeds, int(r.steps))
    # Env, eval and view settings as every run sees them (report.overrides and the user's applied).
    shared = compose_in_app(run_overrides(cfg, user, methods[0], seeds[0], dataset), out)
    write_views_grid(shared, dataset, out / "views.png")
    plots["training views (one episode per row)"] = "views.png"
    timings["total_s_this_invocation"] = time.perf_counter() - started
    setup = setup_lines(cfg, shared, dataset, user, run_metrics, references, timings["total_s_this_invocation"])
    paired = report.markdown_paired(per_seed) if {"ciper", "simclr"} <= set(per_seed) else ""
    text = report.markdown_report(table, targets, title=f"CIPER report ({out.name})", setup=setup,
                                  references=references, plots=plots, paired=paired,
                                  settings=report.settings_lines(saved_run_configs(out, jobs)))  # fmt: skip
    (out / "report.md").write_text(text)
    payload = report.report_payload(
        per_seed, table, targets, config={"report": _plain(cfg.report), "user_overrides": user},
        timings=timings, dataset=str(dataset) if dataset else None, plots=plots,
        runs={m: {str(s): {k: v for k, v in met.items() if k != "eval"} for s, met in by_seed.items()}
              for m, by_seed in run_metrics.items()},
    )  # fmt: skip
    write_json_atomic(out / "report.json", payload)
    # Like every app's run folder: the headline numbers as metrics.json (report.json has all).
    headline = {key: payload[key] for key in ("table", "targets", "timings") if key in payload}
    write_json_atomic(out / "metrics.json", headline)
    return payload


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True)


def _task(cfg: DictConfig) -> None:
    """Compare methods on one dataset and budget (see ``report.*``); files go to the run folder."""
    payload = build_report(cfg, user_overrides_of_app())
    out = Path(cfg.run_dir).resolve()
    for check in payload["targets"]:
        verdict = {True: "PASS", False: "FAIL", None: "UNDECIDED"}[check["passed"]]
        print(f"{verdict:9s} {check['name']}: {check['detail']}")
    print(f"report: {out / 'report.md'}")


# A plain rerun of the same command finds the earlier runs: one folder per preset.
main = hydra_app(_task, run_dir="runs/ciper-report/${hydra:runtime.choices.report}")

if __name__ == "__main__":
    main()
