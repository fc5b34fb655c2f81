"""``ciper-report``: train every method of ``report.methods`` on the same data and budget, compare.

One shared dataset is written once into the report's folder (``report.mode=offline``), then
each (method, seed) run trains ``report.steps`` steps in ``runs/<method>_seed<k>/`` with a
config composed from the same tree (``learner.report.jobs``). Every reference (the true pose,
noise, nuisances, raw pixels, the untrained encoder of each seed) is scored by the same
evaluation code. ``report.md`` (tables, paired differences, target checks, plots),
``report.json`` and the PNGs land in the report's folder, ``runs/ciper-report/<preset>/``
unless ``hydra.run.dir`` is given, so a plain rerun of the same command resumes a killed
report; ``learner.report.tables`` does the pure aggregation.

Examples::

    ciper-report                                   # report=quick: 4 methods x 3 seeds on CPU
    ciper-report report=static                     # digits, <= 90 min on 2 cores (README)
    ciper-report report=objects                    # the active observer, <= 90 min on 2 cores
    ciper-report report=paper train.device=cuda
    ciper-report hydra.run.dir=runs/report1        # rerun the same line to resume report1
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from conf.app import hydra_app
from conf.validate import ConfigError
from learner.report.builder import build_report
from learner.report.jobs import (
    check_same_config,
    compose_in_app,
    passed_through,
    report_jobs,
    run_overrides,
    user_overrides_of_app,
)


def _task(cfg: DictConfig) -> None:
    """Compare methods on one dataset and budget (see ``report.*``); files go to the run folder."""
    payload = build_report(cfg, user_overrides_of_app())
    out = Path(cfg.run_dir).resolve()
    for check in payload["targets"]:
        verdict = {True: "PASS", False: "FAIL", None: "UNDECIDED"}[check["passed"]]
        print(f"{verdict:9s} {check['name']}: {check['detail']}")
    print(f"report: {out / 'report.md'}")


def check_report_folder(cfg: DictConfig) -> None:
    """Refuse, before anything is written, a rerun into a report folder whose runs were made
    with other settings (``report.steps=100`` on a folder made with 300): each saved run
    config is compared with the one this report would compose for it."""
    out = Path(cfg.run_dir).resolve()
    if not (out / "runs").is_dir():
        return
    r, user = cfg.report, passed_through(user_overrides_of_app())
    dataset = out / "dataset" if str(r.mode) == "offline" else None  # where learner.report.jobs.write_dataset puts it
    for job in report_jobs([str(m) for m in r.methods], [int(s) for s in r.seeds], list(r.variants)):
        run_dir = out / "runs" / job.folder
        if not (run_dir / "config.yaml").is_file():
            continue
        base = str(r.methods[0]) if job.reference else job.method
        try:
            check_same_config(run_dir, compose_in_app(run_overrides(cfg, user, base, job.seed, dataset, job.variant), run_dir))
        except ValueError as error:
            raise ConfigError(f"hydra.run.dir={out}: {error}") from error


# A plain rerun of the same command finds the earlier runs: one folder per preset.
main = hydra_app(_task, check=check_report_folder, run_dir="runs/ciper-report/${hydra:runtime.choices.report}")

if __name__ == "__main__":
    main()
