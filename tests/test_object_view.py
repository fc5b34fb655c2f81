"""ObjectView-v0: Gymnasium API, determinism, action semantics, bad input, vectorisation."""

import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs.quaternions import quat_from_rotvec, quat_multiply
from envs.scene_state import (
    STATE_DIM,
    relative_change,
)

SIZE = 32


def make(**kwargs):
    kwargs.setdefault("image_size", SIZE)
    return gym.make(envs.OBJECT_VIEW_ID, **kwargs)


def test_azimuth_step_and_its_inverse_return_the_same_image():
    env = make(action_set="camera", nuisance="per_episode")
    first, _ = env.reset(seed=3)
    moved, *_ = env.step(np.array([1.0, 0.0, 0.0], dtype=np.float32))
    back, *_ = env.step(np.array([-1.0, 0.0, 0.0], dtype=np.float32))
    assert not np.array_equal(first, moved)
    np.testing.assert_array_equal(first, back)


def test_object_rotation_and_its_inverse_return_the_same_image():
    env = make(action_set="object", nuisance="per_episode")
    first, _ = env.reset(seed=4)
    env.step(np.array([0.0, 0.7, 0.0], dtype=np.float32))
    back, *_ = env.step(np.array([0.0, -0.7, 0.0], dtype=np.float32))
    assert np.abs(first.astype(int) - back.astype(int)).max() <= 1


def test_relative_change_from_states_equals_summed_applied_actions():
    env = make(action_set="full", episode_steps=1000)
    _, info = env.reset(seed=5)
    start = info["state"]
    total = np.zeros(9)
    composed = np.array([0.0, 0.0, 0.0, 1.0])
    rng = np.random.default_rng(0)
    for _ in range(40):
        _, _, _, _, info = env.step(rng.uniform(-1.2, 1.2, 9).astype(np.float32))
        total += info["applied_action"]
        composed = quat_multiply(quat_from_rotvec(info["applied_action"][3:6]), composed)
    change = relative_change(start, info["state"], "full")
    for k in (0, 6):  # azimuths are compared on the circle
        assert np.isclose(np.exp(1j * change[k]), np.exp(1j * total[k]))
    np.testing.assert_allclose(change[[1, 2, 7]], total[[1, 2, 7]], atol=1e-9)
    assert np.isclose(np.exp(2j * np.pi * change[8]), np.exp(2j * np.pi * total[8]))
    expected_rotvec = relative_change(np.r_[start[:3], [0, 0, 0, 1], start[7:]], np.r_[start[:3], composed, start[7:]], "object")
    np.testing.assert_allclose(change[3:6], expected_rotvec, atol=1e-6)


def test_object_stays_in_view_over_long_random_rollouts():
    env = make(action_set="full", observe=("rgb", "mask"), episode_steps=50)
    env.action_space.seed(0)
    obs, _ = env.reset(seed=0)
    for step in range(400):
        assert obs["mask"].any(), f"object out of view at step {step}"
        obs, _, _, truncated, _ = env.step(np.sign(env.action_space.sample()))  # extreme steps
        if truncated:
            obs, _ = env.reset()


def test_depth_and_mask_observations_agree():
    env = make(observe=("rgb", "depth", "mask"))
    obs, info = env.reset(seed=1)
    assert set(obs) == {"rgb", "depth", "mask"} and obs["depth"].dtype == np.float32
    distance = info["state"][2]
    on_object = obs["depth"][obs["mask"] == 1]
    assert on_object.size and np.all(np.abs(on_object - distance) < 0.75)


def test_bad_actions_are_named_and_leave_the_state_unchanged():
    env = make(action_set="camera")
    env.reset(seed=0)
    before = env.unwrapped.state
    with pytest.raises(ValueError, match=r"action\[1\]=nan: actions must be finite"):
        env.step(np.array([0.0, np.nan, 0.0], dtype=np.float32))
    with pytest.raises(ValueError, match=r"action shape \(2,\): expected \(3,\)"):
        env.step(np.zeros(2, dtype=np.float32))
    np.testing.assert_array_equal(env.unwrapped.state, before)
    _, _, _, _, info = env.step(np.array([3.0, 0.0, 0.0], dtype=np.float32))
    assert np.isclose(info["applied_action"][0], np.deg2rad(15.0))  # clipped to 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_size": 8}, "image_size=8"),
        ({"image_size": 4096}, "image_size=4096"),
        ({"split": "validation"}, "validation"),
        ({"action_set": "wiggle"}, "action_set='wiggle'"),
        ({"observe": ("depth",)}, "observe="),
        ({"renderer": "vulkan"}, "renderer='vulkan'"),
    ],
)
def test_bad_constructor_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make(**kwargs)


def test_catalogue_entry_with_missing_mesh_is_named(tmp_path):
    catalog = tmp_path / "objects.csv"
    catalog.write_text("object_id,category,mesh,scale,split,rgba\nghost_cup,cup,missing/cup.obj,1.0,train,1 0 0 1\n")
    with pytest.raises(ValueError, match="ghost_cup"):
        make(catalog=str(catalog))


def test_user_catalogue_with_own_mesh(tmp_path):
    mesh = tmp_path / "tetra.obj"
    mesh.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 3 2\nf 1 2 4\nf 1 4 3\nf 2 3 4\n")
    catalog = tmp_path / "mine.csv"
    catalog.write_text("object_id,category,mesh,scale,split,rgba\ntetra,pyramid,tetra.obj,1.0,train,0 0 1 1\n")
    env = make(catalog=str(catalog), observe=("rgb", "mask"))
    obs, info = env.reset(seed=0)
    assert info["object_id"] == "tetra" and obs["mask"].any()


def test_pickling_round_trip_keeps_the_view():
    env = make(action_set="object").unwrapped
    env.reset(seed=2)
    clone = pickle.loads(pickle.dumps(env))
    np.testing.assert_array_equal(clone.state, env.state)
    obs_a, *_ = env.step(np.array([0.3, 0.0, 0.0], dtype=np.float32))
    obs_b, *_ = clone.step(np.array([0.3, 0.0, 0.0], dtype=np.float32))
    np.testing.assert_array_equal(obs_a, obs_b)


@pytest.mark.parametrize("vector_cls", [gym.vector.SyncVectorEnv, gym.vector.AsyncVectorEnv])
def test_vector_envs(vector_cls):
    kwargs = {"shared_memory": True} if vector_cls is gym.vector.AsyncVectorEnv else {}
    vec = vector_cls([lambda: make(action_set="camera", episode_steps=5)] * 2, **kwargs)
    obs, infos = vec.reset(seed=0)
    assert obs.shape == (2, SIZE, SIZE, 3) and infos["state"].shape == (2, STATE_DIM)
    for _ in range(6):
        obs, rewards, terminated, truncated, infos = vec.step(vec.action_space.sample())
    assert obs.dtype == np.uint8 and not terminated.any()
    vec.close()


def test_egl_renderer_is_used_or_falls_back_with_a_warning():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env = make(renderer="egl")
    if env.unwrapped.renderer == "tiny":
        assert any("falling back to renderer='tiny'" in str(w.message) for w in caught)
    obs, info = env.reset(seed=0)
    assert obs.shape == (SIZE, SIZE, 3) and info["renderer"] == env.unwrapped.renderer
