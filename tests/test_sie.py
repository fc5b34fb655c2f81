"""SIE, added as one method file and one registry line: its loss against values worked out
by hand on a tiny batch, and a run through the same loop, checkpoint, resume and evaluation
as every other method."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from learner.methods.base import HeadWidths, PairBatch, TargetLayout
from learner.methods.registry import default_settings
from learner.methods.sie import SIE, covariance_term, sie_terms, variance_term
from learner.training.checkpoint import load_model
from learner.training.loop import train

# Three pairs, invariant and equivariant embeddings of one dimension each.
INV_A = torch.tensor([[0.0], [0.2], [0.4]])
INV_B = torch.tensor([[0.1], [0.2], [0.1]])
EQUI_A = torch.tensor([[1.0], [0.0], [-1.0]])
EQUI_B = torch.tensor([[0.5], [0.5], [0.5]])
EQUI_B_PREDICTED = torch.tensor([[0.4], [0.6], [0.5]])


def test_sie_terms_equal_the_values_worked_out_by_hand():
    terms = sie_terms(INV_A, INV_B, EQUI_A, EQUI_B, EQUI_B_PREDICTED)
    # invariance: mean of (-0.1)^2, 0^2, 0.3^2
    assert terms["invariance"].item() == pytest.approx((0.01 + 0.0 + 0.09) / 3, rel=1e-5)
    # equivariance: mean of (-0.1)^2, 0.1^2, 0^2
    assert terms["equivariance"].item() == pytest.approx((0.01 + 0.01 + 0.0) / 3, rel=1e-5)
    # variance, per column relu(1 - sqrt(unbiased var + 1e-4)), mean over columns:
    #   view a = [inv, equi]: var 0.04 and 1 -> (1 - sqrt(0.0401)) / 2 + 0 = 0.399875
    #   view b: var 1/300 and 0 -> ((1 - sqrt(1/300 + 1e-4)) + (1 - 0.01)) / 2 = 0.965703
    #   predictions: var 0.01 -> 1 - sqrt(0.0101) = 0.899501; the three halved and summed
    view_a = (1 - 0.0401**0.5) / 2
    view_b = ((1 - (1 / 300 + 1e-4) ** 0.5) + (1 - 0.01)) / 2
    predictions = 1 - 0.0101**0.5
    assert terms["variance"].item() == pytest.approx((view_a + view_b + predictions) / 2, rel=1e-5)
    # covariance: view a's off-diagonal entry ((-0.2)(1) + (0.2)(-1)) / 2 = -0.2, twice,
    # squared and summed over 2 dimensions: 2 * 0.04 / 2; view b has a constant column: 0
    assert terms["covariance"].item() == pytest.approx(0.04, rel=1e-5)
    assert variance_term(torch.tensor([[0.0, 1.0], [0.2, 0.0], [0.4, -1.0]])).item() == pytest.approx(view_a, rel=1e-5)
    assert covariance_term(torch.tensor([[0.1, 0.5], [0.2, 0.5], [0.1, 0.5]])).item() == 0.0


def test_sie_weighs_its_terms_as_its_settings_say_and_splits_the_features():
    settings = default_settings("sie")
    assert (settings.sim_coeff, settings.equivariance_factor, settings.std_coeff, settings.cov_coeff) == (10, 4.5, 10, 1)
    layout = TargetLayout(("dx", "dy"), (False, False), 2, ("pose",), 1)
    method = SIE(settings, feat_dim=8, layout=layout, widths=HeadWidths((16,), 8, (16,)))
    assert (method.inv_features, method.equi_features) == (4, 4)
    features = torch.randn(12, 8, generator=torch.Generator().manual_seed(0))
    batch = PairBatch(features, torch.randn(6, 2), torch.zeros(12, 1), torch.zeros(12, dtype=torch.long))
    losses = method(batch)
    expected = (10 * (losses["invariance"] + 4.5 * losses["equivariance"]) + 10 * losses["variance"]
                + losses["covariance"])  # fmt: skip
    torch.testing.assert_close(losses["loss"], expected)
    # The equivariant part's prediction depends on the action; the invariant part ignores it.
    other = method(PairBatch(features, torch.randn(6, 2) * 3, torch.zeros(12, 1), torch.zeros(12, dtype=torch.long)))
    torch.testing.assert_close(other["invariance"], losses["invariance"])
    assert other["equivariance"] != losses["equivariance"]


def test_bad_sie_settings_are_named(make_config):
    from conf.validate import ConfigError, validate_config

    with pytest.raises(ConfigError, match=r"method.equivariant_fraction=1.5: expected a number in \(0, 1\)"):
        validate_config(make_config("method=sie", "method.equivariant_fraction=1.5"), check_env=False)


TINY = ("env.image_size=32", "model.width=8", "model.proj_hidden=64", "model.proj_dim=32", "model.pred_hidden=64",
        "train.batch_size=32", "train.evaluate=false", "train.mode=offline", "optim.warmup_steps=2", "method=sie")  # fmt: skip


def test_sie_trains_checkpoints_resumes_and_is_evaluated_like_every_method(make_config, tiny_dataset, tmp_path):
    def run(run_dir, *extra):
        cfg = make_config(*TINY, f"train.dataset={tiny_dataset}", "train.steps=10", *extra, run_dir=run_dir)
        return train(cfg, run_dir)

    straight = run(tmp_path / "straight")
    assert straight["completed"] and set(straight["losses_last"]) == {"invariance", "equivariance", "variance",
                                                                      "covariance", "loss"}  # fmt: skip
    first = run(tmp_path / "resumed", "train.stop_after=4")
    assert first["steps"] == 4 and not first["completed"]
    assert run(tmp_path / "resumed")["completed"]
    a, b = (json.loads((tmp_path / d / "loss_history.json").read_text()) for d in ("straight", "resumed"))
    np.testing.assert_allclose([h["loss"] for h in b], [h["loss"] for h in a], rtol=1e-6)
    history = [h["loss"] for h in a]
    assert history[-1] < history[0]
    model, architecture = load_model(tmp_path / "straight" / "checkpoints" / "last.pt")
    assert architecture["method"] == "sie" and isinstance(model.method, SIE)
    assert model.encode(torch.zeros(2, 3, 32, 32)).shape[0] == 2
