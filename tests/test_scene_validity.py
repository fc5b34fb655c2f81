"""The scenes can show what CIPER is asked to learn: every action column changes the view,
the floor fixes the world frame, per-step nuisances change only the nuisance, and there are
enough objects and images to decide (DESIGN.md, "Experiment validity")."""

import gymnasium as gym
import numpy as np
import pytest

import envs
from bench.scene_validity import unit_step_changes  # the same measurement the bench prints
from envs import image_state, scene_state
from envs.actions import wrap_angle
from envs.catalog import load_catalog
from envs.image_sources import default_image_set
from envs.quaternions import quat_from_rotvec, quat_multiply

SIZE = 32
#: Visible: a +1.0 step of one action column changes the 32x32 view by at least this many
#: grey levels (mean absolute difference over pixels and channels, 0-255) ...
VISIBLE_GREY_LEVELS = 2.0
#: ... in at least this fraction of the held-out scenes.
VISIBLE_FRACTION = 0.9
SCENES = 20

WORLDS = [
    (envs.OBJECT_VIEW_ID, action_set) for action_set in scene_state.ACTION_SETS
] + [(envs.IMAGE_VIEW_ID, action_set) for action_set in image_state.ACTION_SETS]


def mean_change(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.mark.parametrize(("env_id", "action_set"), WORLDS)
def test_every_action_column_changes_a_32px_view_in_nearly_every_scene(env_id, action_set):
    changes = unit_step_changes(env_id, action_set, SCENES, SIZE, split="test", first_seed=500)
    visible = (changes >= VISIBLE_GREY_LEVELS).mean(axis=0)
    names = [d.name for d in envs.world_module(env_id).action_dims(action_set)]
    assert (visible >= VISIBLE_FRACTION).all(), dict(zip(names, visible.round(2), strict=True))


def test_camera_azimuth_step_differs_from_its_object_and_light_equivalent():
    """Turning the camera by +15 deg about world z shows the same object side and shading as
    turning the object and light by -15 deg; only the fixed floor pattern tells them apart."""
    env = gym.make(envs.OBJECT_VIEW_ID, action_set="full", image_size=SIZE, split="test", nuisance="per_episode")
    angle = scene_state.action_dims("full")[0].max_step
    in_frame = ~np.isin(scene_state.absolute_pose_names(), scene_state.WORLD_FRAME_NAMES)
    distinct = []
    for scene in range(SCENES):
        _, info = env.reset(seed=900 + scene)
        index, state = info["object_index"], info["state"]
        camera_moved = state.copy()
        camera_moved[0] = wrap_angle(state[0] + angle)
        scene_moved = state.copy()
        scene_moved[scene_state.QUAT] = quat_multiply(quat_from_rotvec(np.array([0.0, 0.0, -angle])), state[scene_state.QUAT])
        scene_moved[7] = wrap_angle(state[7] - angle)
        # Same relation between camera, object and light: equal except for the world frame.
        np.testing.assert_allclose(
            scene_state.absolute_pose(camera_moved)[in_frame], scene_state.absolute_pose(scene_moved)[in_frame], atol=1e-5
        )
        a, _ = env.reset(options={"object_index": index, "state": camera_moved})
        b, _ = env.reset(options={"object_index": index, "state": scene_moved})
        distinct.append(mean_change(a, b) >= VISIBLE_GREY_LEVELS)
    env.close()
    assert np.mean(distinct) >= VISIBLE_FRACTION


@pytest.mark.parametrize("action_set", ["camera", "full"])
def test_object_view_per_step_nuisance_changes_the_nuisance_and_nothing_else(action_set):
    env = gym.make(envs.OBJECT_VIEW_ID, action_set=action_set, image_size=SIZE, observe=("rgb", "mask"))
    dims = env.action_space.shape[0]
    observation, info = env.reset(seed=3)
    nuisance = [scene_state.STATE_INDEX[n] for n in scene_state.PER_STEP_NUISANCE_FIELDS]
    if action_set == "full":  # an action moves the floor hue: only the action may change it
        nuisance.remove(scene_state.STATE_INDEX["floor_hue"])
    others = np.setdiff1d(np.arange(scene_state.STATE_DIM), nuisance)
    for _ in range(5):
        after, _, _, _, new_info = env.step(np.zeros(dims, dtype=np.float32))
        np.testing.assert_array_equal(new_info["state"][others], info["state"][others])
        assert np.all(new_info["state"][nuisance] != info["state"][nuisance])
        assert np.abs(scene_state.nuisance_state(new_info["state"]) - scene_state.nuisance_state(info["state"])).max() > 0
        np.testing.assert_array_equal(after["mask"], observation["mask"])  # the object did not move
        assert mean_change(after["rgb"], observation["rgb"]) > 1.0  # but its colours did
        observation, info = after, new_info
    env.close()


def test_object_view_per_episode_nuisance_stays_within_the_episode():
    env = gym.make(envs.OBJECT_VIEW_ID, action_set="camera", image_size=SIZE, nuisance="per_episode")
    _, info = env.reset(seed=3)
    first = env.step(np.zeros(3, dtype=np.float32))[4]
    np.testing.assert_array_equal(first["state"], info["state"])
    env.close()


def test_image_view_per_step_background_changes_the_background_and_nothing_else():
    env = gym.make(envs.IMAGE_VIEW_ID, action_set="geometric", image_size=SIZE)
    _, info = env.reset(seed=1)
    background = image_state.STATE_INDEX["background"]
    changed = 0
    for _ in range(8):
        view, _, _, _, new_info = env.step(np.zeros(4, dtype=np.float32))
        np.testing.assert_array_equal(np.delete(new_info["state"], background), np.delete(info["state"], background))
        assert new_info["object_index"] == info["object_index"]
        changed += new_info["state"][background] != info["state"][background]
        info = new_info
    assert changed >= 7  # 512 backgrounds: a repeat is rare
    np.testing.assert_array_equal(image_state.nuisance_state(info["state"]), [info["state"][background]])
    env.close()


def test_image_views_of_one_digit_share_only_the_digit():
    """Two backgrounds under one image differ everywhere but in the digit's ink."""
    image_set = default_image_set()
    a, b = image_set.picture(0, 1), image_set.picture(0, 2)
    ink = image_set.images[0] > 250
    outside = image_set.images[0] == 0
    assert mean_change(a[outside], b[outside]) > 20
    assert ink.any() and np.abs(a[ink].astype(int) - b[ink]).mean() > 0  # ink colour comes with the background


def test_nuisance_state_names_match_columns():
    for module in (scene_state, image_state):
        rng = np.random.default_rng(0)
        states = np.stack([module.random_state(rng) for _ in range(4)])
        assert module.nuisance_state(states).shape == (4, len(module.nuisance_names()))
        assert module.absolute_pose(states).shape == (4, len(module.absolute_pose_names()))


def test_catalogue_has_40_instances_per_family_and_120_held_out():
    catalog = load_catalog()
    categorised = [catalog[i] for i in catalog.select("categorised")]
    counts = {c: sum(e.category == c for e in categorised) for c in catalog.categories}
    assert min(counts.values()) >= 40, counts
    assert len(catalog.select("test")) >= 120


def test_default_digit_set_has_3000_training_and_600_held_out_images():
    image_set = default_image_set()
    assert len(image_set.select("train")) >= 3000 and len(image_set.select("test")) >= 600
