"""Pilot sweep: short runs of a report preset's setup under other settings, measured through
the project's own code (which budget makes SimCLR learn; what lets an encoder read the
object's turn; which knobs make CIPER's prediction head matter).

A task is a report preset (``report=static`` or ``report=objects``): its run overrides and
each method's own. Writes one shared dataset per distinct set of a setting's data overrides
(``env.*``, ``policy.*``; the image size among them) with ``agent.rollout_app.rollout``, trains
short runs with ``learner.training.loop.train`` on configs composed by ``conf.compose.compose_config``
(the config every ``ciper-train`` run gets), evaluates them with the frozen-encoder
evaluation ``learner.evaluation`` (category top-1 linear, relative-pose R² mean over the
moved columns) and scores the raw-pixel, untrained-encoder and oracle references on the same
probe views of that data. Each run reports how far its encoder moved from its seeded
initialisation (``encoder_weight_change`` = ||w - w_init|| / ||w_init||, in ``metrics.json``);
``--columns`` adds per-column scores (``relative_pose_r2/object_rot_x`` ...) to the table.

A setting is ``name:key=value,key=value`` (overrides on top of the task's base). Finished
runs (a ``metrics.json`` with an evaluation) are reused, so a killed sweep resumes and a
longer grid extends a shorter one. The table goes to stdout and, with ``--doc``, into a
markdown file. Example::

    python bench/pilot_sweep.py --task static --out runs/pilot/static \\
        --setting "w16_lr2e-3_s300:model.width=16,optim.lr=2e-3,train.steps=300" --doc docs/pilot_sweep.md
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from omegaconf import OmegaConf  # noqa: E402

import envs  # noqa: E402
from agent.rollout_app import rollout  # noqa: E402
from conf.compose import compose_config  # noqa: E402
from conf.schema import GROUP_OPTIONS  # noqa: E402
from learner.evaluation.evaluate import evaluate_reference  # noqa: E402
from learner.training.loop import train  # noqa: E402

# A task is a report preset: its run overrides (report.overrides) and each method's own
# (report.method_overrides, e.g. simclr's pairs on static images), so the pilot trains what
# the report would.
TASKS = ("static", "objects")
COLUMNS = ("category_top1_linear", "category_top1_knn", "relative_pose_r2", "within_object_pose_spearman")


def task_overrides(task: str) -> list[str]:
    return list(GROUP_OPTIONS["report"][task].overrides)


def method_overrides(task: str, method: str) -> list[str]:
    return [f"method={method}", *GROUP_OPTIONS["report"][task].method_overrides.get(method, [])]


def parse_setting(text: str) -> tuple[str, list[str]]:
    name, _, body = text.partition(":")
    if not name or not body:
        raise SystemExit(f"--setting {text!r}: expected name:key=value,key=value")
    return name, [item for item in re.split(r",(?![^\[]*\])", body) if item]  # commas inside [...] stay


def image_size_of(overrides: list[str], default: int) -> int:
    sizes = [int(o.split("=", 1)[1]) for o in overrides if o.startswith("env.image_size=")]
    return sizes[-1] if sizes else default


def data_overrides(overrides: list[str]) -> list[str]:
    """The overrides of a setting that change the data (``env.*``, ``policy.*``): each
    distinct list gets its own dataset and references."""
    return sorted(o for o in overrides if o.startswith(("env.", "policy.", "policy=")))


def tag_of(overrides: list[str]) -> str:
    return "_".join(o.replace("=", "-").replace("/", "-").replace(",", "-") for o in overrides) or "base"


def dataset_for(task: str, data: list[str], args: argparse.Namespace, out: Path) -> tuple[Path, float]:
    path = out / f"dataset_{tag_of(data)}"
    started = time.perf_counter()
    cfg = compose_config([*task_overrides(task), *data, f"dataset.path={path}", f"dataset.steps={args.dataset_steps}",
                          "dataset.shard_size=2048", "collector.vectorization=sync"],
                         run_dir=out / f"rollout_{tag_of(data)}")  # fmt: skip
    rollout(cfg)
    return path, time.perf_counter() - started


def eval_overrides(args: argparse.Namespace) -> list[str]:
    return [f"eval.views_per_object={args.views}", f"eval.objects_limit={args.objects}", "eval.plots=false"]


def reference(task: str, name: str, data: list[str], extra: list[str], args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Reference ``name`` on the probe views of this task and data (reused when scored before)."""
    path = out / "references" / f"{name}_{tag_of([*data, *extra])}.json"
    if path.exists():
        return json.loads(path.read_text())
    cfg = compose_config([*task_overrides(task), *data, *eval_overrides(args), *extra], run_dir=out)
    started = time.perf_counter()
    scores = evaluate_reference(name, cfg, envs.world_module(cfg.env.id), None)
    result = {"eval": scores, "eval_s": time.perf_counter() - started}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    return result


