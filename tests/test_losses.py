"""Tests of learner.methods.losses against references computed another way."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from learner.methods.losses import (
    ActionNormalizer,
    action_prediction_loss,
    nt_xent,
)


def naive_nt_xent(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent as written in the SimCLR paper: a Python loop over the 2N anchors."""
    z = F.normalize(torch.cat([z_a, z_b]), dim=1)
    n2 = z.shape[0]
    n = n2 // 2
    terms = []
    for i in range(n2):
        positive = (i + n) % n2
        others = [j for j in range(n2) if j != i]
        similarities = torch.stack([z[i] @ z[j] for j in others]) / temperature
        terms.append(-(z[i] @ z[positive]) / temperature + torch.logsumexp(similarities, 0))
    return torch.stack(terms).mean()


def simclr_tf_style_nt_xent(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float):
    """The formulation of SimCLR's TensorFlow code: four logit blocks, self-pairs pushed
    down by a large constant, labels on the cross-view block."""
    large = 1e9
    a, b = F.normalize(z_a, dim=1), F.normalize(z_b, dim=1)
    n = a.shape[0]
    eye = torch.eye(n, dtype=a.dtype)
    logits_aa = a @ a.T / temperature - eye * large
    logits_bb = b @ b.T / temperature - eye * large
    logits_ab = a @ b.T / temperature
    logits_ba = b @ a.T / temperature
    labels = torch.arange(n)
    loss_a = F.cross_entropy(torch.cat([logits_ab, logits_aa], 1), labels)
    loss_b = F.cross_entropy(torch.cat([logits_ba, logits_bb], 1), labels)
    return (loss_a + loss_b) / 2


@pytest.mark.parametrize("n", [2, 3, 8])
@pytest.mark.parametrize("temperature", [0.07, 0.1, 0.5, 1.0])
def test_nt_xent_matches_naive_loop_and_tf_reference(n: int, temperature: float) -> None:
    generator = torch.Generator().manual_seed(n * 100 + int(temperature * 100))
    z_a = torch.randn(n, 16, generator=generator)
    z_b = torch.randn(n, 16, generator=generator)
    loss = nt_xent(z_a, z_b, temperature)
    assert loss.shape == ()
    torch.testing.assert_close(loss, naive_nt_xent(z_a, z_b, temperature), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        loss, simclr_tf_style_nt_xent(z_a, z_b, temperature), atol=1e-5, rtol=1e-5
    )


def test_nt_xent_known_value_for_orthogonal_pairs() -> None:
    # Identical views, all pairs orthogonal: each anchor sees e^{1/t} once and 2N-2 times e^0.
    n, t = 4, 0.5
    z = torch.eye(n)
    expected = -1 / t + math.log(math.exp(1 / t) + (2 * n - 2))
    torch.testing.assert_close(nt_xent(z, z.clone(), t), torch.tensor(expected))


# Rounded so that a row is either zero or well above F.normalize's eps (1e-12), where
# rescaling would change which side of eps it falls on.
coordinates = st.floats(-3, 3).map(lambda value: round(value, 3))
vectors = st.integers(2, 6).flatmap(
    lambda n: st.integers(1, 5).flatmap(
        lambda d: st.tuples(
            arrays(np.float64, (n, d), elements=coordinates),
            arrays(np.float64, (n, d), elements=coordinates),
        )
    )
)


