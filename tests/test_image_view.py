"""ImageView-v0: Gymnasium API, determinism, augmentation semantics, image sources, bad input."""

import pickle

import cv2
import gymnasium as gym
import numpy as np
import pytest

import envs
from envs import image_state
from envs.image_sources import default_image_set, load_cifar10, load_image_folder, load_image_set
from envs.image_state import (
    ACTION_SETS,
    STATE_DIM,
    apply_action,
    identity_state,
    relative_action,
    relative_action_discrete,
    relative_action_names,
    relative_change,
)
from envs.image_view import ImageViewEnv, colour_matrix, render_view

SIZE = 32


def make(**kwargs):
    kwargs.setdefault("image_size", SIZE)
    return gym.make(envs.IMAGE_VIEW_ID, **kwargs)


def test_world_module_exposes_the_shared_interface():
    module = envs.world_module(envs.IMAGE_VIEW_ID)
    assert module is image_state
    for name in ("relative_action", "relative_action_names", "relative_action_discrete", "absolute_pose",
                 "action_dims", "STATE_FIELDS", "ABSOLUTE_POSE_NAMES", "random_state"):  # fmt: skip
        assert hasattr(module, name), name
    assert isinstance(module, envs.World)


def test_info_has_the_object_view_keys():
    _, info = make().reset(seed=0)
    assert set(info) == {"state", "applied_action", "object_index", "object_id", "category",
                         "category_index", "step", "renderer"}  # fmt: skip
    image_set = default_image_set()
    assert info["renderer"] == "cv2" and info["state"].shape == (STATE_DIM,)
    assert info["object_id"] == image_set.image_ids[info["object_index"]]
    assert info["category"] == image_set.class_names[info["category_index"]]


def test_one_step_relative_change_equals_applied_action():
    rng = np.random.default_rng(1)
    state = image_state.random_state(rng)
    for _ in range(200):
        action = rng.uniform(-1.5, 1.5, 9)
        new, applied = apply_action(state, action, "full")
        change = relative_change(state, new, "full")
        np.testing.assert_allclose(change[[0, 1, 2, 4, 5, 6]], applied[[0, 1, 2, 4, 5, 6]], atol=1e-12)
        assert np.isclose(np.exp(1j * change[3]), np.exp(1j * applied[3]))  # rotation on the circle
        assert np.isclose(np.exp(2j * np.pi * change[7]), np.exp(2j * np.pi * applied[7]))  # hue
        assert change[8] == applied[8] == float(np.clip(action[8], -1, 1) > 0.5)
        state = new


def test_relative_change_from_states_equals_summed_applied_actions():
    env = make(action_set="full", episode_steps=1000)
    _, info = env.reset(seed=5)
    start = info["state"]
    total = np.zeros(9)
    rng = np.random.default_rng(0)
    for _ in range(60):
        _, _, _, _, info = env.step(rng.uniform(-1.2, 1.2, 9).astype(np.float32))
        total += info["applied_action"]
    change = relative_change(start, info["state"], "full")
    np.testing.assert_allclose(change[[0, 1, 2, 4, 5, 6]], total[[0, 1, 2, 4, 5, 6]], atol=1e-9)
    assert np.isclose(np.exp(1j * change[3]), np.exp(1j * total[3]))
    assert np.isclose(np.exp(2j * np.pi * change[7]), np.exp(2j * np.pi * total[7]))
    assert change[8] == total[8] % 2  # flips compose by parity


def test_clamps_are_reported_in_the_applied_action():
    state = identity_state()  # crop scale at its maximum 1.0
    new, applied = apply_action(state, np.array([0.0, 0.0, 1.0, 0.0]), "geometric")
    assert applied[2] == 0.0 and new[2] == 1.0
    new, applied = apply_action(state, np.array([0.0, 0.0, -3.0, 0.0]), "geometric")
    assert np.isclose(applied[2], -0.1) and np.isclose(new[2], np.exp(-0.1))  # clipped to -1


