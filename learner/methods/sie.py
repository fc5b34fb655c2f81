"""SIE (Garrido, Najman & LeCun 2023, "Self-supervised learning of Split Invariant Equivariant
representations", the 3DIEBench paper): a representation split into an invariant and an
equivariant part.

The encoder's features are split: the first ``1 - equivariant_fraction`` of them are the
invariant part, the rest the equivariant part (SIE: 256 + 256 of a ResNet-18's 512). Each part
has its own expander (the projection head's widths scaled by its share). The invariant
embeddings of a pair's two views are pulled together (VICReg's invariance term); a predictor
conditioned on the pair's relative action maps view a's equivariant embedding to view b's
(SIE's linear hypernetwork: the normalised action sets the weights of a linear map); VICReg's
variance and covariance terms regularise the whole embeddings of both views, and the variance
term the predictions too. ``loss = sim * (invariance + equivariance_factor * equivariance)
+ std * (variance + prediction variance) + cov * covariance``, SIE's defaults (10, 4.5, 10, 1).
The pure loss terms are the functions at the top; ``SIE`` holds the heads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from conf.schema import MethodConfig, check_not_negative
from learner.methods.base import Gather, HeadWidths, Method, PairBatch, TargetLayout
from learner.methods.losses import ActionNormalizer
from learner.nets.heads import projection_head

VARIANCE_EPS = 1e-4  # VICReg / SIE: std = sqrt(var + eps)


def variance_term(z: Tensor) -> Tensor:
    """VICReg's variance term of embeddings (N, D): mean over dimensions of relu(1 - std),
    std the unbiased standard deviation over the batch (plus ``VARIANCE_EPS`` under the root)."""
    std = torch.sqrt(z.var(dim=0) + VARIANCE_EPS)  # (D,)
    return F.relu(1.0 - std).mean()


def covariance_term(z: Tensor) -> Tensor:
    """VICReg's covariance term of embeddings (N, D): the sum of the squared off-diagonal
    entries of their covariance matrix, divided by D."""
    n, d = z.shape
    centred = z - z.mean(dim=0)
    covariance = centred.T @ centred / (n - 1)  # (D, D)
    off_diagonal = covariance - torch.diag(torch.diagonal(covariance))
    return off_diagonal.pow(2).sum() / d


def sie_terms(
    inv_a: Tensor, inv_b: Tensor, equi_a: Tensor, equi_b: Tensor, equi_b_predicted: Tensor, gather: Gather | None = None
) -> dict[str, Tensor]:
    """SIE's unweighted terms for N pairs: ``invariance`` = MSE of the invariant embeddings
    (N, I) of views a and b; ``equivariance`` = MSE of view b's equivariant embedding (N, E)
    and its prediction from view a's; ``variance`` = the variance term of each view's whole
    embedding [inv, equi] (N, I + E), halved and summed, plus that of the predictions, halved;
    ``covariance`` = the covariance terms of both views' whole embeddings, summed. With
    ``gather`` (several processes) the variance and covariance are those of every rank's
    embeddings together, as in SIE."""
    whole_a, whole_b = torch.cat([inv_a, equi_a], dim=1), torch.cat([inv_b, equi_b], dim=1)
    pairs_mse = {"invariance": F.mse_loss(inv_a, inv_b), "equivariance": F.mse_loss(equi_b_predicted, equi_b)}
    if gather is not None:
        whole_a, whole_b, equi_b_predicted = gather(whole_a), gather(whole_b), gather(equi_b_predicted)
    return {
        **pairs_mse,
        "variance": (variance_term(whole_a) + variance_term(whole_b) + variance_term(equi_b_predicted)) / 2,
        "covariance": covariance_term(whole_a) + covariance_term(whole_b),
    }


@dataclass
class SIESettings(MethodConfig):
    name: str = "sie"  # the method; set it with method=<name>, which also brings its own keys and defaults
    equivariant_fraction: float = 0.5  # share of the encoder's features that is the equivariant part (SIE: 256 of 512)
    sim_coeff: float = 10.0  # weight of the invariance and (times equivariance_factor) equivariance terms
    equivariance_factor: float = 4.5  # the equivariance term's weight relative to the invariance term's
    std_coeff: float = 10.0  # weight of the variance terms (embeddings and predictions)
    cov_coeff: float = 1.0  # weight of the covariance term

    def check(self) -> None:
        super().check()
        if not 0 < self.equivariant_fraction < 1:
            raise ValueError(f"method.equivariant_fraction={self.equivariant_fraction!r}: expected a number in (0, 1)")
        check_not_negative(self, "sim_coeff", "equivariance_factor", "std_coeff", "cov_coeff")


class ActionConditionedLinear(nn.Module):
    """SIE's linear hypernetwork: the (normalised) action z (N, A) sets the weights W(z) (E, E)
    of a linear map applied to x (N, E), with no bias: ``W(z) x``, W linear in z."""

    def __init__(self, action_dim: int, size: int) -> None:
        super().__init__()
        self.size = size
        self.hypernetwork = nn.Linear(action_dim, size * size, bias=False)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        weights = self.hypernetwork(z).view(-1, self.size, self.size)  # (N, E, E)
        return torch.bmm(weights, x.unsqueeze(2)).squeeze(2)  # (N, E)


class SIE(Method):
    """Two expanders (invariant, equivariant part) and the action-conditioned predictor."""

    settings_class = SIESettings

    def __init__(self, settings: SIESettings, feat_dim: int, layout: TargetLayout, widths: HeadWidths) -> None:
        super().__init__(settings, feat_dim, layout, widths)
        self.equi_features = max(1, min(feat_dim - 1, round(feat_dim * settings.equivariant_fraction)))
        self.inv_features = feat_dim - self.equi_features
        share = self.equi_features / feat_dim
        self.inv_expander = projection_head(self.inv_features, _scaled(widths.proj_hidden, 1 - share), _scaled1(widths.proj_dim, 1 - share))
        equi_dim = _scaled1(widths.proj_dim, share)
        self.equi_expander = projection_head(self.equi_features, _scaled(widths.proj_hidden, share), equi_dim)
        self.action_normalizer = ActionNormalizer(layout.dim)
        self.predictor = ActionConditionedLinear(layout.dim, equi_dim)

    def forward(self, batch: PairBatch) -> dict[str, Tensor]:
        inv = self.inv_expander(batch.features[:, : self.inv_features])  # (2N, I): both views, BatchNorm over 2N
        equi = self.equi_expander(batch.features[:, self.inv_features :])  # (2N, E)
        n = batch.n
        action = self.action_normalizer(batch.target.float())  # (N, T) on a common scale
        predicted = self.predictor(equi[:n].float(), action)
        terms = sie_terms(inv[:n].float(), inv[n:].float(), equi[:n].float(), equi[n:].float(), predicted, batch.gather)
        s = self.settings
        loss = (s.sim_coeff * (terms["invariance"] + s.equivariance_factor * terms["equivariance"])
                + s.std_coeff * terms["variance"] + s.cov_coeff * terms["covariance"])  # fmt: skip
        return {**terms, "loss": loss}


def _scaled(widths: tuple[int, ...], share: float) -> tuple[int, ...]:
    return tuple(_scaled1(width, share) for width in widths)


def _scaled1(width: int, share: float) -> int:
    return max(1, round(width * share))
