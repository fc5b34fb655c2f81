"""Tests of the learner's model pieces: encoders, heads, the pair model and its methods, augment."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from conf.schema import MethodConfig
from learner.data.augment import (
    COLOR_PARAMETERS,
    CROP_PARAMETERS,
    AugmentationSpec,
    ViewAugmentation,
    augmentation_spec,
    relative_augmentation,
)
from learner.data.images import model_input, normalize_images, to_float_images
from learner.methods.base import HeadWidths, PairTargets, PredictsAction, TargetLayout
from learner.methods.registry import METHODS, default_settings, method_class
from learner.nets.encoders import ResNet18, SmallConvNet, build_encoder
from learner.nets.heads import mlp, prediction_head, projection_head
from learner.nets.pair_model import PairModel

ACTION_DIM = 2
LAYOUT = TargetLayout(("dx", "dy"), (False, False), ACTION_DIM, ("pose_x", "pose_y", "pose_z"), 3)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def tiny_model(method: str, **settings) -> PairModel:
    encoder, feat_dim = build_encoder("small", width=8, out_dim=32)
    settings = dataclasses.replace(default_settings(method), **settings)
    return PairModel(encoder, method_class(method)(settings, feat_dim, LAYOUT, HeadWidths((32,), 16, (32,))))


def synthetic_pairs(n: int = 16, size: int = 32) -> tuple[torch.Tensor, PairTargets]:
    """Random views a then views b (2N images); view b shifts channels 0 and 1 of a by the
    relative action; each pair's object has a pose and one of 3 categories."""
    generator = torch.Generator().manual_seed(0)
    x_a = torch.rand(n, 3, size, size, generator=generator)
    action = torch.rand(n, ACTION_DIM, generator=generator) * 2 - 1
    x_b = x_a.clone()
    x_b[:, :ACTION_DIM] += 0.3 * action.view(n, ACTION_DIM, 1, 1)
    pose = torch.rand(2 * n, 3, generator=generator)
    category = torch.arange(n).repeat(2) % 3
    return torch.cat([x_a, x_b]), PairTargets(target=action, pose=pose, category=category)


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


# --- the pair model and its methods ----------------------------------------------------


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_returns_its_terms_and_a_scalar_loss(method: str) -> None:
    model = tiny_model(method)
    images, targets = synthetic_pairs(n=4, size=16)
    losses = model(images, targets)
    assert "loss" in losses and all(value.shape == () for value in losses.values())
    assert torch.isfinite(losses["loss"])
    assert model.encode(images).shape == (8, 32)


def test_ciper_loss_is_contrastive_plus_weighted_prediction() -> None:
    model = tiny_model("ciper", prediction_weight=0.25)
    losses = model(*synthetic_pairs(n=4, size=16))
    assert set(losses) == {"contrastive", "prediction", "loss"}
    torch.testing.assert_close(losses["loss"], losses["contrastive"] + 0.25 * losses["prediction"])


def test_unknown_method_is_named() -> None:
    with pytest.raises(ValueError, match=r"method='byol'.*'ciper'.*'predict'"):
        method_class("byol")


def test_a_method_refuses_another_methods_settings() -> None:
    encoder, feat_dim = build_encoder("small", width=8, out_dim=32)
    with pytest.raises(TypeError, match="SimCLRSettings: Ciper expects CiperSettings"):
        method_class("ciper")(default_settings("simclr"), feat_dim, LAYOUT, HeadWidths((32,), 16, (32,)))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_loss_decreases_under_adam(method: str) -> None:
    torch.manual_seed(0)
    model = tiny_model(method).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    images, targets = synthetic_pairs()
    history = []
    for _ in range(20):
        losses = model(images, targets)
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
        history.append(losses["loss"].item())
    assert history[-1] < 0.7 * history[0], history


def test_prediction_loss_reaches_predictor_and_encoder() -> None:
    model = tiny_model("predict")
    model(*synthetic_pairs(n=8, size=16))["loss"].backward()
    for part in (model.method.prediction, model.encoder):
        grads = [p.grad for p in part.parameters()]
        assert all(g is not None for g in grads)
        assert sum(g.abs().sum() for g in grads) > 0


