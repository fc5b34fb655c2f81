"""The methods' losses are bit-identical to those of the code before the move to one file
per method (commit 40904b5): three learner steps on a fixed batch, every loss term compared
as the exact float (``float.hex``) it had then. The batch, the configs, the seed and the one
intra-op thread are those of the capture."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import envs
from agent.view_pairs import ViewPairs
from learner.training.learner import Learner

COMMON = ("env.image_size=32", "model.width=8", "model.proj_hidden=64", "model.proj_dim=32", "model.pred_hidden=64",
          "train.batch_size=16", "optim.warmup_steps=2", "train.steps=10")  # fmt: skip
CASES = {
    "ciper": ["method=ciper"],
    "simclr": ["method=simclr"],
    "simclr_tt": ["method=simclr_tt"],
    "predict": ["method=predict"],
    # the image world: a two-valued flip column, classified
    "ciper_static": ["method=ciper", "env.id=ciper/ImageView-v0", "env.action_set=full",
                     "method.augment_crop=false", "method.augment_color=false"],  # fmt: skip
}
# Losses of steps 1, 2 and 3, as the code before the move computed them on this machine type.
BEFORE = {
    "ciper": [
        {"contrastive": "0x1.3a67260000000p+2", "prediction": "0x1.26722e0000000p+0", "loss": "0x1.8403b20000000p+2"},
        {"contrastive": "0x1.364b320000000p+2", "prediction": "0x1.36a7cc0000000p+0", "loss": "0x1.83f5240000000p+2"},
        {"contrastive": "0x1.03ebae0000000p+2", "prediction": "0x1.1912160000000p+0", "loss": "0x1.4a30340000000p+2"},
    ],
    "simclr": [
        {"contrastive": "0x1.3a67260000000p+2", "loss": "0x1.3a67260000000p+2"},
        {"contrastive": "0x1.35f0900000000p+2", "loss": "0x1.35f0900000000p+2"},
        {"contrastive": "0x1.0325e00000000p+2", "loss": "0x1.0325e00000000p+2"},
    ],
    "simclr_tt": [
        {"contrastive": "0x1.3a67260000000p+2", "loss": "0x1.3a67260000000p+2"},
        {"contrastive": "0x1.35f0900000000p+2", "loss": "0x1.35f0900000000p+2"},
        {"contrastive": "0x1.0325e00000000p+2", "loss": "0x1.0325e00000000p+2"},
    ],
    "predict": [
        {"prediction": "0x1.1a86ca0000000p+0", "loss": "0x1.1a86ca0000000p+0"},
        {"prediction": "0x1.01d9e00000000p+0", "loss": "0x1.01d9e00000000p+0"},
        {"prediction": "0x1.0522a00000000p+0", "loss": "0x1.0522a00000000p+0"},
    ],
    "ciper_static": [
        {"contrastive": "0x1.30e6ea0000000p+2", "prediction": "0x1.b9c0c80000000p+0", "loss": "0x1.9f571c0000000p+2"},
        {"contrastive": "0x1.5fa2540000000p+1", "prediction": "0x1.95ca560000000p+0", "loss": "0x1.1543c00000000p+2"},
        {"contrastive": "0x1.8949a20000000p-1", "prediction": "0x1.5d69980000000p+0", "loss": "0x1.1107340000000p+1"},
    ],
}


def fixed_pairs(world, action_set: str, n: int = 16, size: int = 32, seed: int = 0) -> ViewPairs:
    """Random views; states from the world's own start-state distribution, b one random action after a."""
    rng = np.random.default_rng(seed)
    state_a = np.stack([world.random_state(rng) for _ in range(n)])
    dims = len(world.action_dims(action_set))
    state_b = np.stack([world.apply_action(s, rng.uniform(-1, 1, dims), action_set)[0] for s in state_a])
    return ViewPairs(
        view_a=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
        view_b=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
        relative_action=world.relative_action(state_a, state_b, action_set).astype(np.float32),
        state_a=state_a, state_b=state_b,
        object_index=np.arange(n, dtype=np.int64), category=np.arange(n, dtype=np.int64) % 3,
        offset=np.ones(n, dtype=np.int64),
    )  # fmt: skip


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("case", sorted(CASES))
def test_losses_are_bit_identical_to_before_the_move(case, make_config, one_thread):
    cfg = make_config(*COMMON, *CASES[case])
    world = envs.world_module(cfg.env.id)
    pairs = fixed_pairs(world, cfg.env.action_set)
    torch.manual_seed(0)
    learner = Learner(cfg, world, torch.device("cpu"))
    got = [{name: float(value).hex() for name, value in learner.step(pairs).items()} for _ in range(3)]
    assert got == BEFORE[case]
