"""Loss functions of the learner: pure, typed, and free of config.

- ``nt_xent``: SimCLR's normalised-temperature cross entropy (Chen et al. 2020, "A Simple
  Framework for Contrastive Learning of Visual Representations", eq. 1), the contrastive
  term of CIPER (Xu & Triesch 2023, arXiv 2302.02330). An optional ``gather`` hook lets a
  distributed caller contrast against the negatives of every rank.
- ``action_prediction_loss`` / ``binary_action_loss``: CIPER's predictive term, regressing
  (MSE) or classifying (cross entropy of two-valued columns) the action, and the augmentation
  parameters (AugSelf, Lee et al. 2021), that turned one view into the other.
- ``ActionNormalizer``: puts the regression target on a common scale, as Ciper-SimCLR does
  with a BatchNorm without affine parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def nt_xent(
    z_a: Tensor,
    z_b: Tensor,
    temperature: float,
    gather: Callable[[Tensor], Tensor] | None = None,
    offset: int = 0,
) -> Tensor:
    """SimCLR NT-Xent loss of N positive pairs ``(z_a[i], z_b[i])``.

    Each of the 2N projections is an anchor; its positive is the other view of its pair and
    its negatives are the other 2N-2 projections. The loss is the cross entropy of the
    positive among the 2N-1 candidates (cosine similarity / temperature), averaged over the
    2N anchors: the value of the reference implementations (SimCLR's TF code, lightly,
    solo-learn). Projections are L2-normalised here.

    Distributed use: ``gather`` maps a local (N, D) tensor to the (M, D) concatenation of
    every rank's tensor (M = sum of the ranks' N), and ``offset`` is the row where this
    rank's pairs start in it (``rank * N`` for equal batches). The local anchors are then
    contrasted with all 2M projections. ``gather`` must keep gradients (e.g.
    ``torch.cat(torch.distributed.nn.functional.all_gather(x))``, not
    ``torch.distributed.all_gather``); the mean of the ranks' losses, which DDP's gradient
    averaging optimises, then equals the single-process loss on the global batch.
    With ``gather=None`` (single process) the candidates are the local 2N projections.

    Args:
        z_a, z_b: (N, D) projections of the two views; row i of each is a positive pair.
        temperature: softmax temperature, > 0 (0.1 in Ciper-SimCLR).
        gather: optional all-gather hook, see above.
        offset: start row of the local pairs in the gathered batch.

    Returns:
        Scalar tensor: the mean over the 2N local anchors.
    """
    _check_projections(z_a, z_b, temperature, gathered=gather is not None)
    n = z_a.shape[0]
    z_a = F.normalize(z_a, dim=1)  # (N, D)
    z_b = F.normalize(z_b, dim=1)  # (N, D)
    all_a = z_a if gather is None else gather(z_a)  # (M, D)
    all_b = z_b if gather is None else gather(z_b)  # (M, D)
    _check_gathered(all_a, all_b, n, offset)
    m = all_a.shape[0]

    anchors = torch.cat([z_a, z_b])  # (2N, D)
    candidates = torch.cat([all_a, all_b])  # (2M, D)
    logits = anchors @ candidates.T / temperature  # (2N, 2M)
    rows = torch.arange(n, device=logits.device)
    local = rows + offset  # (N,) global index of each local pair
    self_index = torch.cat([local, local + m])  # (2N,) where each anchor sits among candidates
    positive_index = torch.cat([local + m, local])  # (2N,) where its other view sits
    # An anchor's similarity to itself is always 1/temperature: remove it from the softmax.
    is_self = torch.zeros_like(logits, dtype=torch.bool)  # (2N, 2M)
    is_self[torch.arange(2 * n, device=logits.device), self_index] = True
    return F.cross_entropy(logits.masked_fill(is_self, float("-inf")), positive_index)


def _check_projections(z_a: Tensor, z_b: Tensor, temperature: float, gathered: bool) -> None:
    if z_a.ndim != 2 or z_a.shape != z_b.shape:
        raise ValueError(
            f"z_a.shape={tuple(z_a.shape)}, z_b.shape={tuple(z_b.shape)}: "
            "expected two (N, D) tensors of the same shape"
        )
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature={temperature}: expected a finite value > 0")
    if not gathered and z_a.shape[0] < 2:
        raise ValueError(
            f"N={z_a.shape[0]} pairs: NT-Xent needs N >= 2 so that every anchor has negatives"
        )


def _check_gathered(all_a: Tensor, all_b: Tensor, n: int, offset: int) -> None:
    m = all_a.shape[0]
    if all_b.shape != all_a.shape or m < 2:
        raise ValueError(
            f"gathered shapes {tuple(all_a.shape)}, {tuple(all_b.shape)}: expected two equal "
            "(M, D) tensors with M >= 2"
        )
    if not 0 <= offset <= m - n:
        raise ValueError(f"offset={offset}: expected 0 <= offset <= M - N = {m - n}")


def action_prediction_loss(predicted: Tensor, target_normalised: Tensor) -> Tensor:
    """Mean squared error between predicted and (normalised) relative actions, both (N, A).

    CIPER's predictive term for continuous action dimensions (Ciper-SimCLR uses MSE on a
    BatchNorm-normalised target, see ``ActionNormalizer``).
    """
    if predicted.shape != target_normalised.shape:
        raise ValueError(
            f"predicted.shape={tuple(predicted.shape)}, "
            f"target_normalised.shape={tuple(target_normalised.shape)}: expected equal shapes"
        )
    return F.mse_loss(predicted, target_normalised)


def binary_action_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross entropy of two-valued action dimensions (e.g. "was the image flipped"):
    logits and 0/1 targets (N, K), mean over all entries."""
    if logits.shape != targets.shape:
        raise ValueError(
            f"logits.shape={tuple(logits.shape)}, targets.shape={tuple(targets.shape)}: expected equal"
        )
    return F.binary_cross_entropy_with_logits(logits, targets.float())


class ActionNormalizer(nn.Module):
    """Normalise action targets (N, A) per dimension with running statistics.

    It is ``nn.BatchNorm1d(A, affine=False)``, as in Ciper-SimCLR: action dimensions come in
    different units (metres, radians, sin/cos, light intensity), and without a common scale
    the MSE would be dominated by the widest one. In train mode it uses the batch's mean and
    variance (so N >= 2) and updates the running ones; in eval mode it uses the running ones,
    so evaluation does not depend on batch composition. Having no parameters, it never learns
    to shrink the target: the predictor cannot cheat by making the regression easier. The
    running statistics live in the model's ``state_dict`` and travel with checkpoints.
    """

    def __init__(self, action_dim: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        if action_dim < 1:
            raise ValueError(f"action_dim={action_dim}: expected >= 1")
        self.norm = nn.BatchNorm1d(action_dim, eps=eps, momentum=momentum, affine=False)

    def forward(self, action: Tensor) -> Tensor:
        return self.norm(action)  # (N, A)
