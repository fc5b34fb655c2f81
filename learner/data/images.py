"""The one way views become encoder input: uint8 (N, H, W, 3) -> standardised float (N, 3, H, W).

Views travel as uint8 (cheap to move) and are converted on the device they are used on.
Training converts them (``to_float_images``), augments them (``learner.data.augment``), then
standardises them (``standardise``); every other consumer (features for evaluation, the
curious observer's error estimates) takes unaugmented views through ``model_input``, which
is the same two steps without the augmentation.

Views are rendered scenes, not ImageNet photos, so a fixed mid-grey centre and a spread
that maps [0, 1] to about [-2, 2] is used rather than dataset statistics: the constants
never depend on which objects a run happened to see.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

IMAGE_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
IMAGE_STD: tuple[float, float, float] = (0.25, 0.25, 0.25)


def model_input(views_uint8: Tensor, channels_last: bool = False) -> Tensor:
    """uint8 views (N, H, W, 3) -> the encoder's standardised float input (N, 3, H, W)."""
    return standardise(to_float_images(views_uint8, channels_last=channels_last))


def standardise(images: Tensor) -> Tensor:
    """Float images in [0, 1] (N, 3, H, W) standardised with the project's constants."""
    return normalize_images(images, IMAGE_MEAN, IMAGE_STD)


def to_uint8_views(images: Tensor) -> np.ndarray:
    """Float images in [0, 1] (N, 3, H, W), e.g. as augmented, back to uint8 views (N, H, W, 3)
    on the host: what a diagnostic of the views as trained on looks at."""
    return (images.detach().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def to_float_images(views_uint8: Tensor, channels_last: bool = False) -> Tensor:
    """uint8 views (N, H, W, 3) -> float (N, 3, H, W) in [0, 1] on the same device.

    With ``channels_last`` the result is in that memory format, which is the uint8 layout
    already, so no transpose copy is made.
    """
    if views_uint8.ndim != 4 or views_uint8.shape[-1] != 3 or views_uint8.dtype != torch.uint8:
        raise ValueError(
            f"views of shape {tuple(views_uint8.shape)} and dtype {views_uint8.dtype}: "
            "expected uint8 (N, H, W, 3)"
        )
    images = views_uint8.permute(0, 3, 1, 2).float().div_(255.0)  # (N, 3, H, W)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return images.contiguous(memory_format=memory_format)


def normalize_images(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Standardise (N, 3, H, W) images per channel: (x - mean) / std."""
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"mean={mean}, std={std}: expected 3 values each, std > 0")
    mean_t = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images - mean_t) / std_t