def test_a_method_builds_only_its_own_heads() -> None:
    simclr, ciper = tiny_model("simclr"), tiny_model("ciper")
    assert not isinstance(simclr.method, PredictsAction) and isinstance(ciper.method, PredictsAction)
    assert not any(name.startswith("method.prediction") for name, _ in simclr.named_parameters())
    assert not any(name.startswith("method.projector") for name, _ in tiny_model("predict").named_parameters())
    # The method records its per-pair action errors for the curious observer.
    assert ciper.method.action_errors() is None
    ciper(*synthetic_pairs(n=4, size=16))
    assert ciper.method.action_errors().shape == (4,)


# --- augmentations --------------------------------------------------------------------


SPEC = AugmentationSpec(crop=True, crop_scale=(0.2, 1.0), flip=True, color=True,
                        jitter=(0.4, 0.4, 0.4, 0.1), jitter_p=0.8, grayscale_p=0.2)  # fmt: skip


def coordinate_images(n: int, size: int = 32) -> torch.Tensor:
    """Channel 0 holds each pixel centre's x as a fraction of the width, channel 1 its y."""
    centres = (torch.arange(size).float() + 0.5) / size
    images = torch.zeros(n, 3, size, size)
    images[:, 0], images[:, 1] = centres.view(1, 1, size), centres.view(1, size, 1)
    return images


def test_crop_parameters_are_the_box_the_view_shows() -> None:
    spec = dataclasses.replace(SPEC, flip=False, color=False)
    out, params = ViewAugmentation(spec, 32, seed=0)(coordinate_images(16))
    assert spec.parameter_names == CROP_PARAMETERS and params.shape == (16, 4)
    # A crop shows x from centre - width/2 to centre + width/2: its mean x is the centre.
    torch.testing.assert_close(out[:, 0].mean((1, 2)), params[:, 0], atol=2e-3, rtol=0)
    torch.testing.assert_close(out[:, 1].mean((1, 2)), params[:, 1], atol=2e-3, rtol=0)
    # The first and last output columns sample the centres of the box's edge pixels.
    shown_width = out[:, 0, :, -1].mean(1) - out[:, 0, :, 0].mean(1) + 1 / 32
    torch.testing.assert_close(shown_width, params[:, 2], atol=2e-3, rtol=0)
    area = params[:, 2] * params[:, 3]
    assert area.min() >= 0.2 - 0.05 and area.max() <= 1.0 and area.std() > 0.05


def test_flip_and_colour_parameters_are_what_was_applied() -> None:
    images = torch.rand(64, 3, 8, 8)
    out, params = ViewAugmentation(dataclasses.replace(SPEC, crop=False, color=False), 8, seed=1)(images)
    flipped = params[:, 0] == 1
    assert 10 < int(flipped.sum()) < 54
    torch.testing.assert_close(out[flipped], images[flipped].flip(-1))
    torch.testing.assert_close(out[~flipped], images[~flipped])
    # Brightness only, always applied: Kornia multiplies a grey image by the factor.
    spec = dataclasses.replace(SPEC, crop=False, flip=False, jitter=(0.4, 0.0, 0.0, 0.0), jitter_p=1.0, grayscale_p=0.0)
    grey = torch.full((32, 3, 4, 4), 0.5)
    out, params = ViewAugmentation(spec, 4, seed=2)(grey)
    assert spec.parameter_names == COLOR_PARAMETERS
    torch.testing.assert_close(out[:, 0, 0, 0], (0.5 * params[:, 0]).clamp(0, 1))
    assert params[:, 0].min() >= 0.6 and params[:, 0].max() <= 1.4 and params[:, 0].std() > 0.05
    # An image left unjittered reports the identity factors.
    spec = dataclasses.replace(SPEC, crop=False, flip=False, jitter_p=0.0, grayscale_p=1.0)
    out, params = ViewAugmentation(spec, 8, seed=3)(images)
    torch.testing.assert_close(params, torch.tensor([[1.0, 1.0, 1.0, 0.0, 1.0]]).expand(64, 5))
    torch.testing.assert_close(out[:, 0], out[:, 1])  # grey


