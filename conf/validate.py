"""One check of the whole config before a console script writes anything.

`validate_config` checks ranges and choices of every key, the consistency of keys that
only make sense together (``train.dataset`` needs ``train.mode=offline``), and the env
arguments through the env's own constructor checks (the env is built and closed, never
rendered). `check_overrides` refuses ``+key=value`` for a key the schema does not have,
which Hydra would otherwise add and every script would silently ignore. Every problem is
a `ConfigError` whose message names the key, the value and what is expected; the console
scripts (``conf.app``) print it as one line and exit with code 2.
"""

from __future__ import annotations

import difflib
import importlib.util
import re
from collections.abc import Iterable
from typing import Any

import gymnasium as gym
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType
from omegaconf import DictConfig, OmegaConf

import envs  # noqa: F401  (registers the ids)
from conf.errors import UserError
from conf.schema import GROUP_OPTIONS, CiperConfig
from envs import iebench_state
from envs.view_arguments import env_kwargs


class ConfigError(UserError, ValueError):
    """A mistake in the command line or the config: one line naming key, value and what is
    expected; the console scripts exit with code 2 and write nothing."""


# key: (smallest allowed value, whether None is allowed)
_INT_AT_LEAST: dict[str, tuple[int, bool]] = {
    "env.episode_steps": (1, False),
    "collector.num_envs": (1, False), "collector.num_workers": (1, False), "collector.chunk_steps": (1, False),
    "collector.lead_views": (0, True), "policy.curious_candidates": (1, False),
    "policy.curious_refresh_steps": (1, False), "policy.curious_features": (1, False),
    "buffer.capacity": (2, False), "buffer.max_offset": (1, False), "buffer.min_offset": (0, False),
    "buffer.warmup_views": (0, False),
    "dataset.steps": (1, False), "dataset.shard_size": (1, False),
    "model.width": (1, False), "model.proj_hidden": (1, False), "model.proj_dim": (1, False),
    "model.pred_hidden": (1, False),
    "optim.warmup_steps": (0, False),
    "train.steps": (1, False), "train.batch_size": (2, False), "train.checkpoint_every": (1, False),
    "train.log_every": (1, False), "train.stop_after": (1, True), "train.loader_workers": (0, False),
    "eval.views_per_object": (2, False), "eval.objects_limit": (1, True), "eval.probe_epochs": (1, False),
    "eval.knn_k": (1, False),
    "report.steps": (1, False), "report.batch_size": (2, False), "report.dataset_steps": (1, False),
    "view.rows": (1, False), "view.steps": (1, False), "view.video_steps": (1, False), "view.fps": (1, False),
    "view.upscale": (1, False),
}  # fmt: skip
_WHY = {"train.batch_size": " (NT-Xent needs a negative)", "report.batch_size": " (NT-Xent needs a negative)"}
_POSITIVE = ("optim.lr", "train.replay_ratio", "policy.curious_lengthscale", "policy.curious_ridge")
_NOT_NEGATIVE = ("optim.weight_decay", "policy.curious_ucb_beta")
_CHOICES: dict[str, tuple[str, ...]] = {
    "train.mode": ("online", "offline"),
    "collector.kind": ("local", "ray"),
    "collector.vectorization": ("async", "sync"),
    "model.encoder": ("small", "resnet18"),
    "report.encoder": ("small", "resnet18"),
    "report.mode": ("offline", "online"),
    "model.stem": ("cifar", "imagenet"),
    "env.renderer": ("tiny", "egl"),
    "policy.name": tuple(GROUP_OPTIONS["policy"]),
    "view.source": ("env", "dataset"),
    "view.video_format": ("gif", "mp4"),
    "dataset.format": ("shards", "3diebench"),
}
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def schema_keys() -> list[str]:
    """Every dotted key of the schema (``env.image_size``, ...), leaves only."""
    keys: list[str] = []

    def walk(node: Any, prefix: str) -> None:
        for key in node:
            value = node._get_node(key)
            if isinstance(value, DictConfig) and not prefix + key == "env.extra":
                walk(value, f"{prefix}{key}.")
            else:
                keys.append(prefix + key)

    walk(OmegaConf.structured(CiperConfig), "")
    return keys


# Dict-valued keys whose entries are free-form: added with +key.entry=value.
_FREE_FORM = ("env.extra.", "report.method_overrides.", "report.variants.")


