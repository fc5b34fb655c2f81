"""What every view env of the registry shares: Gymnasium's checks without warnings, the same
rollout from the same seed, and both render modes (ObjectView-v0 and ImageView-v0 alike)."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs import view_arguments

SIZE = 32
ENV_IDS = sorted(k for k in gym.registry if k.startswith("ciper/"))
# Episode length of the determinism rollout per env (100 steps cross several resets).
EPISODE_STEPS = {envs.OBJECT_VIEW_ID: view_arguments.EPISODE_STEPS, envs.IMAGE_VIEW_ID: 30}


def make(env_id, **kwargs):
    kwargs.setdefault("image_size", SIZE)
    return gym.make(env_id, **kwargs)


@pytest.mark.parametrize(
    ("env_id", "action_set"),
    [
        (env_id, action_set)
        for env_id in ENV_IDS
        for action_set in sorted(envs.world_module(env_id).ACTION_SETS)
    ],
)
def test_check_env_passes_without_warnings(env_id, action_set):
    env = make(env_id, action_set=action_set)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)
    assert [str(w.message) for w in caught] == []
    env.close()


def rollout(env_id, seed, steps=100, action_set="full"):
    env = make(env_id, action_set=action_set, episode_steps=EPISODE_STEPS[env_id])
    env.action_space.seed(seed)
    obs, info = env.reset(seed=seed)
    frames, infos = [obs], [info]
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert reward == 0.0 and not terminated
        frames.append(obs)
        infos.append(info)
        if truncated:
            obs, info = env.reset()
    env.close()
    return np.stack(frames), infos


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_same_seed_same_rollout_different_seed_different(env_id):
    frames_a, infos_a = rollout(env_id, seed=7)
    frames_b, infos_b = rollout(env_id, seed=7)
    frames_c, _ = rollout(env_id, seed=8)
    np.testing.assert_array_equal(frames_a, frames_b)
    for ia, ib in zip(infos_a, infos_b, strict=True):
        assert ia["object_id"] == ib["object_id"] and ia["step"] == ib["step"]
        np.testing.assert_array_equal(ia["state"], ib["state"])
        np.testing.assert_array_equal(ia["applied_action"], ib["applied_action"])
    assert not np.array_equal(frames_a, frames_c)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_render_modes(env_id):
    env = make(env_id, render_mode="rgb_array", render_size=96)
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (96, 96, 3) and frame.dtype == np.uint8
    human = make(env_id, render_mode="human")
    human.reset(seed=0)
    human.step(human.action_space.sample())
    human.close()
