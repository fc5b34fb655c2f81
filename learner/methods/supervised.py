"""The supervised ceiling: the same encoder, data and budget, trained on what the env knows.

Not a self-supervised method but the control that says what is learnable at all: an encoder
trained *with* the labels the evaluation reads shows whether a score that no method reaches
is out of reach of the data and budget, or of the method. Each view's visible absolute pose
(the oracle's columns, normalised per column by a BatchNorm without affine parameters) is
regressed and its category classified by heads on that view's features; each pair's relative
action (and augmentation deltas) is predicted from both views' features by CIPER's own
prediction head, because a relative rotation of an object whose texture fixes no canonical
frame is readable from two views but not from one. ``loss = pose_weight * pose +
category_weight * category + action_weight * prediction``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from conf.schema import MethodConfig, check_not_negative
from learner.methods.action_prediction import ActionPrediction
from learner.methods.base import HeadWidths, Method, PairBatch, TargetLayout
from learner.methods.losses import ActionNormalizer, action_prediction_loss
from learner.nets.heads import mlp


@dataclass
class SupervisedSettings(MethodConfig):
    name: str = "supervised"  # the method; set it with method=<name>, which also brings its own keys and defaults
    pose_weight: float = 1.0  # weight of each view's absolute-pose regression
    category_weight: float = 1.0  # weight of each view's category cross entropy
    action_weight: float = 1.0  # weight of each pair's relative-action prediction

    def check(self) -> None:
        super().check()
        check_not_negative(self, "pose_weight", "category_weight", "action_weight")


class Supervised(Method):
    """Per-view pose and category heads, and the pair's action prediction."""

    settings_class = SupervisedSettings

    def __init__(self, settings: SupervisedSettings, feat_dim: int, layout: TargetLayout, widths: HeadWidths) -> None:
        super().__init__(settings, feat_dim, layout, widths)
        self.pose_head = mlp(feat_dim, widths.pred_hidden, len(layout.pose_names))
        self.pose_normalizer = ActionNormalizer(len(layout.pose_names))
        self.category_head = nn.Linear(feat_dim, max(layout.categories, 1))
        self.prediction = ActionPrediction(feat_dim, widths.pred_hidden, layout)

    def forward(self, batch: PairBatch) -> dict[str, Tensor]:
        s = self.settings
        pose = action_prediction_loss(self.pose_head(batch.features).float(), self.pose_normalizer(batch.pose.float()))
        labelled = batch.category >= 0
        logits = self.category_head(batch.features).float()
        # Views without a category (extra meshes) have no label: their term is 0, not nan.
        category = F.cross_entropy(logits[labelled], batch.category[labelled]) if bool(labelled.any()) else logits.sum() * 0
        prediction = self.prediction(batch.features_a, batch.features_b, batch.target)
        loss = s.pose_weight * pose + s.category_weight * category + s.action_weight * prediction
        return {"pose": pose, "category": category, "prediction": prediction, "loss": loss}

    def action_errors(self) -> Tensor | None:
        return self.prediction.action_errors()
