"""Batched, device-agnostic image augmentations, run where the images already are (GPU).

Views travel as uint8 (N, H, W, 3); ``to_float_images`` converts them on their own device,
``ViewAugment`` applies SimCLR-style random resized crops (one ``grid_sample`` with a
per-sample affine grid) and colour jitter (brightness, contrast, saturation, hue as tensor
arithmetic) to the whole batch with no per-image Python loop, and ``normalize_images``
standardises the result for the encoder. Randomness comes from an optional
``torch.Generator`` so a seeded run is repeatable.

Horizontal flips are deliberately absent: a mirrored view reverses the sign of lateral
actions (azimuth, pan, roll), so the pair's stored relative action would no longer
describe it and the prediction target would be corrupted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Luma weights (ITU-R BT.601), as torchvision's grayscale conversion.
_LUMA = (0.299, 0.587, 0.114)


def _uniform(
    n: int, low: float, high: float, like: Tensor, generator: torch.Generator | None
) -> Tensor:
    """(N,) samples of U(low, high) drawn on the generator's device, moved to ``like``'s."""
    device = generator.device if generator is not None else like.device
    sample = torch.rand(n, generator=generator, device=device, dtype=torch.float32)
    return (low + (high - low) * sample).to(device=like.device, dtype=like.dtype)


def _check_images(images: Tensor) -> None:
    if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise ValueError(
            f"images of shape {tuple(images.shape)} and dtype {images.dtype}: "
            "expected float (N, 3, H, W)"
        )


def random_resized_crop(
    images: Tensor,
    scale: tuple[float, float],
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Crop a random region of each image and resize it back to (H, W), bilinearly.

    Each crop covers a fraction ``s ~ U(scale)`` of the image area with a log-uniform aspect
    ratio from ``ratio``, narrowed to the ratios a crop of that area can have (so at
    ``s = 1`` the crop is the whole image, and no crop is ever clipped). Ratios are relative
    to the image's own aspect. Returns (N, 3, H, W).
    """
    _check_images(images)
    low, high = scale
    if not 0 < low <= high <= 1:
        raise ValueError(f"scale={scale}: expected 0 < low <= high <= 1")
    if not 0 < ratio[0] <= 1 <= ratio[1]:
        raise ValueError(f"ratio={ratio}: expected 0 < low <= 1 <= high")
    n = images.shape[0]
    area = _uniform(n, low, high, images, generator)  # (N,)
    log_area = torch.log(area)
    # Width w = sqrt(s*r), height h = sqrt(s/r) fit in the image iff s <= r <= 1/s.
    log_ratio_low = torch.clamp(log_area, min=math.log(ratio[0]))
    log_ratio_high = torch.clamp(-log_area, max=math.log(ratio[1]))
    u = _uniform(n, 0.0, 1.0, images, generator)
    log_ratio = log_ratio_low + u * (log_ratio_high - log_ratio_low)  # (N,)
    width = torch.sqrt(area * torch.exp(log_ratio)).clamp(max=1.0)  # fraction of W
    height = torch.sqrt(area / torch.exp(log_ratio)).clamp(max=1.0)  # fraction of H
    # Crop centres in grid_sample's [-1, 1] coordinates, keeping the crop inside the image.
    centre_x = (1 - width) * _uniform(n, -1.0, 1.0, images, generator)
    centre_y = (1 - height) * _uniform(n, -1.0, 1.0, images, generator)
    zeros = torch.zeros_like(width)
    theta = torch.stack(
        [torch.stack([width, zeros, centre_x], 1), torch.stack([zeros, height, centre_y], 1)], 1
    )  # (N, 2, 3): output grid -> input coordinates
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)  # (N, H, W, 2)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _grayscale(images: Tensor) -> Tensor:
    r, g, b = images.unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)  # (N, 1, H, W)


def rgb_to_hsv(images: Tensor) -> Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> HSV in [0, 1] (hue as a fraction of a turn)."""
    r, g, b = images.unbind(1)
    max_c, _ = images.max(1)
    min_c, _ = images.min(1)
    chroma = max_c - min_c
    grey = chroma == 0
    ones = torch.ones_like(max_c)
    saturation = chroma / torch.where(max_c == 0, ones, max_c)
    safe_chroma = torch.where(grey, ones, chroma)
    rc, gc, bc = (max_c - r) / safe_chroma, (max_c - g) / safe_chroma, (max_c - b) / safe_chroma
    is_r = max_c == r
    is_g = (max_c == g) & ~is_r
    is_b = ~is_r & ~is_g
    hue = is_r * (bc - gc) + is_g * (2.0 + rc - bc) + is_b * (4.0 + gc - rc)
    hue = torch.remainder(hue / 6.0, 1.0)
    return torch.stack([hue, saturation, max_c], 1)


def hsv_to_rgb(images: Tensor) -> Tensor:
    """(N, 3, H, W) HSV in [0, 1] -> RGB in [0, 1]; inverse of ``rgb_to_hsv``."""
    hue, saturation, value = images.unbind(1)
    channels = []
    for n in (5.0, 3.0, 1.0):  # R, G, B sectors of the hue circle
        k = torch.remainder(n + 6.0 * hue, 6.0)
        ramp = torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)
        channels.append(value - value * saturation * ramp)
    return torch.stack(channels, 1)


def color_jitter(
    images: Tensor,
    brightness: float,
    contrast: float,
    saturation: float,
    hue: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Random per-image brightness, contrast, saturation and hue changes, in that order.

    Factors are drawn per image from U(1 - x, 1 + x) for the first three and the hue shift
    from U(-hue, hue) turns (hue <= 0.5), with torchvision's ColorJitter formulas. Unlike
    torchvision the order is fixed, which keeps the batch one set of tensor ops.
    Returns (N, 3, H, W) in [0, 1].
    """
    _check_images(images)
    if min(brightness, contrast, saturation, hue) < 0 or hue > 0.5:
        raise ValueError(
            f"brightness={brightness}, contrast={contrast}, saturation={saturation}, hue={hue}: "
            "expected all >= 0 and hue <= 0.5"
        )
    n = images.shape[0]

    def factor(strength: float) -> Tensor:
        low = max(0.0, 1.0 - strength)
        return _uniform(n, low, 1.0 + strength, images, generator).view(n, 1, 1, 1)

    out = (images * factor(brightness)).clamp(0.0, 1.0)
    mean = _grayscale(out).mean(dim=(1, 2, 3), keepdim=True)  # (N, 1, 1, 1)
    out = ((out - mean) * factor(contrast) + mean).clamp(0.0, 1.0)
    grey = _grayscale(out)  # (N, 1, H, W)
    out = ((out - grey) * factor(saturation) + grey).clamp(0.0, 1.0)
    if hue > 0:
        shift = _uniform(n, -hue, hue, images, generator).view(n, 1, 1)
        hsv = rgb_to_hsv(out)
        hsv = torch.stack([torch.remainder(hsv[:, 0] + shift, 1.0), hsv[:, 1], hsv[:, 2]], 1)
        out = hsv_to_rgb(hsv)
    return out


