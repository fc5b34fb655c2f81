"""The learner: model, optimiser, schedule and augmentation, and the one step they take together.

A step moves a batch of uint8 view pairs to the device, converts and augments them there,
puts the pairs' targets beside them (``learner.data.targets``), runs the pair model (the
encoder, then the method's heads and losses) and updates the weights. The method is
whatever ``learner.methods.registry`` built from ``cfg.method``: the learner never asks
which. Its state (model, optimiser, schedule, the augmentation's generator) goes into the
run's checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from agent.view_pairs import ViewPairs
from conf.schema import CiperConfig
from conf.typed import plain_config, typed_config
from envs.world import World
from learner.data.augment import ViewAugmentation
from learner.data.images import standardise, to_float_images, to_uint8_views
from learner.data.targets import pair_targets, run_targets
from learner.evaluation.shortcut import SHORTCUT_PAIRS, shortcut_colour_top1
from learner.methods.base import PairTargets
from learner.methods.registry import architecture_of, build_model
from learner.nets.pair_model import PairModel
from learner.training.device import fast_path
from learner.training.distributed import DistributedContext, gather_with_grad


def warmup_cosine(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Learning-rate factor: linear warm-up, then cosine decay to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


class Learner:
    """Model, optimiser, schedule and augmentation of one run, and its training step."""

    def __init__(
        self, cfg: CiperConfig | DictConfig, world: World, device: torch.device, context: DistributedContext | None = None
    ) -> None:
        cfg = self.cfg = typed_config(cfg)
        self.world = world
        self.device = device
        self.context = context or DistributedContext()
        spec, self.layout = run_targets(cfg, world)
        # Seeded apart from the model and the pairs; its state goes into every checkpoint.
        self.augment = None if spec is None else ViewAugmentation(spec, cfg.env.image_size, cfg.train.seed + 1)
        self.shortcut_views: list[np.ndarray] = []  # the first pairs trained on, as augmented: [views a; views b] per batch
        self.architecture = architecture_of(cfg, self.layout)
        self.model: PairModel = build_model(self.architecture, cfg.method).to(device)
        self.on_cuda = device.type == "cuda"
        self.fast_path = fast_path(device, cfg.train.channels_last, cfg.train.bf16)
        self.channels_last = self.fast_path.channels_last
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # foreach (multi-tensor update kernels) is PyTorch's default only on CUDA; on CPU it
        # made the small encoder's step ~5% faster (README "Performance").
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay, foreach=True
        )
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(cfg.optim.warmup_steps, cfg.train.steps)
        )
        forward: torch.nn.Module = self.model
        if self.context.is_distributed:
            forward = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=[device.index] if self.on_cuda else None)
        self.forward = torch.compile(forward) if cfg.train.compile else forward
        self.autocast_dtype = torch.bfloat16 if self.fast_path.bf16 else None

    @property
    def target_names(self) -> list[str]:
        """The prediction target's columns: the relative action, then delta_<augmentation parameter>."""
        return list(self.layout.names)

    def images(self, views: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        """uint8 (N, H, W, 3) on the host -> standardised, augmented float (N, 3, H, W) on the
        device, and the augmentation parameters (N, P) (None without augmentation)."""
        tensor = torch.from_numpy(np.ascontiguousarray(views))
        if self.on_cuda:
            tensor = tensor.pin_memory().to(self.device, non_blocking=True)
        images = to_float_images(tensor, channels_last=self.channels_last)
        parameters = None
        if self.augment is not None:
            images, parameters = self.augment(images)
        if sum(len(v) for v in self.shortcut_views) < 2 * SHORTCUT_PAIRS:  # the pairs as trained on
            self.shortcut_views.append(to_uint8_views(images))
        return standardise(images), parameters

    def targets(self, pairs: ViewPairs, parameters: torch.Tensor | None) -> PairTargets:
        """The targets of ``pairs`` (``learner.data.targets.pair_targets``) on the device."""
        distributed = self.context.is_distributed
        return pair_targets(pairs, parameters, self.world, self.device, gather=gather_with_grad if distributed else None,
                            offset=self.context.rank * len(pairs))  # fmt: skip

    def step(self, pairs: ViewPairs) -> dict[str, torch.Tensor]:
        """One optimisation step on a batch of pairs; returns the detached loss terms."""
        self.model.train()
        images, parameters = self.images(np.concatenate([pairs.view_a, pairs.view_b]))
        targets = self.targets(pairs, parameters)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32, enabled=self.autocast_dtype is not None):
            losses = self.forward(images, targets)
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        self.optimizer.step()
        self.schedule.step()
        return {name: value.detach() for name, value in losses.items()}

    def shortcut_top1(self) -> float:
        """Colour-histogram positive retrieval on the first pairs this run trained on, as
        augmented (``learner.evaluation.shortcut``); nan before any step."""
        halves = [(v[: len(v) // 2], v[len(v) // 2 :]) for v in self.shortcut_views]
        if sum(len(a) for a, _ in halves) < 2:
            return float("nan")
        return shortcut_colour_top1(np.concatenate([a for a, _ in halves]), np.concatenate([b for _, b in halves]))

    def state_dict(self) -> dict[str, Any]:
        return {
            "architecture": self.architecture,
            "method_settings": self.method_settings(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "augment_generator": None if self.augment is None else self.augment.generator.get_state(),
        }

    def method_settings(self) -> dict[str, Any]:
        """The method's settings as plain data (what a checkpoint rebuilds the method from)."""
        return plain_config(self.cfg.method)

    def load_state_dict(self, payload: dict[str, Any]) -> None:
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.schedule.load_state_dict(payload["schedule"])
        if self.augment is not None:
            self.augment.generator.set_state(payload["augment_generator"])