def test_relative_action_encoding_and_discrete_columns():
    rng = np.random.default_rng(2)
    a = np.stack([image_state.random_state(rng) for _ in range(6)]).reshape(2, 3, STATE_DIM)
    b = np.stack([image_state.random_state(rng) for _ in range(6)]).reshape(2, 3, STATE_DIM)
    for action_set in ACTION_SETS:
        target = relative_action(a, b, action_set)
        names = relative_action_names(action_set)
        assert target.dtype == np.float32 and target.shape == (2, 3, len(names))
        np.testing.assert_allclose(relative_action(a, a, action_set)[..., list(names).index(names[0])], 0.0)
    full = relative_action(a, b, "full")
    flip_column = relative_action_names("full").index("flip")
    np.testing.assert_array_equal(full[..., flip_column], (a[..., 4] != b[..., 4]).astype(np.float32))
    np.testing.assert_array_equal(relative_action_discrete("full"), np.arange(11) == flip_column)
    assert not relative_action_discrete("geometric").any()
    pose = image_state.absolute_pose(a)
    assert pose.shape == (2, 3, len(image_state.ABSOLUTE_POSE_NAMES))


def test_geometric_action_and_its_inverse_return_the_same_image():
    env = make(action_set="geometric", nuisance="per_episode")
    first, _ = env.reset(seed=3)
    action = np.array([0.6, -0.4, 0.5, 0.8], dtype=np.float32)
    moved, *_ = env.step(action)
    back, *_ = env.step(-action)
    assert np.abs(first.astype(int) - moved.astype(int)).mean() > 5
    assert np.abs(first.astype(int) - back.astype(int)).max() <= 1


def test_photometric_identity_leaves_the_crop_unchanged():
    image = default_image_set().picture(17, background=5)
    state = image_state.random_state(np.random.default_rng(4))
    state[5:9] = (1.0, 1.0, 1.0, 0.0)
    view = render_view(image, state, 48)
    warped = cv2.warpAffine(image, _reference_matrix(state, image.shape[0], 48), (48, 48),
                            flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)  # fmt: skip
    np.testing.assert_array_equal(view, warped)
    # render_view skips an identity colour map; the map itself must be the identity too.
    mean_rgb = np.array(cv2.mean(warped)[:3])
    np.testing.assert_array_equal(cv2.transform(warped, colour_matrix(state, mean_rgb)), warped)
    whole = render_view(image, identity_state(), image.shape[0])
    np.testing.assert_array_equal(whole, image)  # identity state at source size = the image


def _reference_matrix(state, source_side, size):
    """Forward map (source -> view) built step by step, independently of view_matrix."""
    cx, cy, scale, rotation, flip = state[:5]
    side = scale * source_side
    to_centre = np.array([[1, 0, -(cx * source_side - 0.5)], [0, 1, -(cy * source_side - 0.5)], [0, 0, 1]])
    c, s = np.cos(-rotation), np.sin(-rotation)
    unrotate = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    mirror = np.diag([-1.0 if flip else 1.0, 1.0, 1.0])
    to_view = np.array([[size / side, 0, size / 2 - 0.5], [0, size / side, size / 2 - 0.5], [0, 0, 1]])
    return (to_view @ mirror @ unrotate @ to_centre)[:2]


def test_photometric_parameters_do_what_they_say():
    image = default_image_set().picture(3, background=0)
    base = identity_state()
    brighter = base.copy()
    brighter[5] = 1.5
    assert render_view(image, brighter, 64).mean() > render_view(image, base, 64).mean() + 10
    grey = base.copy()
    grey[7] = 0.4
    spread = lambda v: v.astype(float).std(axis=-1).mean()  # noqa: E731 - channel spread = saturation
    assert spread(render_view(image, grey, 64)) < 0.7 * spread(render_view(image, base, 64))
    turned = base.copy()
    turned[8] = 0.25
    assert np.abs(render_view(image, turned, 64).astype(int) - render_view(image, base, 64)).mean() > 10


def test_flip_action_toggles_above_one_half_only():
    env = make(action_set="full", nuisance="per_episode").unwrapped
    env.reset(seed=0, options={"state": identity_state()})
    frame0 = env.step(np.zeros(9, dtype=np.float32))[0]
    _, _, _, _, info = env.step(np.r_[np.zeros(8), 0.5].astype(np.float32))
    assert info["state"][4] == 0.0 and info["applied_action"][8] == 0.0
    flipped, _, _, _, info = env.step(np.r_[np.zeros(8), 0.9].astype(np.float32))
    assert info["state"][4] == 1.0 and info["applied_action"][8] == 1.0
    np.testing.assert_array_equal(flipped, frame0[:, ::-1])


