"""Every method by name: one line each, and the model built from a checkpoint's record.

``METHODS`` maps a name to its method class, as a ``"module:Class"`` entry point (imported
when the registry is), and the settings in which it differs from the class's defaults;
several names may share a class with other settings (``simclr`` and ``simclr_tt`` are one
NT-Xent on different pairs). Importing this module registers each entry as a Hydra option of
the ``method`` config group (``method=<name>``, its settings as the node), so a method's keys
and defaults live only in its own file and adding one is a file plus a line here. :func:`architecture_of` records what
decides the shapes of a run's weights and :func:`build_model` rebuilds a model from that
record and the saved settings, so resume and ``ciper-eval`` rebuild any method.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from conf.schema import CiperConfig, MethodConfig, register_group
from learner.methods.base import HeadWidths, Method, PredictsAction, TargetLayout
from learner.nets.encoders import ENCODER_VERSION, build_encoder
from learner.nets.pair_model import PairModel

# name: ("module:Class" of the method, its settings that differ from the class's defaults)
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "ciper": ("learner.methods.ciper:Ciper", {}),
    "simclr": ("learner.methods.simclr:SimCLR", {}),
    "simclr_tt": ("learner.methods.simclr:SimCLR", {"time_offset": 4}),
    # CIPER's contrastive half: its pairs (offset 1) and augmentations, the prediction term off
    "ciper_contrastive": ("learner.methods.simclr:SimCLR", {"time_offset": 1}),
    "predict": ("learner.methods.predict:Predict", {}),
    "sie": ("learner.methods.sie:SIE", {}),
    # the ceiling: the same encoder, data and budget, trained on the labels the evaluation reads
    "supervised": ("learner.methods.supervised:Supervised", {}),
}
DEFAULT_METHOD = "ciper"


def method_class(name: str) -> type[Method]:
    """The class of method ``name``; ValueError naming the registered ones otherwise."""
    if name not in METHODS:
        raise ValueError(f"method={name!r}: expected one of {sorted(METHODS)}")
    module, _, cls = METHODS[name][0].partition(":")
    return getattr(importlib.import_module(module), cls)


def default_settings(name: str) -> MethodConfig:
    """Method ``name``'s settings as ``method=<name>`` gives them."""
    return method_class(name).settings_class(**{**METHODS[name][1], "name": name})


def register_method_configs() -> None:
    """Each method's default settings as the Hydra option ``method=<name>``."""
    register_group("method", {name: default_settings(name) for name in METHODS}, DEFAULT_METHOD)


register_method_configs()


def predicts_action(name: str) -> bool:
    """Whether method ``name`` predicts the relative action (``PredictsAction``)."""
    return issubclass(method_class(name), PredictsAction)


def settings_from_record(record: dict[str, Any]) -> MethodConfig:
    """A method's settings from the plain dict a checkpoint or config stores."""
    if record.get("name") not in METHODS:
        raise ValueError(f"method settings {record}: method.name={record.get('name')!r} is not one of {sorted(METHODS)}")
    cls = method_class(record["name"]).settings_class
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{key: value for key, value in record.items() if key in known})


def architecture_of(cfg: CiperConfig, layout: TargetLayout) -> dict[str, Any]:
    """The config keys that decide the shapes of a run's weights, and what its targets mean."""
    return {
        "method": cfg.method.name,
        "encoder": cfg.model.encoder,
        "stem": cfg.model.stem,
        "width": cfg.model.width,
        "proj_hidden": cfg.model.proj_hidden,
        "proj_dim": cfg.model.proj_dim,
        "pred_hidden": cfg.model.pred_hidden,
        "encoder_version": ENCODER_VERSION,
        "target": layout.record(),
        "env_id": cfg.env.id,
        "action_set": cfg.env.action_set,
        "image_size": cfg.env.image_size,
    }


def build_model(architecture: dict[str, Any], settings: MethodConfig) -> PairModel:
    """A freshly initialised model with the shapes of ``architecture`` and the method of
    ``settings`` (built in that order: encoder, then the method's heads)."""
    if settings.name != architecture["method"]:
        raise ValueError(f"settings of method {settings.name!r} for an architecture of method {architecture['method']!r}")
    encoder_kw: dict[str, Any] = (
        {"stem": architecture["stem"]} if architecture["encoder"] == "resnet18" else {"width": architecture["width"]}
    )
    encoder, feat_dim = build_encoder(architecture["encoder"], **encoder_kw)
    widths = HeadWidths(_widths(architecture["proj_hidden"]), int(architecture["proj_dim"]), _widths(architecture["pred_hidden"]))
    method = method_class(settings.name)(settings, feat_dim, TargetLayout.from_record(architecture["target"]), widths)
    return PairModel(encoder, method)


def _widths(hidden: int | list[int] | tuple[int, ...]) -> tuple[int, ...]:
    return (int(hidden),) if isinstance(hidden, int) else tuple(int(h) for h in hidden)
