"""SimCLR (Chen et al. 2020): NT-Xent on the projections of a pair's two views.

The one contrastive objective of the project's baselines, on whichever pairs the settings
ask for: ``simclr`` pairs two independent augmentations of one view (``time_offset=0``),
``simclr_tt`` views up to k steps apart plus the same augmentations (SimCLR through time,
Aubret et al. 2023), ``ciper_contrastive`` exactly CIPER's pairs (offset 1) and
augmentations without its prediction term, so that CIPER minus it is the effect of predicting
the action alone. The registry names each of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from conf.schema import MethodConfig, check_positive
from learner.methods.base import HeadWidths, Method, PairBatch, TargetLayout
from learner.methods.losses import nt_xent
from learner.nets.heads import projection_head


@dataclass
class SimCLRSettings(MethodConfig):
    name: str = "simclr"  # the method; set it with method=<name>, which also brings its own keys and defaults
    time_offset: int = 0  # max steps between a pair's views; 0 = two augmented copies of one view
    temperature: float = 0.1  # NT-Xent temperature

    def check(self) -> None:
        super().check()
        check_positive(self, "temperature")


class SimCLR(Method):
    """A projection head (SimCLR's, e.g. 512 -> 2048 -> 128) and NT-Xent over the batch."""

    settings_class = SimCLRSettings

    def __init__(self, settings: SimCLRSettings, feat_dim: int, layout: TargetLayout, widths: HeadWidths) -> None:
        super().__init__(settings, feat_dim, layout, widths)
        self.projector = projection_head(feat_dim, widths.proj_hidden, widths.proj_dim)

    def forward(self, batch: PairBatch) -> dict[str, Tensor]:
        z = self.projector(batch.features)  # (2N, proj_dim): both views in one pass, BatchNorm over 2N
        contrastive = nt_xent(z[: batch.n], z[batch.n :], self.settings.temperature, batch.gather, batch.offset)
        return {"contrastive": contrastive, "loss": contrastive}