class CpuClock:
    """Training callback: the process's CPU seconds per step (all threads), a cost that the
    other jobs on a shared machine do not inflate as they do the wall-clock time."""

    def __init__(self) -> None:
        self.first: tuple[int, float] | None = None
        self.last: tuple[int, float] | None = None

    def on_step(self, step: int, learner: Any, pairs: Any) -> None:
        now = (step, time.process_time())
        if self.first is None:
            self.first = now  # from the end of step 1: start-up and the first step left out
        self.last = now

    def seconds_per_step(self) -> float:
        if self.first is None or self.last is None or self.last[0] == self.first[0]:
            return float("nan")
        return (self.last[1] - self.first[1]) / (self.last[0] - self.first[0])


def train_run(task: str, method: str, seed: int, overrides: list[str], dataset: Path, run_dir: Path,
              args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    done = run_dir / "metrics.json"
    if done.exists():
        metrics = json.loads(done.read_text())
        if metrics.get("completed") and "eval" in metrics:
            return metrics
    cfg = compose_config([*task_overrides(task), *method_overrides(task, method), *eval_overrides(args), "train.mode=offline",
                          f"train.dataset={dataset}", f"train.seed={seed}", "train.checkpoint_every=100000",
                          f"train.batch_size={args.batch}", *overrides], run_dir=run_dir)  # fmt: skip
    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run_dir / "config.yaml")
    started, clock = time.perf_counter(), CpuClock()
    metrics = train(cfg, run_dir, callbacks=[clock])
    metrics["run_s"] = time.perf_counter() - started
    metrics["cpu_s_per_step"] = clock.seconds_per_step()
    done.write_text(json.dumps(metrics, indent=2))
    return metrics


def row(label: str, method: str, metrics: dict[str, Any], columns: tuple[str, ...] = COLUMNS) -> dict[str, Any]:
    ev = metrics["eval"]
    steps = metrics.get("steps")
    train_s = metrics.get("wall_s")
    return {
        "setting": label, "method": method, **{c: ev.get(c, float("nan")) for c in columns},
        "weight_change": metrics.get("encoder_weight_change", float("nan")),
        "loss_first": metrics.get("losses_first", {}).get("loss", float("nan")),
        "loss_last": metrics.get("losses_last", {}).get("loss", float("nan")),
        "s_per_step": train_s / steps if train_s and steps else float("nan"),
        "cpu_s_per_step": metrics.get("cpu_s_per_step", float("nan")),
        "train_s": train_s if train_s else float("nan"),
        "run_s": metrics.get("run_s", metrics.get("eval_s", float("nan"))),
    }  # fmt: skip


