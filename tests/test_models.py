"""Tests of the learner's model pieces: encoders, heads, CiperModel, method losses, augment."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from learner.augment import (
    ViewAugment,
    color_jitter,
    hsv_to_rgb,
    normalize_images,
    random_resized_crop,
    rgb_to_hsv,
    to_float_images,
)
from learner.encoders import ResNet18, SmallConvNet, build_encoder
from learner.heads import mlp, prediction_head, projection_head
from learner.model import METHODS, CiperModel, build_model, method_losses

ACTION_DIM = 2


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def tiny_model(method: str) -> CiperModel:
    return build_model(
        method,
        "small",
        ACTION_DIM,
        proj_hidden=32,
        proj_dim=16,
        pred_hidden=32,
        width=8,
        out_dim=32,
    )


def synthetic_pairs(n: int = 16, size: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random views a; view b shifts channels 0 and 1 of a by the relative action."""
    generator = torch.Generator().manual_seed(0)
    x_a = torch.rand(n, 3, size, size, generator=generator)
    action = torch.rand(n, ACTION_DIM, generator=generator) * 2 - 1
    x_b = x_a.clone()
    x_b[:, :ACTION_DIM] += 0.3 * action.view(n, ACTION_DIM, 1, 1)
    return x_a, x_b, action


# --- encoders -------------------------------------------------------------------------


def test_resnet18_parameter_counts() -> None:
    assert n_params(ResNet18("imagenet")) == 11_176_512  # torchvision resnet18 minus fc
    assert n_params(ResNet18("cifar")) == 11_168_832  # 3x3 instead of 7x7 stem conv


def test_resnet18_forward_and_zero_init() -> None:
    encoder = ResNet18("cifar", zero_init_residual=True)
    assert encoder(torch.randn(2, 3, 32, 32)).shape == (2, 512)
    assert all(block.bn2.weight.abs().sum() == 0 for block in encoder.stages[0])
    with pytest.raises(ValueError, match="stem='vgg'"):
        ResNet18("vgg")  # type: ignore[arg-type]


def test_build_encoder_returns_feature_dim_and_names_valid_ones() -> None:
    encoder, dim = build_encoder("small", width=8, out_dim=24)
    assert isinstance(encoder, SmallConvNet) and dim == 24
    assert encoder(torch.randn(3, 3, 16, 16)).shape == (3, 24)
    _, dim = build_encoder("resnet18", stem="imagenet")
    assert dim == 512
    with pytest.raises(ValueError, match=r"encoder='vit'.*\['resnet18', 'small'\]"):
        build_encoder("vit")


def test_encoder_accepts_channels_last() -> None:
    encoder = SmallConvNet(width=8, out_dim=16).eval()
    images = torch.randn(4, 3, 16, 16)
    expected = encoder(images)
    encoder = encoder.to(memory_format=torch.channels_last)
    got = encoder(images.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


# --- heads ----------------------------------------------------------------------------


def test_mlp_block_spec() -> None:
    head = mlp(8, [16, 12], 4)
    kinds = [type(layer) for layer in head]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU] * 2 + [nn.Linear]
    assert head(torch.randn(5, 8)).shape == (5, 4)
    plain = mlp(8, [16], 4, batch_norm=False, last_batch_norm=True)
    assert [type(layer) for layer in plain] == [nn.Linear, nn.ReLU, nn.Linear, nn.BatchNorm1d]
    with pytest.raises(ValueError, match="widths"):
        mlp(8, [0], 4)


def test_projection_and_prediction_heads_shapes() -> None:
    projector = projection_head(512, [2048], 128)
    assert projector(torch.randn(4, 512)).shape == (4, 128)
    predictor = prediction_head(512, [1024], 7)
    assert predictor[0].in_features == 1024  # two views' features, concatenated
    assert predictor(torch.randn(4, 1024)).shape == (4, 7)


# --- model and method losses ----------------------------------------------------------


@pytest.mark.parametrize("method", sorted(METHODS))
def test_build_model_creates_only_needed_heads(method: str) -> None:
    spec = METHODS[method]
    model = tiny_model(method)
    assert (model.projector is not None) == spec.needs_projector
    assert (model.predictor is not None) == spec.needs_predictor
    assert (model.action_normalizer is not None) == spec.needs_predictor
    x_a, x_b, action = synthetic_pairs(n=4, size=16)
    out = model(x_a, x_b)
    assert out["h_a"].shape == out["h_b"].shape == (4, 32)
    assert ("z_a" in out) == spec.needs_projector
    assert ("action_pred" in out) == spec.needs_predictor
    losses = method_losses(method, out, action, model, temperature=0.1, prediction_weight=1.0)
    expected_keys = {"loss"}
    expected_keys |= {"contrastive"} if spec.needs_projector else set()
    expected_keys |= {"prediction"} if spec.needs_predictor else set()
    assert set(losses) == expected_keys
    assert losses["loss"].shape == ()


def test_ciper_loss_is_contrastive_plus_weighted_prediction() -> None:
    model = tiny_model("ciper")
    x_a, x_b, action = synthetic_pairs(n=4, size=16)
    losses = method_losses("ciper", model(x_a, x_b), action, model, 0.1, prediction_weight=0.25)
    torch.testing.assert_close(losses["loss"], losses["contrastive"] + 0.25 * losses["prediction"])


