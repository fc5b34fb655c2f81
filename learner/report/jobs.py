"""The jobs of a report: one training run per (method, seed), one evaluation per reference.

Each run is composed from the same config tree as every console script: the preset's
``report.overrides``, then the user's own overrides given to ``ciper-report``, then the
method's own (``report.method_overrides``), then the keys the report fixes for a fair
comparison (method, seed, steps, batch, encoder, data). A run folder that holds a finished
run of the same config is reused, an unfinished one resumes from its checkpoint, and one made
with another config is refused naming the keys, so a killed report is finished by running
the same command again.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.initialize import get_gh_backup, restore_gh_from_backup
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

import envs
from agent.atomic_files import write_json_atomic
from agent.rollout_app import rollout
from conf.app import override_key
from conf.app_common import key_differences
from conf.compose import compose_config
from conf.schema import GROUP_OPTIONS
from conf.validate import ConfigError
from learner.evaluation.evaluate import evaluate_reference
from learner.evaluation.references import REFERENCES
from learner.training.action_stats import ActionHistogram
from learner.training.curiosity import policy_hooks
from learner.training.loop import train

# References scored beside the methods by the same code: the untrained encoder once per
# seed (the exact initial weights of that seed's runs), the deterministic ones once.
PER_SEED_REFERENCES = ("random",)
# An evaluation's share of the progress bar, in training steps: in the pilot (docs/pilot_sweep.md)
# one took 65-110 s where a step of the static preset took ~1.1 s, i.e. 60-100 steps' time.
EVALUATION_STEPS = 80


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


def run_overrides(
    cfg: DictConfig, user: Sequence[str], method: str, seed: int, dataset: Path | None, variant: str | None = None
) -> list[str]:
    """The overrides that compose run (``method``, ``seed``, ``variant``) of the report: the
    preset's, the user's (``method.*`` keys only where ``method`` has them), the method's own
    (``report.method_overrides``), the keys the report fixes for a fair comparison, then the
    variant's (``report.variants``; e.g. its own ``train.steps``)."""
    r = cfg.report
    fixed = [f"method={method}", f"train.seed={seed}", f"train.steps={r.steps}",
             f"train.batch_size={r.batch_size}", f"model.encoder={r.encoder}", f"train.mode={r.mode}",
             "train.evaluate=true"]  # fmt: skip
    if dataset is not None:
        fixed.append(f"train.dataset={dataset}")
    own = list(r.method_overrides.get(method, []))
    varied = list(r.variants[variant]) if variant is not None else []
    return merged_overrides(list(r.overrides), _applicable(user, method), own, fixed, varied)


def _applicable(overrides: Sequence[str], method: str) -> list[str]:
    """``overrides`` without the ``method.<key>`` ones that method ``method`` has no key for
    (a user's ``method.prediction_weight=2`` goes to the methods that weigh a prediction)."""
    keys = {f.name for f in dataclasses.fields(type(GROUP_OPTIONS["method"][method]))}
    return [o for o in overrides if not override_key(o).startswith("method.") or override_key(o).split(".", 1)[1] in keys]


def compose_in_app(overrides: Sequence[str], run_dir: Path) -> DictConfig:
    """``compose_config`` from inside a running Hydra app.

    ``compose_config`` initialises Hydra, which refuses while the app's own Hydra is
    initialised; the app's state is set aside for the call and put back afterwards.
    """
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
    differing = [d for d in key_differences(saved, wanted) if not d.startswith("run_dir:")]
    if differing:
        details = ", ".join(differing[:8])
        raise ConfigError(
            f"{run_dir} holds a run made with another config ({details}); "
            "use another hydra.run.dir or delete that folder"
        )


def write_metrics(run_dir: Path, metrics: dict[str, Any]) -> None:
    write_json_atomic(run_dir / "metrics.json", metrics)  # a killed report never sees half a file


def evaluate_reference_run(name: str, cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Score reference ``name`` (``learner.evaluation.references.REFERENCES``) on the report's probe views."""
    started = time.perf_counter()
    scores = evaluate_reference(name, cfg, envs.world_module(cfg.env.id), run_dir)
    return {"method": name, "completed": True, "eval": scores, "eval_s": time.perf_counter() - started}


@dataclass(frozen=True)
class Job:
    """One row-maker of the report: a training run of ``method`` (under ``variant`` of
    ``report.variants``, if any), or a reference scored by the evaluation's code
    (``reference`` True), for one seed."""

    method: str
    seed: int
    reference: bool = False
    variant: str | None = None

    @property
    def label(self) -> str:
        """Its row in the report: the method, or ``method@variant``."""
        return self.method if self.variant is None else f"{self.method}@{self.variant}"

    @property
    def folder(self) -> str:
        if not self.reference:
            return f"{self.label.replace('@', '_')}_seed{self.seed}"
        return f"reference_{self.method}" + (f"_seed{self.seed}" if self.method in PER_SEED_REFERENCES else "")


def report_jobs(methods: Sequence[str], seeds: Sequence[int], variants: Sequence[str] = ()) -> list[Job]:
    """Every method (under every variant) for every seed, then the references (the seeded
    one per seed)."""
    jobs = [Job(m, s, variant=v) for m in methods for v in (variants or [None]) for s in seeds]
    return jobs + [Job(ref, s, reference=True) for ref in REFERENCES for s in (seeds if ref in PER_SEED_REFERENCES else seeds[:1])]


def job_steps(job: Job, cfg: DictConfig) -> int:
    """The training steps of ``job`` (its variant's ``train.steps``, else ``report.steps``)."""
    if job.reference:
        return 0
    steps = [o.split("=", 1)[1] for o in (cfg.report.variants.get(job.variant, []) if job.variant else [])
             if override_key(o) == "train.steps"]  # fmt: skip
    return int(steps[-1]) if steps else int(cfg.report.steps)


def job_weight(job: Job, cfg: DictConfig) -> int:
    """``job``'s share of the report's progress bar, in training steps: a run's steps plus
    one evaluation, a reference one evaluation (``EVALUATION_STEPS``)."""
    return EVALUATION_STEPS + job_steps(job, cfg)


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
    ``callbacks`` go to ``learner.training.loop.train`` (the report's progress). A reference is
    scored on the env, evaluation and pairs of the report's first method's runs."""
    run_dir = out / "runs" / job.folder
    base = cfg.report.methods[0] if job.reference else job.method
    run_cfg = compose_in_app(run_overrides(cfg, user, base, job.seed, dataset, job.variant), run_dir)
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
    world = envs.world_module(run_cfg.env.id)
    policy_factory, policy_callbacks = policy_hooks(run_cfg, world, run_dir)
    # An online run records the actions its observer took (offline, every run sees the same data).
    taken = ActionHistogram(world, run_cfg.env.action_set) if run_cfg.train.mode == "online" else None
    metrics = train(run_cfg, run_dir, policy_factory=policy_factory,
                    callbacks=[*callbacks, *policy_callbacks, *([taken] if taken else [])])  # fmt: skip
    if taken is not None:
        taken.save(run_dir)
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
    dataset = out / "dataset"
    layers = merged_overrides(list(r.overrides), user, [f"dataset.path={dataset}", f"dataset.steps={int(r.dataset_steps)}"])
    rollout(compose_in_app(layers, out))
    return dataset
