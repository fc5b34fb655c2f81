"""Every method by name: one line each, and the model built from a checkpoint's record.

``METHODS`` maps a name to its method class and its default settings; several names may
share a class with other settings (``simclr``, ``simclr_tt`` and ``ciper_contrastive`` are
one NT-Xent on different pairs). Importing this module registers each entry as a Hydra
option of the ``method`` config group (``method=<name>``, its settings as the node), so a
method's keys and defaults live only in its own file. :func:`architecture_of` records what
decides the shapes of a run's weights and :func:`build_model` rebuilds a model from that
record and the saved settings, so resume and ``ciper-eval`` rebuild any method.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from conf.schema import CiperConfig, MethodConfig, register_group
from learner.methods.base import HeadWidths, Method, PredictsAction, TargetLayout
from learner.methods.ciper import Ciper, CiperSettings
from learner.methods.predict import Predict, PredictSettings
from learner.methods.simclr import SimCLR, SimCLRSettings
from learner.nets.encoders import ENCODER_VERSION, build_encoder
from learner.nets.pair_model import PairModel

METHODS: dict[str, tuple[type[Method], MethodConfig]] = {
    "ciper": (Ciper, CiperSettings()),
    "simclr": (SimCLR, SimCLRSettings()),
    "simclr_tt": (SimCLR, SimCLRSettings(name="simclr_tt", time_offset=4)),
    "predict": (Predict, PredictSettings()),
}
DEFAULT_METHOD = "ciper"


def register_method_configs() -> None:
    """Each method's default settings as the Hydra option ``method=<name>``."""
    for name, (_, settings) in METHODS.items():
        if settings.name != name:
            raise ValueError(f"METHODS[{name!r}] has settings.name={settings.name!r}: expected the same name")
    register_group("method", {name: settings for name, (_, settings) in METHODS.items()}, DEFAULT_METHOD)


register_method_configs()


def method_class(name: str) -> type[Method]:
    """The class of method ``name``; ValueError naming the registered ones otherwise."""
    if name not in METHODS:
        raise ValueError(f"method={name!r}: expected one of {sorted(METHODS)}")
    return METHODS[name][0]


def predicts_action(name: str) -> bool:
    """Whether method ``name`` predicts the relative action (``PredictsAction``)."""
    return issubclass(method_class(name), PredictsAction)


def settings_from_record(record: dict[str, Any]) -> MethodConfig:
    """A method's settings from the plain dict a checkpoint or config stores."""
    cls = type(METHODS[record["name"]][1]) if record.get("name") in METHODS else None
    if cls is None:
        raise ValueError(f"method settings {record}: method.name={record.get('name')!r} is not one of {sorted(METHODS)}")
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