def test_augmentation_is_seeded_resumable_and_keeps_channels_last() -> None:
    images = torch.rand(6, 3, 16, 16)
    first, second = ViewAugmentation(SPEC, 16, seed=7), ViewAugmentation(SPEC, 16, seed=7)
    a, params_a = first(images)
    b, params_b = second(images.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(params_a, params_b)
    assert b.is_contiguous(memory_format=torch.channels_last) and not torch.allclose(a, images)
    state = first.generator.get_state()
    torch.manual_seed(0)  # the global RNG does not touch the augmentation stream
    expected, _ = first(images)
    second.generator.set_state(state)
    torch.testing.assert_close(second(images)[0], expected)
    assert not torch.allclose(expected, a)


def test_relative_augmentation_is_b_minus_a() -> None:
    a, b = torch.rand(5, 4), torch.rand(5, 4)
    torch.testing.assert_close(relative_augmentation(a, b), b - a)
    with pytest.raises(ValueError, match="expected two equal"):
        relative_augmentation(a, b[:, :3])


def test_augmentation_that_the_env_actions_already_apply_is_refused() -> None:
    cfg = OmegaConf.structured(MethodConfig())
    assert augmentation_spec(cfg, ["camera_azimuth"], "camera").parameter_names == CROP_PARAMETERS + COLOR_PARAMETERS
    with pytest.raises(ValueError, match="method.augment_crop=true and env.action_set='geometric'"):
        augmentation_spec(cfg, ["crop_x", "crop_y", "crop_scale", "rotation"], "geometric")
    cfg.augment_crop = cfg.augment_color = False
    assert augmentation_spec(cfg, ["crop_x", "brightness"], "full") is None


def test_to_float_images_and_normalize() -> None:
    views = torch.randint(0, 256, (2, 8, 6, 3), dtype=torch.uint8)
    images = to_float_images(views)
    assert images.shape == (2, 3, 8, 6) and images.dtype == torch.float32
    assert images.is_contiguous() and images.device == views.device
    torch.testing.assert_close(images[1, 2, 3, 4], views[1, 3, 4, 2].float() / 255)
    assert to_float_images(views, channels_last=True).is_contiguous(memory_format=torch.channels_last)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    normalised = normalize_images(images, mean, std)
    torch.testing.assert_close(normalised[0, 1], (images[0, 1] - 0.4) / 0.25)
    # The encoder's input: the project's constants, the same numbers in either memory format.
    torch.testing.assert_close(model_input(views, channels_last=True), (images - 0.5) / 0.25)
    with pytest.raises(ValueError, match="uint8"):
        to_float_images(views.float())


def test_the_supervised_ceiling_regresses_pose_classifies_category_and_predicts_the_action() -> None:
    model = tiny_model("supervised", pose_weight=2.0)
    images, targets = synthetic_pairs(n=4, size=16)
    losses = model(images, targets)
    assert set(losses) == {"pose", "category", "prediction", "loss"}
    torch.testing.assert_close(losses["loss"], 2.0 * losses["pose"] + losses["category"] + losses["prediction"])
    # Views without a category (-1) carry no label: the term leaves them out instead of failing.
    unlabelled = PairTargets(targets.target, targets.pose, torch.full_like(targets.category, -1))
    assert model(images, unlabelled)["category"].item() == 0.0
    assert isinstance(model.method, PredictsAction)


def test_ciper_contrastive_is_ciper_s_pairs_without_the_prediction() -> None:
    half, ciper = default_settings("ciper_contrastive"), default_settings("ciper")
    assert half.time_offset == ciper.time_offset == 1 and half.temperature == ciper.temperature
    assert (half.augment_crop, half.augment_color, half.crop_scale) == (ciper.augment_crop, ciper.augment_color, ciper.crop_scale)
    assert set(tiny_model("ciper_contrastive")(*synthetic_pairs(n=4, size=16))) == {"contrastive", "loss"}
