"""Turns a task function into a Hydra console script that reads the ``ciper`` config tree.

Every script (``ciper-train``, ``ciper-rollout`` ...) runs the same sequence: a misspelt
group option (``method=cipr``) is refused before Hydra composes; Hydra composes the config
and makes the run folder ``runs/<script>/<date>/``; the run folder is locked
(`conf.locks`: a second run in it is refused naming the first one's PID); then, before
anything is written, `conf.validate` checks the whole config and the script's own ``check``
(a dataset made differently, a resume that would change hyperparameters ...). Only then are
the resolved config and the overrides saved into ``<run folder>/.hydra/`` and the task runs.
A user error (`conf.errors.UserError`, `ConfigError` among them) raised at any of these
steps, also by the task, is printed as one line with exit code 2, and what the wrapper wrote
(``.hydra/``, the log) is taken back when the task wrote nothing else, so a refused run
leaves no run folder (``HYDRA_FULL_ERROR=1`` shows the traceback instead). SIGTERM, like
Ctrl-C, interrupts the task (its ``finally`` blocks stop collectors and free shared memory)
and ends with one line. ``--help`` lists every key with its default and the schema's comment.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import logging
import os
import shlex
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hydra
from hydra._internal.utils import get_args_parser
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from conf.errors import UserError
from conf.help import help_text
from conf.locks import LOCK_NAME, FolderLock
from conf.schema import GROUP_OPTIONS, register_configs
from conf.validate import ConfigError, check_overrides, validate_config

__all__ = ["ConfigError", "UserError", "hydra_app", "override_key", "overridden_keys", "rerun_command"]

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
    try:
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
            path = path.parent
            while path != stop and stop in path.parents and not any(path.iterdir()):
                path.rmdir()
                path = path.parent
    except OSError:  # another run started writing into it meanwhile: it is theirs now
        pass


def group_choice_errors(args: list[str]) -> list[str]:
    """``group=option`` overrides among the command-line ``args`` whose option the group
    does not have, each as one line listing the valid ones (Hydra prints a multi-line search
    path listing instead)."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            known, _ = get_args_parser().parse_known_args(args)
        overrides = OverridesParser.create().parse_overrides(known.overrides)
    except (Exception, SystemExit):  # a malformed command line: Hydra's own message says more
        return []
    errors = []
    for override in overrides:
        options = GROUP_OPTIONS.get(override.key_or_group)
        if options is None or override.is_delete():
            continue
        try:
            chosen = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.get_value_element_as_str()]
        except Exception:  # a range or interval sweep: not options
            continue
        for option in chosen:
            if option not in options:
                close = difflib.get_close_matches(option, list(options), n=1)
                hint = f"; did you mean {close[0]}?" if close else ""
                errors.append(f"{override.key_or_group}={option}: no such {override.key_or_group}; expected one of "
                              f"{', '.join(sorted(options))}{hint}")  # fmt: skip
    return errors