@settings(max_examples=60, deadline=None)
@given(pair=vectors, temperature=st.floats(0.05, 2.0), seed=st.integers(0, 2**16))
def test_nt_xent_properties(pair, temperature: float, seed: int) -> None:
    z_a, z_b = (torch.from_numpy(array) for array in pair)
    loss = nt_xent(z_a, z_b, temperature)
    torch.testing.assert_close(loss, naive_nt_xent(z_a, z_b, temperature), atol=1e-8, rtol=1e-8)
    assert loss >= 0
    # The views play symmetric roles, the pair order does not matter, nor the norm of z.
    torch.testing.assert_close(nt_xent(z_b, z_a, temperature), loss)
    order = torch.randperm(z_a.shape[0], generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(nt_xent(z_a[order], z_b[order], temperature), loss)
    torch.testing.assert_close(nt_xent(3.0 * z_a, 0.5 * z_b, temperature), loss)


def test_nt_xent_gradient_flows_to_both_views() -> None:
    z_a = torch.randn(5, 8, requires_grad=True)
    z_b = torch.randn(5, 8, requires_grad=True)
    nt_xent(z_a, z_b, 0.1).backward()
    for grad in (z_a.grad, z_b.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("z_a", "z_b", "temperature", "message"),
    [
        (torch.randn(4, 3), torch.randn(5, 3), 0.1, r"z_a.shape=\(4, 3\), z_b.shape=\(5, 3\)"),
        (torch.randn(4), torch.randn(4), 0.1, r"z_a.shape=\(4,\)"),
        (torch.randn(1, 3), torch.randn(1, 3), 0.1, "N=1"),
        (torch.randn(4, 3), torch.randn(4, 3), 0.0, "temperature=0.0"),
        (torch.randn(4, 3), torch.randn(4, 3), -1.0, "temperature=-1.0"),
        (torch.randn(4, 3), torch.randn(4, 3), float("nan"), "temperature=nan"),
    ],
)
def test_nt_xent_rejects_bad_arguments(z_a, z_b, temperature, message) -> None:
    with pytest.raises(ValueError, match=message):
        nt_xent(z_a, z_b, temperature)


def fake_all_gather(rank: int, calls: list[list[torch.Tensor]]):
    """A gather hook for ``rank`` of a world simulated in one process.

    Collectives pair up by call order, so ``calls[c][r]`` is what rank r contributes to the
    c-th gather. The local rank's own slot is the tensor it passes in, which keeps the
    autograd path that a gradient-preserving all_gather gives in DDP.
    """
    pending = iter(calls)

    def gather(local: torch.Tensor) -> torch.Tensor:
        parts = list(next(pending))
        parts[rank] = local
        return torch.cat(parts)

    return gather


@pytest.mark.parametrize("world_size", [2, 3])
def test_nt_xent_with_gather_equals_global_batch(world_size: int) -> None:
    n_local, temperature = 3, 0.2
    z_a = torch.randn(world_size * n_local, 8, dtype=torch.float64, requires_grad=True)
    z_b = torch.randn(world_size * n_local, 8, dtype=torch.float64, requires_grad=True)
    global_loss = nt_xent(z_a, z_b, temperature)
    grad_a, grad_b = torch.autograd.grad(global_loss, (z_a, z_b))

    shards = [slice(r * n_local, (r + 1) * n_local) for r in range(world_size)]
    # nt_xent normalises before gathering, so every rank contributes normalised rows.
    calls = [
        [F.normalize(z_a[s], dim=1) for s in shards],
        [F.normalize(z_b[s], dim=1) for s in shards],
    ]
    rank_losses = [
        nt_xent(z_a[s], z_b[s], temperature, gather=fake_all_gather(r, calls), offset=r * n_local)
        for r, s in enumerate(shards)
    ]
    mean_loss = torch.stack(rank_losses).mean()
    torch.testing.assert_close(mean_loss, global_loss)
    ddp_grad_a, ddp_grad_b = torch.autograd.grad(mean_loss, (z_a, z_b))
    torch.testing.assert_close(ddp_grad_a, grad_a)
    torch.testing.assert_close(ddp_grad_b, grad_b)


def test_nt_xent_gather_rejects_bad_offset() -> None:
    z = torch.randn(2, 4)
    gather = fake_all_gather(0, [[z, z], [z, z]])
    with pytest.raises(ValueError, match="offset=3"):
        nt_xent(z, z, 0.1, gather=gather, offset=3)


def test_action_prediction_loss_is_mse() -> None:
    predicted, target = torch.randn(6, 4), torch.randn(6, 4)
    expected = ((predicted - target) ** 2).mean()
    torch.testing.assert_close(action_prediction_loss(predicted, target), expected)
    with pytest.raises(ValueError, match=r"predicted.shape=\(6, 4\)"):
        action_prediction_loss(predicted, target[:, :3])


def test_action_normalizer_train_and_eval_semantics() -> None:
    normalizer = ActionNormalizer(3)
    assert list(normalizer.parameters()) == []
    actions = torch.randn(64, 3) * torch.tensor([0.5, 1.0, 100.0]) + torch.tensor([5.0, 0, -2])

    normalizer.train()
    out = normalizer(actions)
    torch.testing.assert_close(out.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.var(0, unbiased=False), torch.ones(3), atol=1e-3, rtol=0)
    momentum = 0.1
    running_mean = momentum * actions.mean(0)
    running_var = (1 - momentum) + momentum * actions.var(0, unbiased=True)
    torch.testing.assert_close(normalizer.norm.running_mean, running_mean)
    torch.testing.assert_close(normalizer.norm.running_var, running_var)

    normalizer.eval()
    probe = torch.randn(4, 3)
    expected = (probe - running_mean) / torch.sqrt(running_var + 1e-5)
    torch.testing.assert_close(normalizer(probe), expected)
    torch.testing.assert_close(normalizer.norm.running_mean, running_mean)  # eval: no update
    assert "norm.running_mean" in normalizer.state_dict()