def check_overrides(overrides: Iterable[str]) -> None:
    """Refuse ``+key=value`` / ``++key=value`` for a key outside the schema (the entries of
    ``env.extra``, the free-form env arguments, and of ``report.method_overrides`` excepted)."""
    known = schema_keys()
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if key == "run_dir":  # Hydra makes its own folder; one way to choose it
            raise ConfigError(f"{override.input_line}: choose the run folder with hydra.run.dir=PATH")
        adds = override.type in (OverrideType.ADD, OverrideType.FORCE_ADD)
        if not adds or key.startswith(_FREE_FORM) or key in GROUP_OPTIONS or key.startswith("hydra."):
            continue
        if key in known:
            continue
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ConfigError(
            f"{override.input_line}: {key} is not a config key; {hint}set existing keys without '+' "
            f"(e.g. {close[0] if close else 'train.steps'}=...), see --help"
        )


_ABSENT = object()


def _check_ranges(cfg: DictConfig) -> None:
    for key, (minimum, none_ok) in _INT_AT_LEAST.items():
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if value is _ABSENT or (value is None and none_ok):
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            expected = f"an int >= {minimum}" + (" or null" if none_ok else "")
            raise ConfigError(f"{key}={value!r}: expected {expected}{_WHY.get(key, '')}")
    for key in (*_POSITIVE, *_NOT_NEGATIVE):
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if value is _ABSENT:
            continue
        positive = key in _POSITIVE
        if not (value > 0 if positive else value >= 0):
            raise ConfigError(f"{key}={value!r}: expected a number {'> 0' if positive else '>= 0'}")
    for key, choices in _CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in choices:
            raise ConfigError(f"{key}={value!r}: expected one of {', '.join(choices)}")
    epsilon = OmegaConf.select(cfg, "policy.curious_epsilon", default=0.0)
    if not 0.0 <= epsilon <= 1.0:
        raise ConfigError(f"policy.curious_epsilon={epsilon!r}: expected a share in [0, 1]")
    _check_method(cfg)
    if not cfg.report.seeds:
        raise ConfigError("report.seeds=[]: expected at least one seed")


def _check_method(cfg: DictConfig) -> None:
    """The method's settings (its own ``check``) and the names of methods the report runs,
    against the registered ``method`` options (none registered: only the settings)."""
    settings = OmegaConf.to_object(cfg.method)
    try:
        settings.check()
    except ValueError as error:
        raise ConfigError(str(error)) from error
    options = GROUP_OPTIONS.get("method")
    if options is None:
        return
    name = cfg.method.name
    if name not in options or type(settings) is not type(options[name]):
        raise ConfigError(f"method.name={name!r}: choose a method with method=<name>, one of {', '.join(options)}")
    report = cfg.report
    for method in report.methods:
        if method not in options:
            raise ConfigError(f"report.methods holds {method!r}: expected names from {', '.join(options)}")

    def known(label: str) -> bool:  # a method, or method@variant
        method, _, variant = label.partition("@")
        return method in options and (not variant or variant in report.variants)

    for key in ("ours", "baseline", "ceiling"):
        if report[key] is not None and not known(report[key]):
            raise ConfigError(f"report.{key}={report[key]!r}: expected a method ({', '.join(options)}), or "
                              f"method@variant with a variant of report.variants")  # fmt: skip
    for pair in report.comparisons:
        if len(pair) != 2 or not all(known(label) for label in pair):
            raise ConfigError(f"report.comparisons holds {list(pair)}: expected [a, b], each a method or method@variant")
    for method in report.method_overrides:
        if method not in options:
            raise ConfigError(f"report.method_overrides holds {method!r}: expected names from {', '.join(options)}")