class RunFolderStart:
    """What a run folder held before the wrapper and the task touched it, so that a run
    ending in a `UserError` can take back what the wrapper wrote (``.hydra/``, the log, the
    lock) when the task wrote nothing else: a refused run leaves the folder as it found it."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.entries = self._entries()
        hydra = run_dir / ".hydra"
        self.hydra_files = {p.name: p.read_bytes() for p in hydra.iterdir() if p.is_file()} if hydra.is_dir() else {}
        self.log_sizes = {path: path.stat().st_size for path in self._log_files() if path.is_file()}

    def _entries(self) -> set[str]:
        if not self.run_dir.is_dir():
            return set()
        return {str(p.relative_to(self.run_dir)) for p in self.run_dir.rglob("*")}

    def _log_files(self) -> list[Path]:
        """The files Hydra's job logging writes into the run folder."""
        handlers = logging.getLogger().handlers
        files = [Path(h.baseFilename) for h in handlers if isinstance(h, logging.FileHandler)]
        return [f for f in files if f.parent.resolve() == self.run_dir.resolve()]

    def restore(self) -> bool:
        """Undo the wrapper's writes if nothing else is new; returns whether it did."""
        logs = self._log_files()
        own = {".hydra", LOCK_NAME, *(f".hydra/{name}" for name in ("config.yaml", "overrides.yaml", "hydra.yaml")),
               *(f.name for f in logs)}  # fmt: skip
        if self._entries() - self.entries - own:
            return False
        for handler in list(logging.getLogger().handlers):
            if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename) in logs:
                handler.close()
                logging.getLogger().removeHandler(handler)
        for path in logs:  # only what changed is touched: an untouched file keeps its mtime
            if path not in self.log_sizes:
                path.unlink(missing_ok=True)
            elif path.stat().st_size != self.log_sizes[path]:
                os.truncate(path, self.log_sizes[path])
        hydra = self.run_dir / ".hydra"
        if hydra.is_dir():
            for path in hydra.iterdir():
                if path.name not in self.hydra_files:
                    path.unlink()
                elif path.read_bytes() != self.hydra_files[path.name]:
                    path.write_bytes(self.hydra_files[path.name])
            if not self.hydra_files and not any(hydra.iterdir()):
                hydra.rmdir()
        return True


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that cleanup runs the same way."""


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """While the task runs, SIGTERM raises `Terminated` (the default would end the process
    at once, leaving collector processes and shared memory behind); main thread only."""

    def handler(signum: int, _frame: Any) -> None:
        raise Terminated(signal.Signals(signum).name)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _locks_run_folder() -> bool:
    """Rank 0 of a torchrun job (or a plain process) owns the run folder; the other ranks
    write into the same one under its lock."""
    return os.environ.get("RANK", "0") == "0"


def save_run_config(cfg: DictConfig, run_dir: Path) -> None:
    """The resolved config, this run's overrides and Hydra's settings into ``.hydra/``."""
    folder = run_dir / ".hydra"
    folder.mkdir(parents=True, exist_ok=True)
    hydra_cfg = HydraConfig.get()
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    (folder / "overrides.yaml").write_text(OmegaConf.to_yaml(hydra_cfg.overrides.task))
    (folder / "hydra.yaml").write_text(OmegaConf.to_yaml({"hydra": hydra_cfg}))


def _fail(name: str, message: str) -> None:
    print(f"{name}: error: {message}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


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
        start = RunFolderStart(run_dir)
        lock = FolderLock(run_dir, what=f"hydra.run.dir={run_dir}")

        def refuse(error: UserError) -> None:
            undone = start.restore()
            lock.release()
            if undone:
                _remove_if_empty(run_dir)
            _fail(name, _one_line(error))

        try:
            if _locks_run_folder():
                lock.acquire()
            with open_dict(cfg):
                cfg.run_dir = str(run_dir)
            OmegaConf.resolve(cfg)
            check_overrides(HydraConfig.get().overrides.task)
            validate_config(cfg)
            if check is not None:
                check(cfg)
            save_run_config(cfg, run_dir)
            with sigterm_interrupts():
                return task(cfg)
        except UserError as error:
            if full_error:
                raise
            refuse(error)
        except KeyboardInterrupt as interrupt:
            if full_error:
                raise
            how = f"stopped by {interrupt}" if isinstance(interrupt, Terminated) else "interrupted"
            print(f"{name}: {how}; what was written so far is in {run_dir}; to go on: "
                  f"{rerun_command(name, run_dir)}", file=sys.stderr)  # fmt: skip
            sys.exit(EXIT_INTERRUPTED)
        finally:
            lock.release()

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
        errors = [] if full_error else group_choice_errors(sys.argv[1:])
        if errors:
            _fail(name, errors[0])
        wrapped()

    main.__doc__ = task.__doc__
    return main
