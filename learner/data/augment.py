"""Image conversion and the learner's view augmentations, with their sampled parameters.

Views reach the learner as float images in [0, 1] (``learner.data.images``), are augmented
here and standardised there. ``ViewAugmentation`` applies
SimCLR's augmentations with Kornia (random resized crop, horizontal flip, colour jitter,
grayscale; batched on the images' device) and returns, per image, the parameters it drew:
the crop box, the flip and grayscale flags and the colour-jitter factors. AugSelf (Lee et
al. 2021) and CIPER on static images predict the difference of these parameters between
the two views of a pair (``relative_augmentation``); the training loop appends them to the
relative action as named target columns. Parameters come from the module's own seeded
``torch.Generator`` (saved in checkpoints), never from the global RNG, so runs repeat and
resume exactly.

Measured (bench at 32 px, batch 128, one CPU thread): Kornia's crop + jitter takes ~55 ms
against ~43 ms for the hand-written version this module replaced; the per-image
parameters it exposes are worth the 1.3x.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import kornia.augmentation as K
import torch
from torch import Tensor, nn

from conf.settle import DoubledAugmentation, doubled_augmentations, doubled_message

CROP_PARAMETERS = ("crop_center_x", "crop_center_y", "crop_width", "crop_height")
FLIP_PARAMETERS = ("flip",)
COLOR_PARAMETERS = ("brightness", "contrast", "saturation", "hue", "grayscale")
# Colour factors of an image left unjittered (Kornia: brightness, contrast and saturation
# factors of 1 and a hue shift of 0 are the identity), so its parameters say "no change".
_IDENTITY_JITTER = {"brightness_factor": 1.0, "contrast_factor": 1.0, "saturation_factor": 1.0, "hue_factor": 0.0}


@dataclass(frozen=True)
class AugmentationSpec:
    """Which augmentations run and how strong they are (``conf.schema.MethodConfig``)."""

    crop: bool  # random resized crop, resized back to the input size
    crop_scale: tuple[float, float]  # area fraction range of the crop
    flip: bool  # horizontal flip with probability 0.5
    color: bool  # colour jitter and random grayscale
    jitter: tuple[float, float, float, float]  # brightness, contrast, saturation, hue strengths
    jitter_p: float  # probability that an image is colour-jittered
    grayscale_p: float  # probability that an image is turned grey

    @property
    def parameter_names(self) -> tuple[str, ...]:
        """Names of the per-image parameters ``ViewAugmentation`` returns, in column order."""
        return (CROP_PARAMETERS if self.crop else ()) + (FLIP_PARAMETERS if self.flip else ()) + (
            COLOR_PARAMETERS if self.color else ()
        )


def augmentation_spec(method_cfg: Any, action_dim_names: Sequence[str], action_set: str) -> AugmentationSpec | None:
    """The ``AugmentationSpec`` of a ``MethodConfig``, or None when every augmentation is off.

    Refuses an augmentation that the env's actions already apply (ImageView's crop, flip
    and colour actions): the two would double up and the target would describe neither.
    Composed configs have turned off such an augmentation unless it was asked for
    (``conf.settle``), so this refuses only an explicit or hand-built combination.
    """
    doubled = doubled_augmentations(method_cfg, action_dim_names)
    if doubled:
        key, actions = next(iter(doubled.items()))
        raise DoubledAugmentation(doubled_message(key, action_set, actions))
    spec = AugmentationSpec(
        crop=bool(method_cfg.augment_crop),
        crop_scale=tuple(float(v) for v in method_cfg.crop_scale),
        flip=bool(method_cfg.augment_flip),
        color=bool(method_cfg.augment_color),
        jitter=tuple(float(v) for v in method_cfg.jitter),
        jitter_p=float(method_cfg.jitter_p),
        grayscale_p=float(method_cfg.grayscale_p),
    )
    if len(spec.crop_scale) != 2 or len(spec.jitter) != 4:
        raise ValueError(f"method.crop_scale={list(spec.crop_scale)}, method.jitter={list(spec.jitter)}: expected 2 and 4 values")
    return spec if spec.parameter_names else None


class ViewAugmentation(nn.Module):
    """SimCLR augmentations of float images (N, 3, H, W) in [0, 1], with their parameters.

    ``forward(images)`` returns the augmented images (same shape and memory format) and the
    sampled parameters (N, P) float32, columns ``spec.parameter_names``: crop centre and
    size as fractions of the image side, flip and grayscale as 0/1, and the colour-jitter
    factors (Kornia's: brightness, contrast and saturation multiply, hue shifts by
    factor * 2 pi rad; the identity values where an image was not jittered).
    """

    def __init__(self, spec: AugmentationSpec, image_size: int, seed: int) -> None:
        super().__init__()
        low, high = spec.crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"crop_scale={spec.crop_scale}: expected 0 < low <= high <= 1")
        if min(spec.jitter) < 0 or spec.jitter[3] > 0.5:
            raise ValueError(f"jitter={spec.jitter}: expected strengths >= 0 and hue <= 0.5")
        for name in ("jitter_p", "grayscale_p"):
            if not 0 <= getattr(spec, name) <= 1:
                raise ValueError(f"{name}={getattr(spec, name)}: expected a probability in [0, 1]")
        if not spec.parameter_names:
            raise ValueError("crop, flip and color are all off: build no ViewAugmentation instead")
        self.spec = spec
        self.image_size = int(image_size)
        self.generator = torch.Generator(device="cpu").manual_seed(int(seed))
        steps: list[nn.Module] = []
        if spec.crop:
            steps.append(K.RandomResizedCrop((image_size, image_size), scale=(low, high), p=1.0))
        if spec.flip:
            steps.append(K.RandomHorizontalFlip(p=0.5))
        if spec.color:
            steps.append(K.ColorJitter(*spec.jitter, p=spec.jitter_p))
            steps.append(K.RandomGrayscale(p=spec.grayscale_p))
        # Kornia samples on the CPU (its default; never ``.to(device)`` this module, which
        # would move the sampling) and applies the transforms where the images are.
        self.pipeline = K.AugmentationSequential(*steps)

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return self.spec.parameter_names

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError(f"images of shape {tuple(images.shape)} and dtype {images.dtype}: expected float (N, 3, H, W)")
        # Kornia draws from torch's global CPU generator: lend it this module's state.
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self.generator.get_state())
            out = self.pipeline(images)
            self.generator.set_state(torch.get_rng_state())
        if images.is_contiguous(memory_format=torch.channels_last):
            out = out.contiguous(memory_format=torch.channels_last)
        return out, self._parameters_of_last_call(images.shape[0], images.device)

    def _parameters_of_last_call(self, n: int, device: torch.device) -> Tensor:
        """(N, P) parameters of the batch just augmented, from Kornia's record of it."""
        drawn = {params.name.rsplit("_", 1)[0]: params.data for params in self.pipeline._params}
        columns: list[Tensor] = []
        if self.spec.crop:
            box = drawn["RandomResizedCrop"]["src"].float()  # (N, 4, 2) corners, pixels
            low, high = box.min(dim=1).values, box.max(dim=1).values + 1  # (N, 2) inclusive corners
            size = (high - low) / self.image_size
            centre = (low + high) / 2 / self.image_size
            columns += [centre[:, 0], centre[:, 1], size[:, 0], size[:, 1]]
        if self.spec.flip:
            columns.append(drawn["RandomHorizontalFlip"]["batch_prob"].float())
        if self.spec.color:
            jitter = drawn["ColorJitter"]
            applied = jitter["batch_prob"].float() > 0.5  # (N,)
            for key, identity in _IDENTITY_JITTER.items():
                columns.append(torch.where(applied, jitter[key].float(), torch.full_like(jitter[key].float(), identity)))
            columns.append(drawn["RandomGrayscale"]["batch_prob"].float())
        return torch.stack([c.reshape(n).to(device) for c in columns], dim=1)  # (N, P)



def relative_augmentation(parameters_a: Tensor, parameters_b: Tensor) -> Tensor:
    """AugSelf's target: the difference of the two views' parameters, (N, P) b - a."""
    if parameters_a.shape != parameters_b.shape or parameters_a.ndim != 2:
        raise ValueError(
            f"parameters_a.shape={tuple(parameters_a.shape)}, parameters_b.shape={tuple(parameters_b.shape)}: "
            "expected two equal (N, P) tensors"
        )
    return parameters_b - parameters_a
