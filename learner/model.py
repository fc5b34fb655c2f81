"""The CIPER model (encoder + optional heads) and the per-method loss recipe.

``CiperModel`` holds an encoder, a projection head for the contrastive term, and a
prediction head with its target normaliser for the predictive term; a method builds only
the heads it uses. ``METHODS`` says which heads each method needs, and ``method_losses``
combines the pure functions of ``learner.losses`` according to those flags alone, so one
training loop serves every method (Xu & Triesch 2023; Ciper-SimCLR for the head layout).
The model never chooses a device: the caller moves it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from learner.encoders import build_encoder
from learner.heads import prediction_head, projection_head
from learner.losses import ActionNormalizer, action_prediction_loss, binary_action_loss, nt_xent


@dataclass(frozen=True)
class MethodSpec:
    """Which heads a method trains; its loss is the sum of the matching terms."""

    needs_projector: bool  # contrastive NT-Xent term on projected encoder features
    needs_predictor: bool  # regression of the relative action (and augmentation) from both views


# The pairs are the config's (``method.time_offset``; ``conf.schema.GROUP_OPTIONS``), not
# the spec's: simclr pairs two augmented copies of one view (offset 0, Chen et al. 2020),
# simclr_tt views up to k steps apart plus the same augmentations (Aubret et al. 2023).
METHODS: dict[str, MethodSpec] = {
    # contrastive + lambda * prediction of the relative action and augmentation parameters
    # (Xu & Triesch 2023; AugSelf, Lee et al. 2021, for the augmentation part)
    "ciper": MethodSpec(needs_projector=True, needs_predictor=True),
    # contrastive only on two augmented copies of one view (Chen et al. 2020)
    "simclr": MethodSpec(needs_projector=True, needs_predictor=False),
    # contrastive only on time pairs plus the same augmentations (Aubret et al. 2023)
    "simclr_tt": MethodSpec(needs_projector=True, needs_predictor=False),
    # prediction only (the equivariant term alone)
    "predict": MethodSpec(needs_projector=False, needs_predictor=True),
}


def method_spec(method: str) -> MethodSpec:
    """The ``MethodSpec`` of ``method``; ValueError naming the valid methods otherwise."""
    if method not in METHODS:
        raise ValueError(f"method={method!r}: expected one of {sorted(METHODS)}")
    return METHODS[method]


class CiperModel(nn.Module):
    """Encoder with an optional projection head and an optional action prediction head.

    Args:
        encoder: maps images (N, 3, H, W) to features (N, feat_dim).
        projector: (N, feat_dim) -> (N, proj_dim), or None when no contrastive term.
        predictor: (N, 2*feat_dim) -> (N, action_dim), or None when no predictive term.
        action_normalizer: normalises the regression target; required with a predictor,
            None without one.
    """

    def __init__(
        self,
        encoder: nn.Module,
        projector: nn.Module | None = None,
        predictor: nn.Module | None = None,
        action_normalizer: ActionNormalizer | None = None,
        discrete_columns: Sequence[bool] | None = None,
    ) -> None:
        super().__init__()
        if (predictor is None) != (action_normalizer is None):
            raise ValueError(
                "predictor and action_normalizer go together: got "
                f"predictor={'set' if predictor is not None else None}, "
                f"action_normalizer={'set' if action_normalizer is not None else None}"
            )
        self.encoder = encoder
        self.projector = projector
        self.predictor = predictor
        self.action_normalizer = action_normalizer
        # Which action columns are two-valued (classified with cross entropy, not regressed).
        mask = None if discrete_columns is None else torch.as_tensor(list(discrete_columns), dtype=torch.bool)
        self.register_buffer("discrete_columns", mask, persistent=False)

    def encode(self, x: Tensor) -> Tensor:
        """Encoder features (N, feat_dim) of images (N, 3, H, W): the learned representation."""
        return self.encoder(x)

    def forward(self, x_a: Tensor, x_b: Tensor) -> dict[str, Tensor]:
        """Run both views of N pairs through the model.

        Returns ``h_a``, ``h_b`` (N, feat_dim); ``z_a``, ``z_b`` (N, proj_dim) with a
        projector; ``action_pred`` (N, action_dim) with a predictor. Both views go through
        the encoder and projector as one batch of 2N: one pass is faster, and the BatchNorm
        statistics are those of all 2N views, as in SimCLR.
        """
        if x_a.shape != x_b.shape:
            raise ValueError(
                f"x_a.shape={tuple(x_a.shape)}, x_b.shape={tuple(x_b.shape)}: expected equal"
            )
        n = x_a.shape[0]
        h = self.encoder(torch.cat([x_a, x_b]))  # (2N, feat_dim)
        out = {"h_a": h[:n], "h_b": h[n:]}
        if self.projector is not None:
            z = self.projector(h)  # (2N, proj_dim)
            out["z_a"], out["z_b"] = z[:n], z[n:]
        if self.predictor is not None:
            out["action_pred"] = self.predictor(torch.cat([h[:n], h[n:]], dim=1))  # (N, A)
        return out


def build_model(
    method: str,
    encoder_name: str,
    action_dim: int,
    proj_hidden: int | Sequence[int],
    proj_dim: int,
    pred_hidden: int | Sequence[int],
    discrete_columns: Sequence[bool] | None = None,
    **encoder_kw,
) -> CiperModel:
    """Build the encoder ``encoder_name`` (with ``encoder_kw``) and only the heads ``method``
    needs. Hidden widths may be one int (one hidden layer) or a sequence of them.
    ``discrete_columns`` marks two-valued action columns (see ``method_losses``)."""
    spec = method_spec(method)
    encoder, feat_dim = build_encoder(encoder_name, **encoder_kw)
    projector = predictor = normalizer = None
    if spec.needs_projector:
        projector = projection_head(feat_dim, _widths(proj_hidden), proj_dim)
    if spec.needs_predictor:
        predictor = prediction_head(feat_dim, _widths(pred_hidden), action_dim)
        normalizer = ActionNormalizer(action_dim)
    return CiperModel(encoder, projector, predictor, normalizer, discrete_columns if spec.needs_predictor else None)


def _widths(hidden: int | Sequence[int]) -> list[int]:
    return [hidden] if isinstance(hidden, int) else list(hidden)


def method_losses(
    method: str,
    out: dict[str, Tensor],
    relative_action_target: Tensor,
    model: CiperModel,
    temperature: float,
    prediction_weight: float,
    gather: Callable[[Tensor], Tensor] | None = None,
    offset: int = 0,
) -> dict[str, Tensor]:
    """Loss terms of ``method`` for one batch of pairs.

    Args:
        method: a key of ``METHODS``.
        out: ``model(x_a, x_b)``.
        relative_action_target: (N, action_dim) action from view a to view b, raw units,
            followed by the relative augmentation parameters when the views are augmented;
            normalised here by ``model.action_normalizer`` (updating its running statistics
            in train mode).
        model: the model that produced ``out``.
        temperature: NT-Xent temperature.
        prediction_weight: lambda in ``contrastive + lambda * prediction``; a method with
            only the prediction term ignores it (it would merely rescale that term).
        gather, offset: multi-process NT-Xent (negatives from every rank), see
            :func:`learner.losses.nt_xent`.

    Returns:
        ``loss`` (the total to minimise), plus ``contrastive`` if the method has that term
        and ``prediction`` if it has that one; a term the method lacks is absent, not 0.
    """
    spec = method_spec(method)
    losses: dict[str, Tensor] = {}
    if spec.needs_projector:
        if "z_a" not in out:
            raise ValueError(
                f"method={method!r} needs projections z_a, z_b: model has no projector"
            )
        losses["contrastive"] = nt_xent(out["z_a"], out["z_b"], temperature, gather, offset)
    if spec.needs_predictor:
        if "action_pred" not in out or model.action_normalizer is None:
            raise ValueError(f"method={method!r} needs action_pred: model has no predictor")
        losses["prediction"] = _prediction_loss(out["action_pred"], relative_action_target, model)
    if "contrastive" in losses and "prediction" in losses:
        losses["loss"] = losses["contrastive"] + prediction_weight * losses["prediction"]
    else:
        (losses["loss"],) = losses.values()
    return losses


def _prediction_loss(action_pred: Tensor, relative_action_target: Tensor, model: CiperModel) -> Tensor:
    """CIPER's predictive term: MSE on the normalised continuous columns, cross entropy on
    the two-valued ones (a flip happened or not), which are classified, not regressed."""
    # In float32 even under bf16 autocast: the target and its running statistics need
    # more than bf16's three significant digits.
    raw = relative_action_target.float()
    target = model.action_normalizer(raw)
    predicted = action_pred.float()
    discrete = model.discrete_columns
    if discrete is None or not bool(discrete.any()):
        return action_prediction_loss(predicted, target)
    continuous = ~discrete
    loss = binary_action_loss(predicted[:, discrete], raw[:, discrete])
    if bool(continuous.any()):
        loss = loss + action_prediction_loss(predicted[:, continuous], target[:, continuous])
    return loss
