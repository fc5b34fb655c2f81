"""The method protocol: what a method is to the model, the training loop and the checkpoint.

A method is one file in this folder (solo-learn's habit): a settings dataclass that extends
``conf.schema.MethodConfig`` with the method's own keys and defaults (its ``check`` names a
bad value), and a :class:`Method` module that builds its heads from the encoder's feature
width, the :class:`TargetLayout` and the head widths, and turns a :class:`PairBatch` into
its loss terms. Which pairs it trains on is its settings' ``time_offset``. One line in
``learner.methods.registry`` makes it selectable as ``method=<name>``; the loop, the
checkpoint, the evaluation, the report and curiosity never learn its name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

from torch import Tensor, nn

from conf.schema import MethodConfig

Gather = Callable[[Tensor], Tensor]
"""Multi-process hook: a local (N, D) tensor -> every rank's (M, D), gradients kept."""


@dataclass(frozen=True)
class TargetLayout:
    """What the data tells a method about each pair and view (the world's and the
    augmentation's columns), so a method sizes its heads without knowing the world."""

    names: tuple[str, ...]  # columns of a pair's target: the relative action, then delta_<augmentation parameter>
    discrete: tuple[bool, ...]  # per column: two-valued (classified), else continuous (regressed)
    action_dim: int  # the first action_dim columns are the env's relative action
    pose_names: tuple[str, ...]  # columns of each view's visible absolute pose
    categories: int  # category labels of views are 0..categories-1, or -1 for none

    def __post_init__(self) -> None:
        if len(self.discrete) != len(self.names) or not 0 < self.action_dim <= len(self.names):
            raise ValueError(f"target layout names={self.names}, discrete={self.discrete}, action_dim={self.action_dim}: "
                             "expected one flag per column and 0 < action_dim <= columns")  # fmt: skip

    @property
    def dim(self) -> int:
        return len(self.names)

    def record(self) -> dict[str, Any]:
        """Plain data for a checkpoint's architecture record."""
        return {"names": list(self.names), "discrete": list(self.discrete), "action_dim": self.action_dim,
                "pose_names": list(self.pose_names), "categories": self.categories}  # fmt: skip

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> TargetLayout:
        return cls(tuple(record["names"]), tuple(bool(d) for d in record["discrete"]), int(record["action_dim"]),
                   tuple(record["pose_names"]), int(record["categories"]))  # fmt: skip


@dataclass(frozen=True)
class HeadWidths:
    """Widths of the heads a method may build (``model.*``; SimCLR's and Ciper-SimCLR's)."""

    proj_hidden: tuple[int, ...]  # projection head hidden widths
    proj_dim: int  # projection head output
    pred_hidden: tuple[int, ...]  # prediction head hidden widths


@dataclass(frozen=True)
class PairTargets:
    """What is known about N pairs before they are encoded, on the device; rows :N of the
    per-view tensors are views a, rows N: views b (the order of the images)."""

    target: Tensor  # (N, T) relative action then augmentation deltas, raw units (TargetLayout.names)
    pose: Tensor  # (2N, P) float32 visible absolute pose of each view (TargetLayout.pose_names)
    category: Tensor  # (2N,) int64 category label of each view, -1 for none
    gather: Gather | None = None  # multi-process NT-Xent: negatives from every rank
    offset: int = 0  # row of this rank's first pair among the gathered ones

    def encoded(self, features: Tensor) -> PairBatch:
        """These targets with the encoder's features (2N, D) of the views."""
        return PairBatch(features, self.target, self.pose, self.category, self.gather, self.offset)


@dataclass(frozen=True)
class PairBatch:
    """A batch of N encoded pairs as a method sees it, on the device: the encoder's features
    and the :class:`PairTargets` of the pairs (views a are rows :N, views b rows N:)."""

    features: Tensor  # (2N, D) encoder features, views a then b
    target: Tensor  # (N, T) relative action then augmentation deltas, raw units
    pose: Tensor  # (2N, P) visible absolute pose of each view
    category: Tensor  # (2N,) category label of each view, -1 for none
    gather: Gather | None = None
    offset: int = 0

    def __post_init__(self) -> None:
        if self.features.ndim != 2 or self.features.shape[0] != 2 * self.target.shape[0]:
            raise ValueError(f"features.shape={tuple(self.features.shape)}, target.shape={tuple(self.target.shape)}: "
                             "expected (2N, D) features for N pairs")  # fmt: skip

    @property
    def n(self) -> int:
        """Pairs in the batch."""
        return int(self.target.shape[0])

    @property
    def features_a(self) -> Tensor:
        return self.features[: self.n]  # (N, D)

    @property
    def features_b(self) -> Tensor:
        return self.features[self.n :]  # (N, D)


class Method(nn.Module):
    """A method's heads and losses. Subclasses set ``settings_class`` and build their heads
    in ``__init__``; ``forward(batch)`` returns ``{"loss": total, <term>: value, ...}``,
    every term a scalar tensor (a term the method lacks is absent, not 0)."""

    settings_class: ClassVar[type[MethodConfig]] = MethodConfig

    def __init__(self, settings: MethodConfig, feat_dim: int, layout: TargetLayout, widths: HeadWidths) -> None:
        super().__init__()
        if not isinstance(settings, self.settings_class):
            raise TypeError(f"settings of type {type(settings).__name__}: {type(self).__name__} expects "
                            f"{self.settings_class.__name__}")  # fmt: skip
        self.settings = settings
        self.layout = layout

    def forward(self, batch: PairBatch) -> dict[str, Tensor]:  # pragma: no cover - every method defines it
        raise NotImplementedError(f"{type(self).__name__}.forward(batch) returns its loss terms")


@runtime_checkable
class PredictsAction(Protocol):
    """A method whose head predicts each pair's relative action (``policy=curious`` steers
    the observer by its errors)."""

    def action_errors(self) -> Tensor | None:
        """Per-pair squared error (N,) of the last batch's prediction, averaged over the
        env's continuous action columns (normalised units); None before any batch."""
        ...