def markdown(rows: list[dict[str, Any]], columns: tuple[str, ...] = COLUMNS) -> str:
    head = ["setting", "method", *columns, "weight_change", "loss first→last", "s/step", "CPU s/step", "train s",
            "run s"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]

    def f(x: Any, fmt: str) -> str:
        return "" if x is None or x != x else format(x, fmt)

    for r in rows:
        loss = f"{f(r['loss_first'], '.3f')}→{f(r['loss_last'], '.3f')}" if r["loss_first"] == r["loss_first"] else ""
        lines.append("| " + " | ".join([r["setting"], r["method"], *(f(r[c], ".3f") for c in columns),
                                        f(r["weight_change"], ".3f"), loss, f(r["s_per_step"], ".2f"),
                                        f(r.get("cpu_s_per_step", float("nan")), ".2f"),
                                        f(r["train_s"], ".0f"), f(r["run_s"], ".0f")]) + " |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=TASKS, default="static", help="the report preset whose runs are piloted")
    parser.add_argument("--out", type=Path, default=None, help="folder of the datasets and runs (runs/pilot/<task>)")
    parser.add_argument("--setting", action="append", default=[], help="name:key=value,... (repeatable)")
    parser.add_argument("--methods", default="simclr", help="comma-separated methods trained per setting")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=64, help="pairs per step")
    parser.add_argument("--image-size", type=int, default=32, help="default env.image_size of a setting")
    parser.add_argument("--dataset-steps", type=int, default=8192, help="transitions of each shared dataset")
    parser.add_argument("--views", type=int, default=8, help="eval.views_per_object")
    parser.add_argument("--objects", type=int, default=300, help="eval.objects_limit (objects or images per split)")
    parser.add_argument("--columns", default="", help="comma-separated further scores to show, e.g. relative_pose_r2/object_rot_x")
    parser.add_argument("--doc", type=Path, default=None, help="append the table to this markdown file")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    out = (args.out or Path("runs/pilot") / args.task).resolve()
    out.mkdir(parents=True, exist_ok=True)
    settings = [parse_setting(s) for s in args.setting] or [("default", [])]
    methods = [m for m in args.methods.split(",") if m]

    columns = (*COLUMNS, *(c for c in args.columns.split(",") if c))
    rows: list[dict[str, Any]] = []
    datasets: dict[tuple[str, ...], Path] = {}
    refs_done: set[tuple[str, ...]] = set()
    for label, overrides in settings:
        if not any(o.startswith("env.image_size=") for o in overrides):
            overrides = [*overrides, f"env.image_size={args.image_size}"]
        data = data_overrides(overrides)
        if tuple(data) not in datasets:
            datasets[tuple(data)], seconds = dataset_for(args.task, data, args, out)
            print(f"dataset {datasets[tuple(data)]} ready in {seconds:.0f} s", flush=True)
        for method in methods:
            metrics = train_run(args.task, method, args.seed, overrides, datasets[tuple(data)], out / "runs" / f"{label}_{method}", args)
            rows.append(row(label, method, metrics, columns))
            print(markdown(rows[-1:], columns).splitlines()[-1], flush=True)
        # The untrained encoder of this setting's architecture, then pixels and oracle once per data.
        arch = [o for o in overrides if o.startswith("model.")]
        for name, extra in (("random", [*arch, f"train.seed={args.seed}"]), ("pixels", []), ("oracle", [])):
            key = (name, *data, *extra)
            if key in refs_done:
                continue
            refs_done.add(key)
            result = reference(args.task, name, data, extra, args, out)
            rows.append(row(" ".join([*data, *arch]) if name == "random" else " ".join(data), f"{name} (ref)", result, columns))
            print(markdown(rows[-1:], columns).splitlines()[-1], flush=True)
    table = markdown(rows, columns)
    print(table)
    (out / "pilot.json").write_text(json.dumps(rows, indent=2))
    if args.doc is not None:
        command = "python bench/pilot_sweep.py " + " ".join(f"'{a}'" if ("," in a or ":" in a) else a for a in sys.argv[1:])
        with args.doc.open("a") as doc:
            doc.write(f"\n### task `{args.task}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n\n"
                      f"```bash\n{command}\n```\n\n{table}\n")  # fmt: skip


if __name__ == "__main__":
    main()
