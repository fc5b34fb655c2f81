"""Soak: thousands of object switches leak neither pybullet bodies nor resident memory."""

import resource

import gymnasium as gym
import pybullet as pb
import pytest

import envs


def resident_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


@pytest.mark.slow
def test_20k_steps_with_frequent_object_switches_do_not_grow_memory():
    env = gym.make(envs.OBJECT_VIEW_ID, image_size=32, split="categorised", action_set="full", episode_steps=5)
    scene = env.unwrapped._scene
    env.action_space.seed(0)
    env.reset(seed=0)
    for index in env.unwrapped.object_indices:  # warm-up: every shape cached once
        env.reset(options={"object_index": index})
        env.step(env.action_space.sample())
    steps, switches, after_warmup = 0, 0, None
    while steps < 20_000:
        _, _, _, truncated, _ = env.step(env.action_space.sample())
        steps += 1
        if truncated:
            env.reset()
            switches += 1
        if steps == 2_000:
            after_warmup = resident_mib()
        assert pb.getNumBodies(physicsClientId=scene.client) == 2  # floor + the one object
    growth = resident_mib() / after_warmup - 1.0
    print(f"soak: {steps} steps, {switches} object switches, RSS {after_warmup:.1f} MiB -> {resident_mib():.1f} MiB ({100 * growth:+.2f}%)")
    assert growth < 0.05
    env.close()