def test_default_image_set_has_ten_classes_and_a_split_by_image():
    image_set = default_image_set()
    assert image_set.images.dtype == np.uint8 and image_set.images.shape[1:] == (64, 64)  # coverage masks
    assert image_set.composited and image_set.picture(0, 3).shape == (64, 64, 3)
    assert len(image_set.class_names) >= 10 and image_set.labels.dtype == np.int64
    train, test = image_set.select("train"), image_set.select("test")
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == len(image_set)
    assert len(train) >= 3000 and len(test) >= 600
    for label in range(10):
        assert np.sum(image_set.labels[test] == label) == np.sum(image_set.labels == label) // 5
        assert np.sum(image_set.labels == label) >= 300
    assert len(set(image_set.image_ids)) == len(image_set)
    assert not image_set.images.flags.writeable


def test_train_and_test_envs_see_disjoint_images():
    seen = {}
    for split in ("train", "test"):
        env = make(split=split)
        env.reset(seed=0)
        seen[split] = {env.reset()[1]["object_id"] for _ in range(30)}
    assert not seen["train"] & seen["test"]


def _write_fake_cifar(folder, records_per_file=3):
    rng = np.random.default_rng(0)
    written = []
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for name in names:
        labels = rng.integers(0, 10, records_per_file).astype(np.uint8)
        planes = rng.integers(0, 256, (records_per_file, 3, 32, 32)).astype(np.uint8)
        raw = np.concatenate([labels[:, None], planes.reshape(records_per_file, -1)], axis=1)
        (folder / name).write_bytes(raw.tobytes())
        written.append((labels, planes))
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta.txt").write_text("\n".join(classes) + "\n\n")
    return written, classes


def test_cifar10_loader_reads_labels_and_images(tmp_path):
    written, classes = _write_fake_cifar(tmp_path)
    image_set = load_image_set(f"cifar10:{tmp_path}")
    assert image_set.class_names == tuple(classes) and len(image_set) == 18
    labels, planes = written[1]  # data_batch_2: records 3..5
    np.testing.assert_array_equal(image_set.labels[3:6], labels)
    np.testing.assert_array_equal(image_set.images[4], planes[1].transpose(1, 2, 0))  # R, G, B planes
    assert image_set.images[4, 5, 7, 1] == planes[1, 1, 5, 7]  # green plane, row 5, column 7
    np.testing.assert_array_equal(image_set.select("test"), np.arange(15, 18))
    np.testing.assert_array_equal(image_set.labels[15:], written[5][0])
    env = make(catalog=f"cifar10:{tmp_path}", split="test", image_size=16)
    _, info = env.reset(seed=0)
    assert info["object_id"].startswith("cifar10_test_") and info["category"] in classes


