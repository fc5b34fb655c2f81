"""Property-based fuzzing of both environments: any action or constructor argument either
works or fails with a ValueError/TypeError that names it, and never breaks the env.

Every generated input carries its own validity label, computed from the documented contract
(``ObjectViewEnv`` / ``ImageViewEnv`` docstrings), not from the implementation: a valid
action is any array-like of the action shape whose values are real numbers that are finite
as float64 (huge ones are clipped, ints, bools, float16 and lists are fine); anything else
must be refused before it touches the state. After every accepted step the observation lies
in the observation space (uint8 images, a depth map with no NaN) and the latent state is
finite and in its documented ranges. One env serves all examples of an action test, because
a pybullet env costs tens of milliseconds to build.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from envs.catalog import SELECTIONS as OBJECT_SPLITS
from envs.image_sources import SELECTIONS as IMAGE_SPLITS
from envs.image_state import ACTION_SETS as IMAGE_ACTION_SETS
from envs.image_state import validate_state
from envs.image_view import ImageViewEnv
from envs.object_view import OBSERVABLES, ObjectViewEnv
from envs.scene_state import (
    ACTION_SETS as OBJECT_ACTION_SETS,
)
from envs.scene_state import (
    DISTANCE_MAX,
    DISTANCE_MIN,
    ELEVATION_MAX,
    ELEVATION_MIN,
    LIGHT_ELEVATION_MAX,
    LIGHT_ELEVATION_MIN,
    QUAT,
)

FUZZ = settings(max_examples=50, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
SIZE = 16  # smallest allowed image: rendering is not what is under test
FLOAT64_MAX = float(np.finfo(np.float64).max)

# ---------------------------------------------------------------- actions, each labelled valid or not

SPECIAL_FLOATS = [0.0, -0.0, 1.0, -1.0, 0.5, 1e-300, 5e-324, -5e-324, 1e38, 1e308, -1e308, FLOAT64_MAX,
                  np.nan, -np.nan, np.inf, -np.inf]  # fmt: skip
NUMERIC_DTYPES = [np.float16, np.float32, np.float64, np.int8, np.int64, np.uint8, np.bool_]


def _is_real_finite(value) -> bool:
    if isinstance(value, bool | int):
        try:
            float(value)  # ints beyond float64 overflow: refused
        except OverflowError:
            return False
        return True
    return isinstance(value, float) and np.isfinite(value)


def python_numbers():
    return st.one_of(
        st.sampled_from(SPECIAL_FLOATS),
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(min_value=-(10**400), max_value=10**400),
        st.booleans(),
    )


@st.composite
def labelled_actions(draw, dims: int):
    """(action, valid) for an env whose actions have ``dims`` values."""
    kind = draw(st.sampled_from(["array", "list", "wrong_shape", "scalar", "nested", "junk"]))
    if kind == "array":
        dtype = draw(st.sampled_from(NUMERIC_DTYPES))
        elements = None
        with np.errstate(over="ignore"):  # float16(1e38) is inf: such values are left out here
            if np.dtype(dtype).kind == "f" and draw(st.booleans()):
                elements = st.sampled_from([v for v in SPECIAL_FLOATS if np.isnan(v) or dtype(v) == v])
            array = draw(hnp.arrays(dtype, (dims,), elements=elements))
        return array, bool(np.all(np.isfinite(array.astype(np.float64))))
    if kind == "list":
        values = draw(st.lists(python_numbers(), min_size=dims, max_size=dims))
        return values, all(_is_real_finite(v) for v in values)
    if kind == "wrong_shape":
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=dims + 2).filter(lambda s: s != (dims,)))
        return draw(hnp.arrays(draw(st.sampled_from(NUMERIC_DTYPES)), shape)), False
    if kind == "scalar":
        return draw(python_numbers()), False
    if kind == "nested":
        return [draw(st.lists(python_numbers(), min_size=dims, max_size=dims))], False
    junk = draw(st.sampled_from([None, "left", [None] * dims, ["x"] * dims, [1j] * dims, {"a": 1}, [[]] * dims]))
    return junk, False


def step_result_is_sound(env, observation, info) -> None:
    assert env.observation_space.contains(observation), "observation outside its space"
    rgb = observation["rgb"] if isinstance(observation, dict) else observation
    assert rgb.dtype == np.uint8 and rgb.shape == (env.image_size, env.image_size, 3)
    if isinstance(observation, dict) and "depth" in observation:
        assert not np.isnan(observation["depth"]).any()
    assert np.all(np.isfinite(info["state"])) and np.all(np.isfinite(info["applied_action"]))


def object_state_in_range(state: np.ndarray) -> None:
    assert ELEVATION_MIN - 1e-9 <= state[1] <= ELEVATION_MAX + 1e-9
    assert DISTANCE_MIN - 1e-9 <= state[2] <= DISTANCE_MAX + 1e-9
    assert np.isclose(np.linalg.norm(state[QUAT]), 1.0)
    assert LIGHT_ELEVATION_MIN - 1e-9 <= state[8] <= LIGHT_ELEVATION_MAX + 1e-9


def check_action(env, action, valid: bool, state_in_range) -> None:
    before, steps_before = env.state, env._step
    event("valid action" if valid else "invalid action")
    if valid:
        observation, reward, terminated, _, info = env.step(action)
        step_result_is_sound(env, observation, info)
        assert reward == 0.0 and terminated is False
        state_in_range(env.state)
        return
    with pytest.raises((ValueError, TypeError), match="action"):
        env.step(action)
    np.testing.assert_array_equal(env.state, before)  # refused before touching the state
    assert env._step == steps_before


@pytest.fixture(scope="module")
def object_env():
    env = ObjectViewEnv(action_set="full", image_size=SIZE, observe=("rgb", "depth", "mask"), episode_steps=1000)
    env.reset(seed=0)
    yield env
    env.close()


@pytest.fixture(scope="module")
def image_env():
    env = ImageViewEnv(action_set="full", image_size=SIZE, episode_steps=1000)
    env.reset(seed=0)
    yield env
    env.close()


@FUZZ
@given(data=st.data())
def test_object_view_accepts_valid_actions_and_names_invalid_ones(object_env, data):
    for _ in range(data.draw(st.integers(1, 4), label="steps")):
        action, valid = data.draw(labelled_actions(len(object_env.action_dims)), label="action")
        check_action(object_env, action, valid, object_state_in_range)


@FUZZ
@given(data=st.data())
def test_image_view_accepts_valid_actions_and_names_invalid_ones(image_env, data):
    for _ in range(data.draw(st.integers(1, 4), label="steps")):
        action, valid = data.draw(labelled_actions(len(image_env.action_dims)), label="action")
        check_action(image_env, action, valid, validate_state)


def test_extreme_finite_actions_act_as_their_clipped_values(object_env, image_env):
    for env in (object_env, image_env):
        dims = len(env.action_dims)
        pairs = [(np.full(dims, 1e308), np.ones(dims)), ([-(10**300)] * dims, -np.ones(dims)),
                 (np.full(dims, -0.0), np.zeros(dims)),
                 (np.ones(dims, dtype=np.float16), np.ones(dims))]  # fmt: skip
        for extreme, clipped in pairs:
            env.reset(seed=1)
            observed, _, _, _, info = env.step(extreme)
            env.reset(seed=1)
            expected, _, _, _, expected_info = env.step(clipped)
            np.testing.assert_array_equal(info["state"], expected_info["state"])
            np.testing.assert_array_equal(info["applied_action"], expected_info["applied_action"])


# ---------------------------------------------------------------- constructor arguments


def odd_values():
    """Values of the wrong type or out of range for any argument."""
    return st.one_of(
        st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
        st.text(max_size=6), st.lists(st.integers(0, 3), max_size=2), st.just(b"rgb"),
        st.sampled_from([np.int32(64), np.float32(64.0), 64.0, "64", (), {}, 1j]),
    )  # fmt: skip


def size_values():
    return st.one_of(st.sampled_from([15, 16, 17, 64, 1024, 1025, 0, -16, np.int64(32)]), odd_values())


def valid_size(value) -> bool:
    return isinstance(value, int | np.integer) and 16 <= value <= 1024


def valid_steps(value) -> bool:  # bool is an int in Python: True means 1 step
    return isinstance(value, int | np.integer) and value >= 1


def valid_choice(value, choices) -> bool:
    return isinstance(value, str) and value in choices


def valid_observe(value) -> bool:
    return (
        isinstance(value, tuple | list)
        and all(isinstance(o, str) and o in OBSERVABLES for o in value)
        and "rgb" in value
    )


def observe_values():
    return st.one_of(
        st.lists(st.sampled_from([*OBSERVABLES, "normals", ""]), max_size=4).map(tuple),
        st.lists(st.sampled_from(OBSERVABLES), max_size=3),
        st.sampled_from(["rgb", ("rgb",), ("rgb", "depth", "mask")]),
        odd_values(),
    )


def choice_values(choices):
    return st.one_of(st.sampled_from(sorted(choices)), st.sampled_from(sorted(choices)).map(str.upper), odd_values())


def check_constructor(cls, kwargs: dict, validity: dict[str, bool], state_in_range) -> None:
    if all(validity.values()):
        event("valid arguments")
        env = cls(**kwargs)
        try:
            assert env.image_size == kwargs["image_size"] and env.episode_steps == kwargs["episode_steps"]
            if env.image_size <= 64:  # rendering a 1024 view per example is slow and adds nothing
                observation, info = env.reset(seed=0)
                step_result_is_sound(env, observation, info)
                observation, _, _, truncated, info = env.step(env.action_space.sample())
                step_result_is_sound(env, observation, info)
                assert truncated == (env.episode_steps == 1)
                state_in_range(env.state)
        finally:
            env.close()
        return
    event("invalid arguments")
    with pytest.raises((ValueError, TypeError)) as refused:
        cls(**kwargs)
    message = str(refused.value)
    bad = [name for name, ok in validity.items() if not ok]
    assert any(f"{name}=" in message for name in bad), f"{message!r} names none of {bad}"


def draw_arguments(data, strategies: dict[str, tuple]) -> dict:
    """Each argument valid, except a few drawn from anything (which may still be valid)."""
    spoiled = data.draw(st.sets(st.sampled_from(sorted(strategies)), max_size=3), label="spoiled")
    return {
        name: data.draw(anything if name in spoiled else valid, label=name)
        for name, (valid, anything) in strategies.items()
    }


def size_strategies():
    return st.sampled_from([16, 17, 32, np.int64(24)]), size_values()


def choice_strategies(choices):
    return st.sampled_from(sorted(choices)), choice_values(choices)


STEPS = (st.sampled_from([1, 2, 1000]), st.one_of(st.integers(-3, 3), odd_values()))


@settings(FUZZ, max_examples=60)
@given(data=st.data())
def test_object_view_constructor_names_any_bad_argument(data):
    kwargs = draw_arguments(data, {
        "image_size": size_strategies(), "render_size": size_strategies(), "episode_steps": STEPS,
        "split": choice_strategies(OBJECT_SPLITS), "action_set": choice_strategies(OBJECT_ACTION_SETS),
        "observe": (st.sampled_from([("rgb",), ["rgb", "mask"], ("depth", "rgb")]), observe_values()),
    })  # fmt: skip
    validity = {
        "image_size": valid_size(kwargs["image_size"]), "render_size": valid_size(kwargs["render_size"]),
        "episode_steps": valid_steps(kwargs["episode_steps"]), "split": valid_choice(kwargs["split"], OBJECT_SPLITS),
        "action_set": valid_choice(kwargs["action_set"], OBJECT_ACTION_SETS), "observe": valid_observe(kwargs["observe"]),
    }  # fmt: skip
    check_constructor(ObjectViewEnv, kwargs, validity, object_state_in_range)


@settings(FUZZ, max_examples=60)
@given(data=st.data())
def test_image_view_constructor_names_any_bad_argument(data):
    kwargs = draw_arguments(data, {
        "image_size": size_strategies(), "render_size": size_strategies(), "episode_steps": STEPS,
        "split": choice_strategies(IMAGE_SPLITS), "action_set": choice_strategies(IMAGE_ACTION_SETS),
        "render_mode": (st.sampled_from([None, "rgb_array"]),
                        st.one_of(st.sampled_from([None, "rgb_array", "ansi", "RGB_ARRAY"]), odd_values())),
    })  # fmt: skip
    render_mode = kwargs["render_mode"]
    validity = {
        "image_size": valid_size(kwargs["image_size"]), "render_size": valid_size(kwargs["render_size"]),
        "episode_steps": valid_steps(kwargs["episode_steps"]), "split": valid_choice(kwargs["split"], IMAGE_SPLITS),
        "action_set": valid_choice(kwargs["action_set"], IMAGE_ACTION_SETS),
        "render_mode": render_mode is None or valid_choice(render_mode, ("rgb_array",)),
    }  # fmt: skip
    check_constructor(ImageViewEnv, kwargs, validity, validate_state)
