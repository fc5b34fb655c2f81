"""The learner's per-device fast path: defaults resolved per device type, and the CPU
channels_last path giving the same losses and gradients as the contiguous one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import envs
from learner.training.device import FastPath, fast_path, select_device
from learner.training.learner import Learner

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)


def test_null_takes_the_device_default_and_a_bool_is_taken_as_given() -> None:
    assert fast_path(CPU, None, None) == FastPath(channels_last=True, bf16=False)
    assert fast_path(CUDA, None, None) == FastPath(channels_last=True, bf16=True)
    assert fast_path(CPU, False, True) == FastPath(channels_last=False, bf16=True)
    assert fast_path(CUDA, False, False) == FastPath(channels_last=False, bf16=False)
    assert fast_path(torch.device("meta"), None, None) == FastPath(channels_last=False, bf16=False)


def test_select_device_refuses_missing_cuda() -> None:
    assert select_device("cpu") == CPU
    if not torch.cuda.is_available():
        assert select_device("auto") == CPU
        with pytest.raises(ValueError, match="train.device='cuda'"):
            select_device("cuda")


def test_the_default_config_runs_channels_last_without_autocast_on_cpu(make_config) -> None:
    cfg = make_config("train.device=cpu")
    assert cfg.train.channels_last is None and cfg.train.bf16 is None
    learner = _learner(cfg)
    assert learner.channels_last and learner.autocast_dtype is None
    conv = next(m for m in learner.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    pairs = _pairs(cfg)
    images, _ = learner.images(np.concatenate([pairs.view_a, pairs.view_b]))
    assert images.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("augment", [False, True])
def test_channels_last_and_contiguous_give_the_same_step_on_cpu(make_config, augment: bool) -> None:
    overrides = ["train.device=cpu", "model.width=8", "env.image_size=32", "train.batch_size=8",
                 f"method.augment_crop={str(augment).lower()}", f"method.augment_color={str(augment).lower()}"]  # fmt: skip
    runs = []
    for channels_last in (True, False):
        cfg = make_config(*overrides, f"train.channels_last={str(channels_last).lower()}")
        learner = _learner(cfg)
        assert learner.channels_last is channels_last
        pairs = _pairs(cfg)
        first = learner.step(pairs)
        # Gradients, not updated weights: Adam's first steps are ~lr * sign(grad), so a
        # rounding-level change of a near-zero gradient would move a weight by 2 * lr.
        grads = {name: p.grad.clone() for name, p in learner.model.named_parameters() if p.grad is not None}
        runs.append(([first, learner.step(pairs)], grads))  # the second step sees the first's update
    (losses_cl, grads_cl), (losses_c, grads_c) = runs
    for step_cl, step_c in zip(losses_cl, losses_c, strict=True):
        assert step_cl.keys() == step_c.keys()
        for name in step_cl:
            torch.testing.assert_close(step_cl[name], step_c[name], rtol=1e-4, atol=1e-5)
    assert grads_cl.keys() == grads_c.keys()
    for name in grads_c:
        torch.testing.assert_close(grads_cl[name], grads_c[name], rtol=1e-3, atol=1e-5, msg=name)


def _learner(cfg) -> Learner:
    torch.manual_seed(0)  # same initial weights for every learner built here
    return Learner(cfg, envs.world_module(cfg.env.id), select_device(cfg.train.device))


def _pairs(cfg):
    from agent.view_pairs import ViewPairs

    n, size = cfg.train.batch_size, cfg.env.image_size
    world = envs.world_module(cfg.env.id)
    action_dim = len(world.relative_action_names(cfg.env.action_set))
    rng = np.random.default_rng(0)
    views = rng.integers(0, 256, size=(2, n, size, size, 3), dtype=np.uint8)
    states = np.stack([[world.random_state(rng) for _ in range(n)] for _ in range(2)])
    return ViewPairs(
        view_a=views[0], view_b=views[1], relative_action=rng.normal(size=(n, action_dim)).astype(np.float32),
        state_a=states[0], state_b=states[1], object_index=np.arange(n), category=np.zeros(n, np.int64),
        offset=np.ones(n, np.int64),
    )  # fmt: skip


def test_small_encoder_keeps_the_conv_stem_flops_and_refuses_odd_sizes() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    from learner.nets.encoders import SmallConvNet

    encoder = SmallConvNet(width=8, out_dim=16)
    with FlopCounterMode(display=False) as counter:
        assert encoder(torch.rand(2, 3, 32, 32)).shape == (2, 16)
    # a stride-1 3x3 conv 3 -> w at 32x32 costs what the 3x3 conv 12 -> w at 16x16 does
    stem = 2 * 2 * 32 * 32 * 27 * 8
    rest = 2 * 2 * (16 * 16 * 72 * 16 + 8 * 8 * 144 * 32 + 4 * 4 * 288 * 16)
    assert counter.get_total_flops() == stem + rest
    with pytest.raises(ValueError, match=r"\(2, 3, 31, 32\).*even height and width"):
        encoder(torch.rand(2, 3, 31, 32))
