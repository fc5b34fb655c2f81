"""Pure aggregation behind ``ciper-report``: per-seed metrics in, tables, target checks and markdown out.

Nothing here trains, renders or reads a config: the builder (``learner.report.builder``) collects
``metrics["eval"]`` of every run as ``per_seed[method][seed] = {metric: value}`` and the
loss histories, and this module turns them into mean ± std cells (sample std over seeds,
nan values left out), averaged loss curves, the automatic checks of the issue's targets
(CIPER against SimCLR) and the markdown of ``report.md``, so all of it is tested on
synthetic numbers without a model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

PerSeed = Mapping[str, Mapping[int, Mapping[str, float]]]  # method -> seed -> metric -> value

# Every score the evaluation returns grows with quality (accuracies, R^2, silhouette, purity,
# rank correlation of feature and pose distance); the table states it per column.
HIGHER_IS_BETTER: dict[str, bool] = {
    "category_top1_linear": True,
    "category_top1_knn": True,
    "identity_top1_linear": True,
    "relative_pose_r2": True,
    # the same mean over the columns the supervised ceiling reads (``learnable_columns``)
    "relative_pose_r2_learnable": True,
    "absolute_pose_r2": True,
    "object_silhouette": True,
    "object_knn_purity": True,
    "within_object_pose_spearman": True,
    # How often colour histograms retrieve a trained pair's positive among 64: a shortcut
    # the contrastive loss can take, so lower is better (chance 1/64).
    "shortcut_colour_top1": False,
}

# Thresholds of the targets (see ``check_targets``).
RELATIVE_POSE_MARGIN = 0.2  # CIPER's relative-pose R^2 at least SimCLR's + 0.2
CATEGORY_TOLERANCE = 0.02  # CIPER's category top-1 at most 2 points below SimCLR's
CLEARLY_ABOVE_SDS = 2.0  # paired mean difference above this many sample SDs of the difference
LEARNING_MARGIN = 0.10  # the baseline's category top-1 at least 10 points above raw pixels
# A relative-pose column that the supervised ceiling (an encoder trained with the labels on the
# same data and budget) reads below this R^2 is not learnable at the budget: it says nothing
# about any self-supervised method and is reported apart.
LEARNABLE_R2 = 0.3
RELATIVE_COLUMN = "relative_pose_r2/"
# Config sections whose values the report lists per run (what every run trained and was scored with).
SETTING_SECTIONS = ("env", "method", "model", "optim", "train", "eval")


@dataclass(frozen=True)
class MetricCell:
    """Mean and sample standard deviation (ddof=1; 0 for one value) of the finite values."""

    mean: float
    std: float
    n: int  # finite values aggregated


@dataclass(frozen=True)
class TargetCheck:
    """One target of the issue, checked on the numbers: passed is None when undecidable."""

    name: str
    requirement: str
    passed: bool | None
    detail: str


def cell(values: Sequence[float]) -> MetricCell:
    """Mean ± std of the finite ``values`` (nan, nan, 0 when none is finite)."""
    finite = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if finite.size == 0:
        return MetricCell(math.nan, math.nan, 0)
    std = float(finite.std(ddof=1)) if finite.size > 1 else 0.0
    return MetricCell(float(finite.mean()), std, int(finite.size))


def metric_order(per_seed: PerSeed, column_order: Sequence[str] = ()) -> list[str]:
    """Known metrics in their fixed order, then the per-column ones in ``column_order`` (the
    world's order; runs read back from a key-sorted ``metrics.json`` lost it), then any other
    metric in order of appearance."""
    seen: list[str] = []
    for by_seed in per_seed.values():
        for values in by_seed.values():
            seen += [name for name in values if name not in seen]
    ordered = [name for name in (*HIGHER_IS_BETTER, *column_order) if name in seen]
    return ordered + [n for n in seen if n not in ordered]


def summarise(per_seed: PerSeed, column_order: Sequence[str] = ()) -> dict[str, dict[str, MetricCell]]:
    """``table[method][metric]`` = the cell over that method's seeds (metrics in
    :func:`metric_order`)."""
    metrics = metric_order(per_seed, column_order)
    return {
        method: {name: cell([values.get(name, math.nan) for values in by_seed.values()]) for name in metrics}
        for method, by_seed in per_seed.items()
    }


def learnable_columns(per_seed: PerSeed, ceiling: str) -> tuple[list[str], list[str]]:
    """The relative-pose columns (``relative_pose_r2/<column>``) that ``ceiling`` reads at a mean
    R² >= ``LEARNABLE_R2`` over its seeds, and those it does not (both empty without it)."""
    row = summarise({ceiling: per_seed[ceiling]}).get(ceiling, {}) if ceiling in per_seed else {}
    columns = [k for k in row if k.startswith(RELATIVE_COLUMN) and row[k].n > 0]
    learnable = [k for k in columns if row[k].mean >= LEARNABLE_R2]
    return learnable, [k for k in columns if k not in learnable]


def with_learnable_headline(per_seed: PerSeed, learnable: Sequence[str]) -> dict[str, dict[int, dict[str, float]]]:
    """``per_seed`` with ``relative_pose_r2_learnable``: each run's mean relative-pose R² over
    the ``learnable`` columns only (nan where a run lacks them or none is learnable)."""
    out: dict[str, dict[int, dict[str, float]]] = {}
    for method, by_seed in per_seed.items():
        out[method] = {}
        for seed, values in by_seed.items():
            scores = [values[k] for k in learnable if k in values and math.isfinite(values[k])]
            headline = float(np.mean(scores)) if learnable and len(scores) == len(learnable) else math.nan
            out[method][seed] = {**values, "relative_pose_r2_learnable": headline}
    return out


def paired_differences(per_seed: PerSeed, metric: str, ours: str, baseline: str) -> np.ndarray:
    """ours - baseline per seed both ran (finite values only), in seed order."""
    a, b = per_seed.get(ours, {}), per_seed.get(baseline, {})
    out = []
    for seed in sorted(set(a) & set(b)):
        x, y = a[seed].get(metric, math.nan), b[seed].get(metric, math.nan)
        if math.isfinite(x) and math.isfinite(y):
            out.append(x - y)
    return np.asarray(out, dtype=np.float64)


def paired_cells(per_seed: PerSeed, ours: str, baseline: str) -> dict[str, tuple[MetricCell, np.ndarray]]:
    """Per metric both ran: the cell (mean ± sample sd) of the per-seed differences
    ours - baseline, and those differences in seed order."""
    a, b = per_seed.get(ours, {}), per_seed.get(baseline, {})
    names = [m for m in metric_order({ours: a, baseline: b}) if any(m in v for v in a.values()) and any(m in v for v in b.values())]
    out = {}
    for name in names:
        d = paired_differences(per_seed, name, ours, baseline)
        out[name] = (cell(d.tolist()), d)
    return out


def markdown_paired(per_seed: PerSeed, ours: str, baseline: str) -> str:
    """A table of the paired per-seed differences ours - baseline: each seed's difference,
    mean ± sample sd, and mean / sd (how many spreads the mean lies from 0)."""
    lines = [f"| metric | {ours} − {baseline} per seed | mean ± sd | mean / sd |", "|---|---|---:|---:|"]
    for name, (c, d) in paired_cells(per_seed, ours, baseline).items():
        ratio = c.mean / c.std if c.n > 1 and c.std > 0 else math.nan
        lines.append(f"| {name} | {', '.join(f'{x:+.3f}' for x in d) or 'n/a'} | {_format_cell(c, False)} | "
                     f"{'n/a' if math.isnan(ratio) else f'{ratio:+.1f}'} |")  # fmt: skip
    return "\n".join(lines)


# What a curve report follows along its key: the headlines and the hierarchy, where what the
# prediction head adds first showed (report=scaling: object silhouette, within-episode Spearman).
CURVE_METRICS = ("relative_pose_r2", "relative_pose_r2_learnable", "category_top1_linear", "object_silhouette",
                 "within_object_pose_spearman")  # fmt: skip


def measured_metrics(per_seed: PerSeed, labels: Sequence[str], metrics: Sequence[str] = CURVE_METRICS) -> list[str]:
    """Those of ``metrics`` that some seed of some of ``labels`` has (``relative_pose_r2_learnable``
    needs a ceiling in the report)."""
    return [m for m in metrics if any(m in v for label in labels for v in per_seed.get(label, {}).values())]


def markdown_curve(per_seed: PerSeed, ours: str, baseline: str, x_of: Mapping[str, float], key: str,
                   metrics: Sequence[str] = CURVE_METRICS) -> str:
    """One row per variant of ``ours`` and ``baseline`` in order of ``x_of`` (``key``'s value):
    each method's mean ± sd and the paired per-seed difference ``ours - baseline`` of those of
    ``metrics`` the runs have (does the difference grow, hold or vanish along ``key``?)."""
    rows = sorted((x, label.partition("@")[2]) for label, x in x_of.items() if label.partition("@")[0] == ours)
    metrics = measured_metrics(per_seed, [f"{m}@{v}" for _, v in rows for m in (ours, baseline)], metrics)
    lines = [f"| {key} | " + " | ".join(f"{m}: {ours} / {baseline} / {ours} − {baseline} per seed (mean ± sd)" for m in metrics) + " |",
             "|---:|" + "---|" * len(metrics)]  # fmt: skip
    for x, variant in rows:
        a, b = f"{ours}@{variant}", f"{baseline}@{variant}"
        cells = []
        for metric in metrics:
            ca = cell([v.get(metric, math.nan) for v in per_seed.get(a, {}).values()])
            cb = cell([v.get(metric, math.nan) for v in per_seed.get(b, {}).values()])
            d = paired_differences(per_seed, metric, a, b)
            cd = cell(d.tolist())
            cells.append(f"{_format_cell(ca, False)} / {_format_cell(cb, False)} / "
                         f"{', '.join(f'{v:+.3f}' for v in d) or 'n/a'} ({_format_cell(cd, False)})")  # fmt: skip
        lines.append(f"| {x:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def action_summary(counts: Sequence[Sequence[float]], edges: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Per column of a histogram of normalised actions (``counts[column][bin]`` over ``edges``):
    the mean |action| and the share of actions with |action| below 0.1 (standing still)."""
    counts = np.asarray(counts, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    centres = 0.5 * (edges[1:] + edges[:-1])
    total = np.maximum(counts.sum(axis=1), 1.0)
    mean_abs = (counts * np.abs(centres)).sum(axis=1) / total
    still = (counts * (np.abs(centres) < 0.1)).sum(axis=1) / total
    return mean_abs, still


def markdown_actions(histograms: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per report row (``histograms[row]`` = an ``actions.json`` record, counts summed
    over seeds), one column per action column: mean |normalised action| and the share of
    near-zero actions (|a| < 0.1), so over- and under-sampled actions show at a glance."""
    if not histograms:
        return ""
    columns = list(next(iter(histograms.values()))["columns"])
    lines = ["| row | " + " | ".join(f"{c}: mean \\|a\\| / share \\|a\\|<0.1" for c in columns) + " |",
             "|---|" + "---:|" * len(columns)]  # fmt: skip
    for row, record in histograms.items():
        mean_abs, still = action_summary(record["counts"], record["edges"])
        lines.append(f"| {row} | " + " | ".join(f"{m:.2f} / {z:.0%}" for m, z in zip(mean_abs, still, strict=True)) + " |")
    return "\n".join(lines)


def markdown_throughput(run_metrics: Mapping[str, Mapping[int, Mapping[str, Any]]]) -> str:
    """Per online row (mean ± sd over seeds): the learner's images/s, the share of its wall
    time spent waiting for data, and the collectors' views/s, so a reader can see whether a
    comparison is decided by throughput."""
    lines = ["| row | learner images/s | data wait | collector views/s | wall s |", "|---|---:|---:|---:|---:|"]
    for row, by_seed in run_metrics.items():
        runs = [m for m in by_seed.values() if "views_collected" in m.get("data", {})]
        if not runs:
            continue
        images = cell([m["images_per_s"] for m in runs])
        wait = cell([100 * m["data_wait_fraction"] for m in runs])
        views = cell([m["data"]["views_collected"] / m["wall_s"] for m in runs])
        wall = cell([m["wall_s"] for m in runs])
        lines.append(f"| {row} | {images.mean:.0f} ± {images.std:.0f} | {wait.mean:.1f} ± {wait.std:.1f}% | "
                     f"{views.mean:.0f} ± {views.std:.0f} | {wall.mean:.0f} |")  # fmt: skip
    return "\n".join(lines) if len(lines) > 2 else ""


def settings_lines(configs: Mapping[str, Mapping[str, Any]], sections: Sequence[str] = SETTING_SECTIONS) -> list[str]:
    """What every run used, from their saved resolved configs (``configs[run] = flat
    config``): one line per section of the values all runs share, then one line per key
    whose value differs, naming the runs of each value."""
    if not configs:
        return []
    keys = sorted({k for flat in configs.values() for k in flat if k.split(".")[0] in sections})
    shared = {k: next(iter(configs.values())).get(k) for k in keys
              if len({repr(flat.get(k)) for flat in configs.values()}) == 1}  # fmt: skip
    lines = []
    for section in sections:
        items = [f"{k.split('.', 1)[1]}={shared[k]}" for k in keys if k in shared and k.split(".")[0] == section]
        if items:
            lines.append(f"`{section}` (all {len(configs)} runs): " + ", ".join(items))
    for k in (k for k in keys if k not in shared):
        by_value: dict[str, list[str]] = {}
        for run, flat in configs.items():
            by_value.setdefault(repr(flat[k]) if k in flat else "(no such key)", []).append(run)
        lines.append(f"`{k}` differs: " + "; ".join(f"{v} in {', '.join(runs)}" for v, runs in by_value.items()))
    return lines


def check_targets(per_seed: PerSeed, ours: str, baseline: str, pixels: str = "pixels") -> list[TargetCheck]:
    """The issue's targets for ``ours`` against ``baseline``, decided on seed means.

    1. relative-pose R^2 (equivariance): ours >= baseline + ``RELATIVE_POSE_MARGIN``;
    2. linear category top-1 (invariance): ours >= baseline - ``CATEGORY_TOLERANCE``;
    3. within-object pose Spearman (hierarchy): *clearly* above, defined on the per-seed
       paired differences d = ours - baseline as mean(d) > 0 and mean(d) >
       ``CLEARLY_ABOVE_SDS`` * sd(d) (sample sd); it needs two or more paired seeds;
    4. learning: the baseline's linear category top-1 >= the ``pixels`` reference's +
       ``LEARNING_MARGIN``; without it the invariance target compares untrained encoders.
    A target whose numbers are missing is undecidable (passed None), never a pass.
    """
    table = summarise({m: per_seed[m] for m in (ours, baseline) if m in per_seed})

    def mean_of(method: str, metric: str) -> float:
        return table.get(method, {}).get(metric, MetricCell(math.nan, math.nan, 0)).mean

    a, b = mean_of(ours, "relative_pose_r2"), mean_of(baseline, "relative_pose_r2")
    equivariance = _threshold_check(
        "equivariance", f"relative_pose_r2: {ours} >= {baseline} + {RELATIVE_POSE_MARGIN:g}", a, b + RELATIVE_POSE_MARGIN,
        f"{ours} {a:.3f} vs {baseline} {b:.3f} + {RELATIVE_POSE_MARGIN:g} = {b + RELATIVE_POSE_MARGIN:.3f} (difference {a - b:+.3f})",
    )  # fmt: skip
    a, b = mean_of(ours, "category_top1_linear"), mean_of(baseline, "category_top1_linear")
    invariance = _threshold_check(
        "invariance", f"category_top1_linear: {ours} >= {baseline} - {100 * CATEGORY_TOLERANCE:g} points", a, b - CATEGORY_TOLERANCE,
        f"{ours} {100 * a:.1f}% vs {baseline} {100 * b:.1f}% (difference {100 * (a - b):+.1f} points)",
    )  # fmt: skip
    p = cell([v.get("category_top1_linear", math.nan) for v in per_seed.get(pixels, {}).values()]).mean
    learning = _threshold_check(
        "learning", f"category_top1_linear: {baseline} >= {pixels} + {100 * LEARNING_MARGIN:g} points", b, p + LEARNING_MARGIN,
        f"{baseline} {100 * b:.1f}% vs {pixels} {100 * p:.1f}% (difference {100 * (b - p):+.1f} points)",
    )  # fmt: skip
    return [equivariance, invariance, _hierarchy_check(per_seed, ours, baseline), learning]


def _threshold_check(name: str, requirement: str, value: float, threshold: float, detail: str) -> TargetCheck:
    """``value >= threshold``, or undecidable (passed None) when either is missing."""
    if not (math.isfinite(value) and math.isfinite(threshold)):
        return TargetCheck(name, requirement, None, "missing values")
    return TargetCheck(name, requirement, bool(value >= threshold), detail)


def _hierarchy_check(per_seed: PerSeed, ours: str, baseline: str) -> TargetCheck:
    """Within-object pose Spearman *clearly* above: mean(d) > 0 and > CLEARLY_ABOVE_SDS sd(d)."""
    d = paired_differences(per_seed, "within_object_pose_spearman", ours, baseline)
    requirement = (f"within_object_pose_spearman: {ours} clearly above {baseline}, i.e. the per-seed "
                   f"differences d have mean(d) > {CLEARLY_ABOVE_SDS:g} sd(d) and mean(d) > 0")  # fmt: skip
    if d.size < 2:
        return TargetCheck("hierarchy", requirement, None,
                           f"{d.size} paired seed(s): the spread of the difference needs >= 2")  # fmt: skip
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    return TargetCheck("hierarchy", requirement, bool(mean > 0 and mean > CLEARLY_ABOVE_SDS * sd),
                       f"mean(d) = {mean:+.3f}, sd(d) = {sd:.3f} over {d.size} seeds "
                       f"(threshold {CLEARLY_ABOVE_SDS * sd:.3f})")  # fmt: skip


def mean_loss_curves(
    histories: Mapping[str, Sequence[Sequence[Mapping[str, float]]]], smooth: int = 1
) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """``curves[method][loss]`` = (step, mean over seeds) for the steps every seed logged.

    ``histories[method]`` holds one list per seed of ``{"step": s, loss: value, ...}`` (the
    ``loss_history.json`` of a run). ``smooth`` > 1 takes a trailing moving average over that
    many steps, since single-batch losses are noisy enough to hide the trend.
    """
    if smooth < 1:
        raise ValueError(f"smooth={smooth}: expected >= 1")
    curves: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for method, runs in histories.items():
        runs = [run for run in runs if run]
        if not runs:
            continue
        by_step = [{int(e["step"]): e for e in run} for run in runs]
        steps = sorted(set.intersection(*(set(s) for s in by_step)))
        # Losses every seed logged (a method's terms are the same in all its runs).
        names = [k for k in runs[0][0] if k != "step" and all(k in run[0] for run in runs)]
        curves[method] = {}
        for name in names if steps else []:
            values = np.asarray([[run[s][name] for s in steps] for run in by_step], dtype=np.float64).mean(axis=0)
            if smooth > 1:
                cumulative = np.concatenate([[0.0], np.cumsum(values)])
                starts = np.maximum(np.arange(values.size) + 1 - smooth, 0)
                values = (cumulative[1:] - cumulative[starts]) / (np.arange(values.size) + 1 - starts)
            curves[method][name] = list(zip(steps, values.tolist(), strict=True))
    return curves


def _format_cell(c: MetricCell, best: bool) -> str:
    if c.n == 0:
        return "n/a"
    text = f"{c.mean:.3f} ± {c.std:.3f}" if c.n > 1 else f"{c.mean:.3f}"
    return f"**{text}**" if best else text


def markdown_table(
    table: Mapping[str, Mapping[str, MetricCell]],
    references: Sequence[str] = (),
    per_column: bool = False,
    ceiling: str | None = None,
    not_learnable: Sequence[str] = (),
) -> str:
    """Rows = methods (then the ``references`` rows), columns = metrics with ↑/↓; the best
    trained method per column in bold (references and the ``ceiling`` are not ranked: they
    calibrate). With ``per_column`` the columns are the per-column pose scores
    ("relative_pose_r2/<column>"), otherwise the headline metrics; a column in
    ``not_learnable`` is marked (not learnable)."""
    metrics: list[str] = []
    for row in table.values():
        metrics += [m for m in row if m not in metrics and ("/" in m) == per_column]
    ranked = [m for m in table if m not in references and m != ceiling]
    best: dict[str, str | None] = {}
    for metric in metrics:
        sign = 1.0 if HIGHER_IS_BETTER.get(metric.split("/")[0], True) else -1.0
        candidates = [(sign * table[m][metric].mean, m) for m in ranked
                      if metric in table[m] and table[m][metric].n > 0]  # fmt: skip
        best[metric] = max(candidates)[1] if len(candidates) > 1 else None
    arrows = {m: "↑" if HIGHER_IS_BETTER.get(m.split("/")[0], True) else "↓" for m in metrics}
    marks = {m: " (not learnable)" if m in not_learnable else "" for m in metrics}
    lines = ["| method | " + " | ".join(f"{m} {arrows[m]}{marks[m]}".rstrip() for m in metrics) + " |",
             "|---|" + "---:|" * len(metrics)]  # fmt: skip
    for method, row in table.items():
        label = f"{method} (reference)" if method in references else f"{method} (ceiling)" if method == ceiling else method
        cells = [_format_cell(row[m], best[m] == method) if m in row else "n/a" for m in metrics]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(
    table: Mapping[str, Mapping[str, MetricCell]],
    targets: Sequence[TargetCheck],
    *,
    title: str = "CIPER report",
    setup: Sequence[str] = (),
    references: Sequence[str] = (),
    plots: Mapping[str, str] | None = None,
    notes: Sequence[str] = (),
    settings: Sequence[str] = (),
    paired: str = "",
    ceiling: str | None = None,
    not_learnable: Sequence[str] = (),
    extra_sections: Sequence[tuple[str, str]] = (),
) -> str:
    """The text of ``report.md``: setup bullets, the settings every run used, the table,
    the learnability of each pose column, the paired differences, any ``extra_sections``
    (heading, markdown), the targets, the plots."""
    seeds = max((c.n for row in table.values() for c in row.values()), default=0)
    parts = [f"# {title}", ""]
    if setup:
        parts += ["## Setup", "", *[f"- {line}" for line in setup], ""]
    if settings:
        parts += ["## Settings every run used", "", "From each run's saved resolved `config.yaml`:", "",
                  *[f"- {line}" for line in settings], ""]  # fmt: skip
    parts += ["## Results", "",
              f"Cells: mean ± sample std over seeds (up to {seeds}); ↑ = higher is better; bold = best "
              "trained method per column. Metrics are computed on frozen encoder features by "
              "`learner.evaluation` (probes trained on training objects, scored on held-out objects).",
              "", markdown_table(table, references, ceiling=ceiling), ""]  # fmt: skip
    if any("/" in metric for row in table.values() for metric in row):
        parts += ["Per-column pose R² (the headline R² is their mean):", "",
                  markdown_table(table, references, per_column=True, ceiling=ceiling, not_learnable=not_learnable), ""]  # fmt: skip
    if ceiling is not None and ceiling in table:
        unread = ", ".join(f"`{k.split('/', 1)[1]}` ({table[ceiling][k].mean:.2f})" for k in not_learnable) or "none"
        parts += [f"Learnable at this budget: a relative-pose column that `{ceiling}` (the same encoder, data "
                  f"and budget, trained with the labels) reads below R² {LEARNABLE_R2:g} is *not learnable at "
                  f"this budget* and says nothing about any self-supervised method. Not learnable here: {unread}. "
                  "`relative_pose_r2` is the mean over every moved column, `relative_pose_r2_learnable` over "
                  "the learnable ones.", ""]  # fmt: skip
    if paired:
        parts += ["Paired per-seed differences (seed by seed: the same initial encoder weights and, offline, the same dataset; online, each run its own collectors seeded alike):", "", paired, ""]
    for heading, body in extra_sections:
        parts += [f"## {heading}", "", body, ""]
    parts += ["## Targets", ""]
    for check in targets:
        verdict = {True: "PASS", False: "FAIL", None: "UNDECIDED"}[check.passed]
        parts.append(f"- **{verdict}** {check.name}: {check.requirement}. {check.detail}.")
    parts.append("")
    if notes:
        parts += ["## Notes", "", *[f"- {line}" for line in notes], ""]
    if plots:
        parts += ["## Plots", ""]
        parts += [f"- {caption}: ![{caption}]({path})" for caption, path in plots.items()]
        parts.append("")
    return "\n".join(parts)


def report_payload(
    per_seed: PerSeed,
    table: Mapping[str, Mapping[str, MetricCell]],
    targets: Sequence[TargetCheck],
    **extra: Any,
) -> dict[str, Any]:
    """Everything behind the report as plain JSON-ready data (nan stays nan for json.dumps)."""
    return {
        "per_seed": {m: {str(s): dict(v) for s, v in by_seed.items()} for m, by_seed in per_seed.items()},
        "table": {m: {k: asdict(c) for k, c in row.items()} for m, row in table.items()},
        "targets": [asdict(t) for t in targets],
        **extra,
    }
