"""Turns a task function into a Hydra console script that reads the ``ciper`` config tree.

Every script (``ciper-train``, ``ciper-rollout`` ...) runs the same sequence: Hydra composes
the config and makes the run folder ``runs/<script>/<date>/``; then, before anything is
written, `conf.validate` checks the whole config and the script's own ``check`` (a dataset
made differently, a resume that would change hyperparameters ...). A user error
(`ConfigError`) is printed as one line, the empty run folder is removed and the exit code
is 2 (``HYDRA_FULL_ERROR=1`` shows the traceback instead). Only then are the resolved config
and the overrides saved into ``<run folder>/.hydra/`` and the task runs. Ctrl-C that the
task does not handle ends with one line too. ``--help`` lists every key with its default and
the schema's comment.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from conf.help import help_text
from conf.schema import register_configs
from conf.validate import ConfigError, check_overrides, validate_config

__all__ = ["ConfigError", "hydra_app", "override_key", "overridden_keys", "rerun_command"]

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class ProgressWithoutTTY(logging.Filter):
    """Lets progress records (``extra={"progress": True}``) reach the console only when
    stderr is not a terminal (nohup, SLURM), where no progress bar is drawn."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "progress", False) or not sys.stderr.isatty()


def script_name(task: Callable[..., Any]) -> str:
    """``ciper-train`` for ``learner.train_app.run`` (also when run as ``python -m``)."""
    module = task.__module__
    if module == "__main__":
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        module = spec.name if spec is not None else Path(sys.argv[0]).stem
    return "ciper-" + module.rsplit(".", 1)[-1].removesuffix("_app")


def register_app(name: str, run_dir: str | None = None) -> None:
    """The primary config ``name``: the ``ciper`` tree plus this script's Hydra settings
    (``run_dir``: this script's default ``hydra.run.dir`` instead of the dated one)."""
    register_configs()
    hydra_settings: dict[str, Any] = {
        "job": {"name": name},
        "output_subdir": None,  # saved by `save_run_config` once the config is known to be good
        "job_logging": {
            "filters": {"progress_without_tty": {"()": "conf.app.ProgressWithoutTTY"}},
            "handlers": {
                "console": {"stream": "ext://sys.stderr", "filters": ["progress_without_tty"]},
                "file": {"delay": True},  # no empty .log in a refused run's folder
            },
        },
        "callbacks": {"sweep_summary": {"_target_": "conf.sweep.SweepSummary"}},
    }  # fmt: skip
    if run_dir is not None:
        hydra_settings["run"] = {"dir": run_dir}
    ConfigStore.instance().store(name=name, node={"defaults": ["ciper", "_self_"], "hydra": hydra_settings})


def override_key(override: str) -> str:
    """The config key of a ``key=value`` override (without Hydra's ``+``/``++``/``~`` prefix)."""
    return override.split("=", 1)[0].lstrip("+~")


def overridden_keys() -> set[str]:
    """Dotted keys given on this run's command line (empty outside a Hydra app)."""
    if not HydraConfig.initialized():
        return set()
    return {override_key(o) for o in HydraConfig.get().overrides.task}


def rerun_command(name: str, run_dir: Path) -> str:
    """This run's command line with its folder pinned: running it again resumes the run."""
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    return shlex.join([name, *overrides, f"hydra.run.dir={run_dir}"])


def _remove_if_empty(run_dir: Path) -> None:
    """Remove the empty ``run_dir``, and its parents below the working directory while
    they are empty too (``runs/ciper-train/`` of a first, refused run)."""
    stop = Path.cwd().resolve()
    path = run_dir.resolve()
    if path.is_dir() and not any(path.iterdir()):
        path.rmdir()
        path = path.parent
        while path != stop and stop in path.parents and not any(path.iterdir()):
            path.rmdir()
            path = path.parent


def save_run_config(cfg: DictConfig, run_dir: Path) -> None:
    """The resolved config, this run's overrides and Hydra's settings into ``.hydra/``."""
    folder = run_dir / ".hydra"
    folder.mkdir(parents=True, exist_ok=True)
    hydra_cfg = HydraConfig.get()
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    (folder / "overrides.yaml").write_text(OmegaConf.to_yaml(hydra_cfg.overrides.task))
    (folder / "hydra.yaml").write_text(OmegaConf.to_yaml({"hydra": hydra_cfg}))


def _fail(name: str, message: str, run_dir: Path | None) -> None:
    if run_dir is not None:
        _remove_if_empty(run_dir)
    print(f"{name}: error: {message}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def hydra_app(
    task: Callable[[DictConfig], object], check: Callable[[DictConfig], None] | None = None,
    run_dir: str | None = None,
) -> Callable[[], None]:
    """Wrap ``task(cfg)`` as a console-script ``main``; ``check(cfg)`` (optional) raises
    `ConfigError` for what only this script can tell is wrong, and may fill in keys;
    ``run_dir`` replaces the dated default run folder (a rerun of the same line finds it)."""
    name = script_name(task)
    register_app(name, run_dir)
    full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"

    def job(cfg: DictConfig) -> object:
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        try:
            with open_dict(cfg):
                cfg.run_dir = str(run_dir)
            OmegaConf.resolve(cfg)
            check_overrides(HydraConfig.get().overrides.task)
            validate_config(cfg)
            if check is not None:
                check(cfg)
        except ConfigError as error:
            if full_error:
                raise
            _fail(name, str(error), run_dir)
        save_run_config(cfg, run_dir)
        try:
            return task(cfg)
        except ConfigError as error:
            if full_error:
                raise
            _fail(name, str(error), None)
        except KeyboardInterrupt:
            if full_error:
                raise
            print(f"{name}: interrupted; what was written so far is in {run_dir}; to go on: "
                  f"{rerun_command(name, run_dir)}", file=sys.stderr)  # fmt: skip
            sys.exit(EXIT_INTERRUPTED)

    # The config tree lives in the ConfigStore; an explicit directory (this one, which holds
    # no YAML) stops Hydra from probing the caller's package with importlib.resources,
    # which fails for console scripts of editable installs.
    config_dir = str(Path(__file__).resolve().parent)
    job.__module__ = task.__module__
    wrapped = hydra.main(version_base=None, config_path=config_dir, config_name=name)(job)
    doc = sys.modules[task.__module__].__doc__ if task.__module__ in sys.modules else task.__doc__

    def main() -> None:
        if any(arg in ("--help", "-h") for arg in sys.argv[1:]):
            print(help_text(name, doc or task.__doc__ or ""))
            return
        wrapped()

    main.__doc__ = task.__doc__
    return main
