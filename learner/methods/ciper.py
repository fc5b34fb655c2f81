"""CIPER (Xu & Triesch 2023, arXiv 2302.02330): contrastive invariance + predictive equivariance.

The encoder's features of a pair's two views (offset 1: consecutive views of the active
observer) feed a projection head with SimCLR's NT-Xent, so what does not change between
them is kept, and a prediction head that regresses the relative action (and the relative
augmentation parameters, AugSelf, Lee et al. 2021), so what does change is kept too:
``loss = contrastive + prediction_weight * prediction``. Heads and defaults follow the
authors' Ciper-SimCLR reimplementation (temperature 0.1, weight 1).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from conf.schema import MethodConfig, check_not_negative, check_positive
from learner.methods.action_prediction import ActionPrediction
from learner.methods.base import HeadWidths, Method, PairBatch, TargetLayout
from learner.methods.losses import nt_xent
from learner.nets.heads import projection_head


@dataclass
class CiperSettings(MethodConfig):
    name: str = "ciper"  # the method; set it with method=<name>, which also brings its own keys and defaults
    temperature: float = 0.1  # NT-Xent temperature
    prediction_weight: float = 1.0  # lambda on the action-prediction loss

    def check(self) -> None:
        super().check()
        check_positive(self, "temperature")
        check_not_negative(self, "prediction_weight")


class Ciper(Method):
    """Projection head + NT-Xent, and the action prediction of :mod:`learner.methods.action_prediction`."""

    settings_class = CiperSettings

    def __init__(self, settings: CiperSettings, feat_dim: int, layout: TargetLayout, widths: HeadWidths) -> None:
        super().__init__(settings, feat_dim, layout, widths)
        self.projector = projection_head(feat_dim, widths.proj_hidden, widths.proj_dim)
        self.prediction = ActionPrediction(feat_dim, widths.pred_hidden, layout)

    def forward(self, batch: PairBatch) -> dict[str, Tensor]:
        z = self.projector(batch.features)  # (2N, proj_dim)
        contrastive = nt_xent(z[: batch.n], z[batch.n :], self.settings.temperature, batch.gather, batch.offset)
        prediction = self.prediction(batch.features_a, batch.features_b, batch.target)
        loss = contrastive + self.settings.prediction_weight * prediction
        return {"contrastive": contrastive, "prediction": prediction, "loss": loss}

    def action_errors(self) -> Tensor | None:
        return self.prediction.action_errors()
