"""Which device the learner runs on, and the per-device defaults of its fast path.

``train.channels_last`` and ``train.bf16`` are true, false, or null; null takes the
default measured for the device type (``bench/learner_step_flops.py``, README
"Performance"): channels_last wins on CUDA and on CPU (oneDNN convolutions, 1.3x-1.5x on
the small encoder's step), bf16 autocast wins on CUDA but runs ~10x slower on a CPU
without bf16 units, so it is off there. The CPU keeps PyTorch's default intra-op thread
count (one per physical core). ``torch.compile`` stays opt-in on every device (no measured
gain on CPU).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Measured defaults per device type; a device type not listed gets neither.
_CHANNELS_LAST = {"cpu": True, "cuda": True}
_BF16 = {"cpu": False, "cuda": True}


def select_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; anything else is taken as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device={name!r}: CUDA is not available on this machine")
    return device


@dataclass(frozen=True)
class FastPath:
    """The memory format and autocast a learner uses on its device."""

    channels_last: bool  # images and conv weights in channels_last (NHWC) memory format
    bf16: bool  # forward pass under bf16 autocast


def fast_path(device: torch.device, channels_last: bool | None, bf16: bool | None) -> FastPath:
    """Resolve ``train.channels_last`` and ``train.bf16`` for ``device``: a bool is taken as
    given, None takes the device type's measured default."""
    return FastPath(
        channels_last=_CHANNELS_LAST.get(device.type, False) if channels_last is None else bool(channels_last),
        bf16=_BF16.get(device.type, False) if bf16 is None else bool(bf16),
    )
