"""Whether one training step's batch can fit in memory, estimated before the run starts.

A step holds its pairs as uint8 views on the host (the batch in use and the prefetched
ones), then as float32 images where the model runs (converted, augmented, standardised),
and the encoder's activations on top. `batch_memory_problem` compares a lower bound of the
first two with the memory available, so a batch that can never fit is refused before
anything starts, in one line that says how much it needs; what the bound leaves out (the
activations) is caught while training (``learner.training.loop.explained_out_of_memory``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from conf.schema import CiperConfig

UINT8_COPIES = 3  # the batch in use and the prefetch queue's two (learner.data.pair_sources)
FLOAT32_COPIES = 3  # converted, augmented and standardised images


def batch_bytes(batch_size: int, image_size: int) -> tuple[int, int]:
    """(host uint8 bytes, float32 bytes) that a step's ``2 * batch_size`` views take at least."""
    pixels = 2 * batch_size * image_size * image_size * 3
    return UINT8_COPIES * pixels, FLOAT32_COPIES * 4 * pixels


def available_host_bytes() -> int | None:
    """Memory the kernel can give without swapping (``MemAvailable``; None where unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def available_device_bytes(device: torch.device) -> int | None:
    """Free memory of a CUDA device (None for other devices: the host's counts)."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return int(free)


def batch_memory_problem(cfg: CiperConfig, device: torch.device) -> str | None:
    """Why a step of ``cfg``'s batch cannot fit in memory on ``device`` (None: it may)."""
    size, batch = cfg.env.image_size, cfg.train.batch_size
    host, images = batch_bytes(batch, size)
    device_free = available_device_bytes(device)
    if device_free is None:  # the model runs on the host too
        checks = [(host + images, available_host_bytes(), "this machine")]
    else:
        checks = [(host, available_host_bytes(), "this machine"), (images, device_free, str(device))]
    for need, have, where in checks:
        if have is not None and need > have:
            return (f"train.batch_size={batch}: a step holds 2 x {batch} views of {size}x{size} pixels (uint8 and "
                    f"float32 copies), at least {need / 2**30:.1f} GiB, but {where} has {have / 2**30:.1f} GiB "
                    f"available; lower train.batch_size well below {int(batch * have / need)} (or env.image_size)")  # fmt: skip
    return None