def _check_consistency(cfg: DictConfig) -> None:
    if cfg.buffer.min_offset > cfg.buffer.max_offset:
        raise ConfigError(
            f"buffer.min_offset={cfg.buffer.min_offset}: expected <= buffer.max_offset={cfg.buffer.max_offset}"
        )
    lead, warmup = cfg.collector.lead_views, cfg.buffer.warmup_views
    if lead is not None and lead < warmup:
        raise ConfigError(
            f"collector.lead_views={lead}: expected >= buffer.warmup_views={warmup} (collectors paused below the "
            "warm-up would never let the learner start), or null for no rate limit"
        )
    if cfg.train.dataset is not None and cfg.train.mode != "offline":
        raise ConfigError(
            f"train.dataset={cfg.train.dataset}: given with train.mode={cfg.train.mode}, which does not read it; "
            "add train.mode=offline (or drop train.dataset)"
        )
    if cfg.train.mode == "offline" and cfg.train.dataset is None:
        raise ConfigError("train.mode=offline: expected train.dataset=PATH too (a folder written by ciper-rollout)")
    if cfg.collector.kind == "ray" and importlib.util.find_spec("ray") is None:
        raise ConfigError("collector.kind=ray: Ray is not installed; pip install -e '.[distributed]', or collector=local")
    device = cfg.train.device
    if not _DEVICE.match(device):
        raise ConfigError(f"train.device={device!r}: expected auto, cpu, cuda or cuda:N")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"train.device={device}: CUDA is not available on this machine; use auto or cpu")


def _env_error(error: Exception, env_cfg: DictConfig) -> ConfigError:
    """The env's own message with the argument renamed to its config key."""
    message = (str(error).splitlines() or [type(error).__name__])[0]
    message = message.split(" was raised from the environment creator")[0]  # gymnasium's wrapping
    unexpected = re.search(r"unexpected keyword argument '(\w+)'", message)
    if unexpected:
        name = unexpected.group(1)
        value = (env_cfg.extra or {}).get(name)
        return ConfigError(f"env.extra.{name}={value!r}: not an argument of {env_cfg.id}")
    name = message.split("=", 1)[0] if "=" in message.split(":", 1)[0] else ""
    if name in env_cfg and name != "extra":
        return ConfigError(f"env.{message}")
    if name in (env_cfg.extra or {}):
        return ConfigError(f"env.extra.{message}")
    return ConfigError(f"env ({env_cfg.id}): {message}")


def check_env_arguments(env_cfg: DictConfig, splits: Iterable[tuple[str, str]] = ()) -> None:
    """Build (and close) the env with ``env_cfg``'s arguments so its constructor checks them,
    once per extra ``(key, split)`` too (evaluation splits). Nothing is rendered."""
    if env_cfg.id == envs.IEBENCH_ID:  # recorded views: no env to build, the world checks its arguments
        _check_benchmark_arguments(env_cfg, splits)
        return
    registered = sorted(k for k in gym.registry if k.startswith("ciper/"))
    if env_cfg.id not in registered:
        raise ConfigError(f"env.id={env_cfg.id!r}: expected one of {', '.join(registered)}")
    kwargs = env_kwargs(env_cfg)
    for key, split in (("env.split", kwargs["split"]), *splits):
        try:
            gym.make(env_cfg.id, **{**kwargs, "split": split}).close()
        except (ValueError, TypeError, FileNotFoundError, KeyError) as error:
            converted = _env_error(error, env_cfg)
            if key != "env.split" and str(converted).startswith("env.split="):
                converted = ConfigError(str(converted).replace("env.split=", f"{key}=", 1))
            raise converted from error


def _check_benchmark_arguments(env_cfg: DictConfig, splits: Iterable[tuple[str, str]]) -> None:
    """`envs.iebench_state.check_arguments` for ``env.*`` and every ``(key, split)``, its
    message's argument renamed to the config key."""
    for key, split in (("env.split", env_cfg.split), *splits):
        try:
            iebench_state.check_arguments(env_cfg.action_set, env_cfg.image_size, env_cfg.catalog, [split])
        except (ValueError, FileNotFoundError) as error:
            converted = _env_error(error, env_cfg)
            if key != "env.split" and str(converted).startswith("env.split="):
                converted = ConfigError(str(converted).replace("env.split=", f"{key}=", 1))
            raise converted from error


def validate_config(cfg: DictConfig, check_env: bool = True) -> None:
    """Raise `ConfigError` for the first key of ``cfg`` out of range or inconsistent."""
    _check_ranges(cfg)
    _check_consistency(cfg)
    if check_env:
        splits = {cfg.eval.train_split: "eval.train_split", cfg.eval.test_split: "eval.test_split"}
        check_env_arguments(cfg.env, [(key, split) for split, key in splits.items() if split != cfg.env.split])