def test_cifar10_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="data_batch_1.bin"):
        load_cifar10(tmp_path / "nowhere")
    _write_fake_cifar(tmp_path)
    (tmp_path / "test_batch.bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"test_batch\.bin is missing"):
        load_cifar10(str(tmp_path))


def test_image_folder_loader(tmp_path):
    rng = np.random.default_rng(0)
    for name, count, shape in (("cats", 5, (40, 60, 3)), ("dogs", 4, (50, 50, 3))):
        (tmp_path / name).mkdir()
        for i in range(count):
            image = rng.integers(0, 256, shape).astype(np.uint8)
            cv2.imwrite(str(tmp_path / name / f"{i}.{'png' if i % 2 else 'jpg'}"), image)
    (tmp_path / "cats" / "notes.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()
    image_set = load_image_folder(str(tmp_path))
    assert image_set.class_names == ("cats", "dogs")
    assert image_set.images.shape == (9, 96, 96, 3)
    np.testing.assert_array_equal(image_set.labels, [0] * 5 + [1] * 4)
    assert image_set.image_ids[0] == "cats/0.jpg"
    assert list(image_set.select("test")) == [4]  # 80/20 per class: the 5th cat
    png = cv2.imread(str(tmp_path / "dogs" / "1.png"))
    expected = cv2.resize(cv2.cvtColor(png, cv2.COLOR_BGR2RGB), (96, 96), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(image_set.images[6], expected)  # RGB, not BGR
    _, info = make(catalog=tmp_path, split="all").reset(seed=0)
    assert info["category"] in ("cats", "dogs")


def test_bad_actions_are_named_and_leave_the_state_unchanged():
    env = make(action_set="photometric")
    env.reset(seed=0)
    before = env.unwrapped.state
    with pytest.raises(ValueError, match=r"action\[1\]=nan: actions must be finite"):
        env.step(np.array([0.0, np.nan, 0.0, 0.0], dtype=np.float32))
    with pytest.raises(ValueError, match=r"action\[3\]=inf: actions must be finite"):
        env.step(np.array([0.0, 0.0, 0.0, np.inf], dtype=np.float32))
    with pytest.raises(ValueError, match=r"action shape \(2,\): expected \(4,\)"):
        env.step(np.zeros(2, dtype=np.float32))
    np.testing.assert_array_equal(env.unwrapped.state, before)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_size": 8}, "image_size=8"),
        ({"image_size": 4096}, "image_size=4096"),
        ({"render_size": 2000}, "render_size=2000"),
        ({"split": "validation"}, "split='validation'"),
        ({"action_set": "wiggle"}, "action_set='wiggle'"),
        ({"episode_steps": 0}, "episode_steps=0"),
        ({"render_mode": "ansi"}, "render_mode='ansi'"),
        ({"catalog": "/no/such/folder"}, "/no/such/folder"),
    ],
)
def test_bad_constructor_arguments_are_named(kwargs, message):
    # The class itself, not gym.make: make() warns about an unknown render_mode first.
    with pytest.raises(ValueError, match=message):
        ImageViewEnv(**kwargs)


def test_bad_reset_options_are_named():
    env = make(split="test")
    train_index = int(default_image_set().select("train")[0])
    with pytest.raises(ValueError, match=rf"options\['image_index'\]={train_index}"):
        env.reset(options={"image_index": train_index})
    bad = identity_state()
    bad[2] = 3.0
    with pytest.raises(ValueError, match=r"state\[2\] \(crop_scale\)=3.0"):
        env.reset(options={"state": bad})
    test_index = int(default_image_set().select("test")[0])
    _, info = env.reset(options={"image_index": test_index, "state": identity_state()})
    assert info["object_index"] == test_index
    np.testing.assert_array_equal(info["state"], identity_state())


def test_pickling_round_trip_keeps_the_view():
    env = make(action_set="full").unwrapped
    env.reset(seed=2)
    clone = pickle.loads(pickle.dumps(env))
    np.testing.assert_array_equal(clone.state, env.state)
    action = np.array([0.3, 0, 0.2, 0.5, 0.1, 0, 0, 0.4, 1.0], dtype=np.float32)
    obs_a, _, _, _, info_a = env.step(action)
    obs_b, _, _, _, info_b = clone.step(action)
    np.testing.assert_array_equal(obs_a, obs_b)
    assert info_a["object_id"] == info_b["object_id"] and info_a["step"] == info_b["step"]


@pytest.mark.parametrize("vector_cls", [gym.vector.SyncVectorEnv, gym.vector.AsyncVectorEnv])
def test_vector_envs(vector_cls):
    kwargs = {"shared_memory": True} if vector_cls is gym.vector.AsyncVectorEnv else {}
    vec = vector_cls([lambda: make(action_set="full", episode_steps=5)] * 2, **kwargs)
    obs, infos = vec.reset(seed=0)
    assert obs.shape == (2, SIZE, SIZE, 3) and infos["state"].shape == (2, STATE_DIM)
    for _ in range(6):
        obs, rewards, terminated, truncated, infos = vec.step(vec.action_space.sample())
    assert obs.dtype == np.uint8 and not terminated.any()
    assert set(infos["category"]) <= set(default_image_set().class_names)
    vec.close()
