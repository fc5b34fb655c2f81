"""The pair model: one encoder shared by both views of a pair, and the method that scores them.

``PairModel`` runs the 2N views of N pairs through the encoder as one batch (one pass is
faster, and BatchNorm sees the statistics of all 2N views, as in SimCLR) and hands the
features with the pair's targets to its method module, whose heads turn them into loss
terms. It knows no method by name: whatever ``learner.methods`` built sits in ``method``.
Only the encoder is kept after training (``encode``); the model never chooses a device.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn


class PairModel(nn.Module):
    """Encoder plus a method module (its heads and losses).

    Args:
        encoder: maps images (M, 3, H, W) to features (M, feat_dim).
        method: called with the encoded batch (``learner.methods.base.PairBatch``), returns
            the loss terms (a dict with ``loss``, the total to minimise).
    """

    def __init__(self, encoder: nn.Module, method: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.method = method

    def encode(self, images: Tensor) -> Tensor:
        """Encoder features (M, feat_dim) of images (M, 3, H, W): the learned representation."""
        return self.encoder(images)

    def forward(self, images: Tensor, batch: Any) -> dict[str, Tensor]:
        """Loss terms of N pairs whose views a are ``images[:N]`` and views b ``images[N:]``;
        ``batch`` carries their targets (a ``learner.methods.base.PairTargets``)."""
        if images.shape[0] % 2:
            raise ValueError(f"images.shape={tuple(images.shape)}: expected 2N rows, views a then views b")
        return self.method(batch.encoded(self.encoder(images)))  # (2N, feat_dim) features