def test_unknown_method_is_named() -> None:
    with pytest.raises(ValueError, match=r"method='byol'.*'ciper'.*'predict'"):
        tiny_model("byol")
    model = tiny_model("ciper")
    x_a, x_b, action = synthetic_pairs(n=4, size=16)
    with pytest.raises(ValueError, match="method='byol'"):
        method_losses("byol", model(x_a, x_b), action, model, 0.1, 1.0)


def test_method_needing_missing_head_is_an_error() -> None:
    model = tiny_model("simclr")
    x_a, x_b, action = synthetic_pairs(n=4, size=16)
    with pytest.raises(ValueError, match="method='ciper' needs action_pred"):
        method_losses("ciper", model(x_a, x_b), action, model, 0.1, 1.0)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_loss_decreases_under_adam(method: str) -> None:
    torch.manual_seed(0)
    model = tiny_model(method).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    x_a, x_b, action = synthetic_pairs()
    history = []
    for _ in range(20):
        losses = method_losses(method, model(x_a, x_b), action, model, 0.1, 1.0)
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
        history.append(losses["loss"].item())
    assert history[-1] < 0.7 * history[0], history


def test_prediction_loss_reaches_predictor_and_encoder() -> None:
    model = tiny_model("predict")
    x_a, x_b, action = synthetic_pairs(n=8, size=16)
    method_losses("predict", model(x_a, x_b), action, model, 0.1, 1.0)["loss"].backward()
    for part in (model.predictor, model.encoder):
        grads = [p.grad for p in part.parameters()]
        assert all(g is not None for g in grads)
        assert sum(g.abs().sum() for g in grads) > 0


def test_contrastive_only_method_has_no_predictor() -> None:
    model = tiny_model("simclr")
    assert model.predictor is None and model.action_normalizer is None
    assert not any(name.startswith("predictor") for name, _ in model.named_parameters())
    with pytest.raises(ValueError, match="predictor and action_normalizer go together"):
        CiperModel(nn.Identity(), predictor=nn.Linear(4, 2))


# --- augmentations --------------------------------------------------------------------


def test_view_augment_at_strength_zero_is_identity() -> None:
    images = torch.rand(4, 3, 16, 16)
    assert torch.equal(ViewAugment.from_strength(0.0)(images), images)
    assert torch.equal(ViewAugment(crop_scale=(1.0, 1.0), jitter=0.0)(images), images)
    # The crop itself at full area is the identity too (bilinear at pixel centres).
    full = random_resized_crop(images, (1.0, 1.0), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(full, images)
    assert ViewAugment.from_strength(0.5).crop_scale == pytest.approx(ViewAugment().crop_scale)


def test_view_augment_shapes_range_and_determinism() -> None:
    images = torch.rand(6, 3, 16, 16)
    augment = ViewAugment(crop_scale=(0.3, 1.0), jitter=0.8, p_jitter=1.0)
    first = augment(images, torch.Generator().manual_seed(7))
    second = augment(images, torch.Generator().manual_seed(7))
    other = augment(images, torch.Generator().manual_seed(8))
    assert first.shape == images.shape and first.dtype == images.dtype
    assert first.min() >= 0 and first.max() <= 1
    assert torch.equal(first, second)
    assert not torch.equal(first, other)
    assert not torch.allclose(first, images)


def test_view_augment_keeps_channels_last() -> None:
    images = torch.rand(3, 3, 16, 16)
    augment = ViewAugment()
    expected = augment(images, torch.Generator().manual_seed(1))
    got = augment(
        images.contiguous(memory_format=torch.channels_last), torch.Generator().manual_seed(1)
    )
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, expected)


def test_colour_helpers() -> None:
    images = torch.rand(4, 3, 8, 8)
    torch.testing.assert_close(hsv_to_rgb(rgb_to_hsv(images)), images, atol=1e-5, rtol=0)
    grey = torch.full((2, 3, 4, 4), 0.5)
    # Saturation and hue changes leave a grey image grey.
    out = color_jitter(grey, 0.0, 0.0, 0.9, 0.5, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, grey)
    with pytest.raises(ValueError, match="hue=0.6"):
        color_jitter(images, 0.1, 0.1, 0.1, 0.6)


def test_to_float_images_and_normalize() -> None:
    views = torch.randint(0, 256, (2, 8, 6, 3), dtype=torch.uint8)
    images = to_float_images(views)
    assert images.shape == (2, 3, 8, 6) and images.dtype == torch.float32
    assert images.is_contiguous() and images.device == views.device
    torch.testing.assert_close(images[1, 2, 3, 4], views[1, 3, 4, 2].float() / 255)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    normalised = to_float_images(views, mean, std, channels_last=True)
    assert normalised.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(normalised, normalize_images(images, mean, std))
    torch.testing.assert_close(normalised[0, 1], (images[0, 1] - 0.4) / 0.25)
    with pytest.raises(ValueError, match="uint8"):
        to_float_images(views.float())
