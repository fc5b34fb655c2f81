"""CIPER's predictive term as a reusable part: predict a pair's relative action from both views.

A head reads the concatenated encoder features of the two views (Ciper-SimCLR: one hidden
layer of 1024 with BatchNorm and ReLU) and predicts the pair's target: the relative action,
then the relative augmentation parameters (AugSelf, Lee et al. 2021). Continuous columns are
normalised by a BatchNorm without affine parameters and regressed (MSE); two-valued columns
(ImageView's flip) are classified (cross entropy). Every method that predicts the action
(ciper, predict, the supervised ceiling) holds one, and it keeps the last batch's per-pair
errors for ``policy=curious``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from learner.methods.base import TargetLayout
from learner.methods.losses import ActionNormalizer, action_prediction_loss, binary_action_loss
from learner.nets.heads import prediction_head


class ActionPrediction(nn.Module):
    """Head + target normaliser + loss of the relative-action prediction."""

    def __init__(self, feat_dim: int, hidden: tuple[int, ...], layout: TargetLayout) -> None:
        super().__init__()
        self.head = prediction_head(feat_dim, hidden, layout.dim)
        self.normalizer = ActionNormalizer(layout.dim)
        self.action_dim = layout.action_dim
        # Which target columns are two-valued (classified with cross entropy, not regressed).
        self.register_buffer("discrete", torch.as_tensor(layout.discrete, dtype=torch.bool), persistent=False)
        self._errors: Tensor | None = None

    def forward(self, features_a: Tensor, features_b: Tensor, target: Tensor) -> Tensor:
        """The predictive loss of N pairs: features (N, D) of views a and b, target (N, T)
        in raw units; the normaliser's running statistics update in train mode."""
        predicted = self.head(torch.cat([features_a, features_b], dim=1))  # (N, T)
        # In float32 even under bf16 autocast: the target and its running statistics need
        # more than bf16's three significant digits.
        raw = target.float()
        normalised = self.normalizer(raw)
        predicted = predicted.float()
        self._errors = self._action_errors(predicted.detach(), normalised.detach())
        discrete = self.discrete
        if not bool(discrete.any()):
            return action_prediction_loss(predicted, normalised)
        continuous = ~discrete
        loss = binary_action_loss(predicted[:, discrete], raw[:, discrete])
        if bool(continuous.any()):
            loss = loss + action_prediction_loss(predicted[:, continuous], normalised[:, continuous])
        return loss

    def _action_errors(self, predicted: Tensor, normalised: Tensor) -> Tensor:
        # The observer chooses actions: only the action's continuous columns count, not the
        # augmentation's, and not two-valued columns (logits, not regressions).
        squared = (predicted - normalised)[:, : self.action_dim] ** 2  # (N, A)
        return squared[:, ~self.discrete[: self.action_dim]].mean(dim=1)

    def action_errors(self) -> Tensor | None:
        """Per-pair squared error (N,) of the last call (see ``PredictsAction``)."""
        return self._errors
