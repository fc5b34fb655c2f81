"""Prediction only: CIPER's equivariant term alone (the relative action from both views).

The control that shows what predicting the action does without a contrastive term: the same
pairs, augmentations and prediction head as ``ciper``, no projection head.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from conf.schema import MethodConfig
from learner.methods.action_prediction import ActionPrediction
from learner.methods.base import HeadWidths, Method, PairBatch, TargetLayout


@dataclass
class PredictSettings(MethodConfig):
    name: str = "predict"  # the method; set it with method=<name>, which also brings its own keys and defaults


class Predict(Method):
    """The action prediction of :mod:`learner.methods.action_prediction`, nothing else."""

    settings_class = PredictSettings

    def __init__(self, settings: PredictSettings, feat_dim: int, layout: TargetLayout, widths: HeadWidths) -> None:
        super().__init__(settings, feat_dim, layout, widths)
        self.prediction = ActionPrediction(feat_dim, widths.pred_hidden, layout)

    def forward(self, batch: PairBatch) -> dict[str, Tensor]:
        prediction = self.prediction(batch.features_a, batch.features_b, batch.target)
        return {"prediction": prediction, "loss": prediction}

    def action_errors(self) -> Tensor | None:
        return self.prediction.action_errors()
