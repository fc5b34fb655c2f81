"""``ciper-train``: train CIPER or a baseline online (live collectors) or offline (a dataset).

Examples::

    ciper-train                                   # short default CIPER run, online, CPU OK
    ciper-train method=simclr train.steps=2000
    ciper-train train.mode=offline train.dataset=data/rollout
    ciper-train hydra.run.dir=runs/exp1           # rerun the same line to resume exp1
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from conf.app import hydra_app
from learner.train import print_summary, train


def run(cfg: DictConfig) -> None:
    """Train as configured; print what was learned; files go to the run folder."""
    run_dir = Path(cfg.run_dir)
    if cfg.policy.name == "curious":
        from learner.curiosity import curious_training

        policy_factory, curiosity = curious_training(cfg, run_dir)
        metrics = train(cfg, run_dir, policy_factory=policy_factory, callbacks=[curiosity])
    else:
        metrics = train(cfg, run_dir)
    print_summary(metrics)
    print(f"run folder: {run_dir}")


main = hydra_app(run)

if __name__ == "__main__":
    main()
