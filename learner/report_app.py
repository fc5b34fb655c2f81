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
from learner.report.builder import build_report
from learner.report.jobs import user_overrides_of_app


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
