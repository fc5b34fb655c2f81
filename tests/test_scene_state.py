"""The pure math of states, actions and relative actions (no rendering)."""

import numpy as np
import pytest

import envs
from envs.quaternions import quat_from_rotvec, quat_multiply, rotvec_from_quat
from envs.scene_state import (
    ACTION_SETS,
    STATE_DIM,
    WORLD_FRAME_NAMES,
    absolute_pose,
    absolute_pose_names,
    apply_action,
    random_state,
    relative_action,
    relative_action_names,
    relative_change,
    viewpoint_azimuth,
    viewpoint_latent,
)


@pytest.mark.parametrize("action_set", sorted(ACTION_SETS))
def test_one_step_relative_change_equals_applied_action(action_set):
    rng = np.random.default_rng(0)
    for _ in range(200):
        state = random_state(rng)
        action = rng.uniform(-1.5, 1.5, size=len(ACTION_SETS[action_set]))
        new, applied = apply_action(state, action, action_set)
        change = relative_change(state, new, action_set)
        np.testing.assert_allclose(change, applied, atol=1e-9)


def test_summed_camera_actions_equal_state_difference_modulo_wrap():
    rng = np.random.default_rng(1)
    state = random_state(rng)
    start = state.copy()
    total = np.zeros(3)
    for _ in range(50):
        state, applied = apply_action(state, rng.uniform(-1, 1, 3), "camera")
        total += applied
    change = relative_change(start, state, "camera")
    assert np.isclose(np.cos(change[0]), np.cos(total[0])) and np.isclose(np.sin(change[0]), np.sin(total[0]))
    np.testing.assert_allclose(change[1:], total[1:], atol=1e-9)


def test_composed_object_rotations_equal_relative_quaternion():
    rng = np.random.default_rng(2)
    state = random_state(rng)
    start = state.copy()
    composed = np.array([0.0, 0.0, 0.0, 1.0])
    for _ in range(20):
        state, applied = apply_action(state, rng.uniform(-1, 1, 3), "object")
        composed = quat_multiply(quat_from_rotvec(applied), composed)
    rel = relative_action(start, state, "object")
    composed = composed * np.sign(composed[3])
    np.testing.assert_allclose(rel, composed, atol=1e-6)


def test_clipping_and_clamping_are_visible_in_applied_action():
    state = random_state(np.random.default_rng(3))
    _, applied = apply_action(state, np.array([5.0, 0.0, 0.0]), "camera")
    assert np.isclose(applied[0], np.deg2rad(15.0))
    state[1] = np.deg2rad(74.0)
    _, applied = apply_action(state, np.array([0.0, 1.0, 0.0]), "camera")
    assert np.isclose(applied[1], np.deg2rad(1.0))


def test_rotvec_round_trip_and_batching():
    rng = np.random.default_rng(4)
    v = rng.normal(size=(100, 3)) * 0.8
    np.testing.assert_allclose(rotvec_from_quat(quat_from_rotvec(v)), v, atol=1e-9)
    a = np.stack([random_state(rng) for _ in range(8)])
    b = np.stack([random_state(rng) for _ in range(8)])
    batched = relative_action(a, b, "full")
    assert batched.shape == (8, len(relative_action_names("full")))
    np.testing.assert_allclose(batched[3], relative_action(a[3], b[3], "full"), atol=1e-6)
    assert absolute_pose(a).shape == (8, len(absolute_pose_names())) and a.shape[1] == STATE_DIM


def test_absolute_pose_is_what_the_image_can_show():
    """Turning the whole scene (camera, object, light) about the world z axis changes only
    what the patterned floor shows: the world-frame columns (camera azimuth, the object's
    orientation in the world), and no other."""
    rng = np.random.default_rng(5)
    state = random_state(rng)
    turned = state.copy()
    turned[0] = state[0] + 0.9
    turned[7] = state[7] + 0.9
    turned[3:7] = quat_multiply(quat_from_rotvec(np.array([0.0, 0.0, 0.9])), state[3:7])
    azimuth = [absolute_pose_names().index(n) for n in WORLD_FRAME_NAMES]
    others = np.setdiff1d(np.arange(len(absolute_pose_names())), azimuth)
    np.testing.assert_allclose(absolute_pose(turned)[others], absolute_pose(state)[others], atol=1e-6)
    assert np.abs(absolute_pose(turned)[azimuth] - absolute_pose(state)[azimuth]).max() > 0.1
    moved = state.copy()
    moved[0] += 0.9  # the camera alone moves: another side of the object is in view
    assert np.abs(absolute_pose(moved) - absolute_pose(state)).max() > 0.1


def test_unknown_action_set_names_the_valid_ones():
    with pytest.raises(ValueError, match="action_set='orbit'.*camera"):
        relative_action(np.zeros(STATE_DIM), np.zeros(STATE_DIM), "orbit")


@pytest.mark.parametrize("env_id", [envs.OBJECT_VIEW_ID, envs.IMAGE_VIEW_ID])
def test_both_worlds_implement_the_world_protocol(env_id):
    assert isinstance(envs.world_module(env_id), envs.World)


def test_viewpoint_latent_where_camera_or_object_moves():
    states = np.stack([random_state(np.random.default_rng(i)) for i in range(3)])
    for action_set in ("camera", "object", "full"):
        name, values = viewpoint_latent(states, action_set)
        assert name == "viewpoint_azimuth"
        np.testing.assert_array_equal(values, viewpoint_azimuth(states))
    assert viewpoint_latent(states, "light") is None
    assert envs.world_module(envs.IMAGE_VIEW_ID).viewpoint_latent(states, "geometric") is None