class ViewAugment(nn.Module):
    """SimCLR-style view augmentation of a float batch (N, 3, H, W) in [0, 1].

    Args:
        crop_scale: area range of the random resized crop; ``(1.0, 1.0)`` disables it.
        jitter: brightness, contrast and saturation strength; hue gets ``jitter / 4``
            (SimCLR's 0.8 : 0.2 proportion). 0 disables colour jitter.
        p_jitter: probability that an image is colour-jittered.

    With no crop and no jitter the module returns its input unchanged. No horizontal flip
    (see the module docstring). The output keeps the input's memory format.
    """

    def __init__(
        self,
        crop_scale: tuple[float, float] = (0.6, 1.0),
        jitter: float = 0.4,
        p_jitter: float = 0.8,
    ) -> None:
        super().__init__()
        if not 0 < crop_scale[0] <= crop_scale[1] <= 1:
            raise ValueError(f"crop_scale={crop_scale}: expected 0 < low <= high <= 1")
        if not 0 <= jitter <= 2:
            raise ValueError(f"jitter={jitter}: expected 0 <= jitter <= 2")
        if not 0 <= p_jitter <= 1:
            raise ValueError(f"p_jitter={p_jitter}: expected a probability in [0, 1]")
        self.crop_scale = (float(crop_scale[0]), float(crop_scale[1]))
        self.jitter = float(jitter)
        self.p_jitter = float(p_jitter)

    @classmethod
    def from_strength(cls, strength: float) -> ViewAugment:
        """One knob for the whole augmentation: 0 is the identity, 0.5 the defaults
        (crop area 0.6-1, jitter 0.4), 1 SimCLR's colour strength (jitter 0.8) with crops
        down to 0.2 of the area."""
        if not 0 <= strength <= 1:
            raise ValueError(f"strength={strength}: expected 0 <= strength <= 1")
        return cls(crop_scale=(1.0 - 0.8 * strength, 1.0), jitter=0.8 * strength)

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_images(images)
        out = images
        if self.crop_scale != (1.0, 1.0):
            out = random_resized_crop(out, self.crop_scale, generator=generator)
        if self.jitter > 0 and self.p_jitter > 0:
            jittered = color_jitter(
                out, self.jitter, self.jitter, self.jitter, self.jitter / 4, generator
            )
            apply = _uniform(out.shape[0], 0.0, 1.0, out, generator) < self.p_jitter  # (N,)
            out = torch.where(apply.view(-1, 1, 1, 1), jittered, out)
        if images.is_contiguous(memory_format=torch.channels_last):
            out = out.contiguous(memory_format=torch.channels_last)
        return out

    def extra_repr(self) -> str:
        return f"crop_scale={self.crop_scale}, jitter={self.jitter}, p_jitter={self.p_jitter}"


def to_float_images(
    views_uint8: Tensor,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    channels_last: bool = False,
) -> Tensor:
    """uint8 views (N, H, W, 3) -> float (N, 3, H, W) on the same device.

    Values are scaled to [0, 1], then standardised per channel when ``mean`` and ``std``
    are given (leave them out to augment first, then call ``normalize_images``).
    With ``channels_last`` the result is in that memory format, which is the uint8 layout
    already, so no transpose copy is made.
    """
    if views_uint8.ndim != 4 or views_uint8.shape[-1] != 3 or views_uint8.dtype != torch.uint8:
        raise ValueError(
            f"views of shape {tuple(views_uint8.shape)} and dtype {views_uint8.dtype}: "
            "expected uint8 (N, H, W, 3)"
        )
    images = views_uint8.permute(0, 3, 1, 2).float().div_(255.0)  # (N, 3, H, W)
    if (mean is None) != (std is None):
        raise ValueError(f"mean={mean}, std={std}: give both or neither")
    if mean is not None and std is not None:
        images = normalize_images(images, mean, std)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return images.contiguous(memory_format=memory_format)


def normalize_images(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Standardise (N, 3, H, W) images per channel: (x - mean) / std."""
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"mean={mean}, std={std}: expected 3 values each, std > 0")
    mean_t = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images - mean_t) / std_t
