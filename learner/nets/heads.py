"""Heads on top of the encoder, all built from one block spec: an MLP.

``mlp`` stacks Linear -> BatchNorm1d -> ReLU per hidden layer and ends with a Linear
(optionally followed by a BatchNorm1d). The projection head (SimCLR, Chen et al. 2020)
maps encoder features to the space of the contrastive loss; the prediction head
(Ciper-SimCLR, the reimplementation of Xu & Triesch 2023) reads the concatenated encoder
features of two views and regresses the action between them. Widths come from the caller
(the config holds the defaults); both heads are dropped after training.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def mlp(
    in_dim: int,
    hidden: Sequence[int],
    out_dim: int,
    batch_norm: bool = True,
    last_batch_norm: bool = False,
) -> nn.Sequential:
    """Build ``in_dim -> hidden[0] -> ... -> out_dim``.

    Each hidden layer is Linear -> BatchNorm1d (if ``batch_norm``) -> ReLU; the last layer
    is a Linear, followed by a BatchNorm1d when ``last_batch_norm``. A Linear that feeds a
    BatchNorm has no bias, since the BN's shift makes it redundant.
    """
    dims = [in_dim, *hidden, out_dim]
    if any(d < 1 for d in dims):
        raise ValueError(f"layer widths {dims}: every width must be >= 1")
    layers: list[nn.Module] = []
    for width_in, width_out in zip(dims[:-2], dims[1:-1], strict=True):
        layers.append(nn.Linear(width_in, width_out, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm1d(width_out))
        layers.append(nn.ReLU(inplace=True))
    layers.append(nn.Linear(dims[-2], out_dim, bias=not last_batch_norm))
    if last_batch_norm:
        layers.append(nn.BatchNorm1d(out_dim))
    return nn.Sequential(*layers)


def projection_head(feat_dim: int, hidden: Sequence[int], proj_dim: int) -> nn.Sequential:
    """SimCLR projection head: (N, feat_dim) -> (N, proj_dim), e.g. 512 -> 2048 -> 128."""
    return mlp(feat_dim, hidden, proj_dim)


def prediction_head(feat_dim: int, hidden: Sequence[int], action_dim: int) -> nn.Sequential:
    """Action prediction head: concat of two views' features (N, 2*feat_dim) -> (N, action_dim).

    Ciper-SimCLR uses one hidden layer of 1024 with BN and ReLU.
    """
    return mlp(2 * feat_dim, hidden, action_dim)
