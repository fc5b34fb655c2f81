"""Observer policies: shapes, bounds, seeding, per-env reset and the factory."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces

from agent import policies
from agent.policies import (
    OrbitPolicy,
    RandomPolicy,
    SmoothPolicy,
    make_policy,
    register_policy,
    registered_policies,
)
from conf.schema import PolicyConfig

BOX = spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
OBS = np.zeros((4, 8, 8, 3), dtype=np.uint8)


def rollout(policy, steps: int = 50) -> np.ndarray:
    return np.stack([policy.act(OBS, {}) for _ in range(steps)])


@pytest.mark.parametrize("name", ["random", "orbit", "smooth"])
def test_shapes_bounds_and_seed_determinism(name: str) -> None:
    first = rollout(make_policy(PolicyConfig(name=name), BOX, 4, seed=3))
    again = rollout(make_policy(PolicyConfig(name=name), BOX, 4, seed=3))
    assert first.shape == (50, 4, 3) and first.dtype == np.float32
    assert np.all(first >= -1.0) and np.all(first <= 1.0)
    np.testing.assert_array_equal(first, again)


def test_smooth_actions_are_more_autocorrelated_than_random() -> None:
    def lag_one_correlation(actions: np.ndarray) -> float:
        x = actions[:, 0, 0]
        return float(np.corrcoef(x[:-1], x[1:])[0, 1])

    smooth = rollout(SmoothPolicy(BOX, 4, seed=0), 2000)
    random = rollout(RandomPolicy(BOX, 4, seed=0), 2000)
    assert lag_one_correlation(smooth) > 0.6 > 0.2 > abs(lag_one_correlation(random))


def test_orbit_sweeps_azimuth_and_turns_elevation_back() -> None:
    policy = OrbitPolicy(BOX, 2, seed=0, speed=0.5, half_period=4, action_set="camera")
    actions = rollout(policy, 8)
    np.testing.assert_allclose(actions[:, :, 0], 0.5)
    np.testing.assert_allclose(actions[:4, :, 1], 0.125)
    np.testing.assert_allclose(actions[4:, :, 1], -0.125)
    np.testing.assert_allclose(actions[:, :, 2], 0.0)
    rollout(policy, 4)  # both envs now at phase 12: on the way down
    policy.reset(np.array([True, False]))
    step = policy.act(OBS[:2], {})
    assert step[0, 1] > 0 > step[1, 1]


def test_orbit_rotates_the_object_about_a_fixed_axis_per_env() -> None:
    actions = rollout(OrbitPolicy(BOX, 3, seed=1, speed=0.6, action_set="object"), 5)
    np.testing.assert_allclose(np.linalg.norm(actions, axis=-1), 0.6, rtol=1e-5)
    np.testing.assert_allclose(actions, np.broadcast_to(actions[:1], actions.shape))


def test_smooth_reset_only_touches_the_masked_envs() -> None:
    policy = SmoothPolicy(BOX, 3, seed=0)
    policy.act(OBS[:3], {})
    before = policy.action.copy()
    policy.reset(np.array([False, True, False]))
    np.testing.assert_array_equal(policy.action[[0, 2]], before[[0, 2]])
    assert not np.array_equal(policy.action[1], before[1])


def test_unknown_policy_names_the_valid_ones_and_registration_adds_one(monkeypatch) -> None:
    with pytest.raises(ValueError, match="'nosuch'.*random"):
        make_policy(PolicyConfig(name="nosuch"), BOX, 2)
    # A private copy of the registry: other tests never see the test policy.
    monkeypatch.setattr(policies, "_REGISTRY", dict(policies._REGISTRY))
    register_policy("still_for_test", lambda cfg, space, n, seed, action_set="camera": RandomPolicy(space, n, seed))
    assert "still_for_test" in registered_policies()
    assert make_policy(PolicyConfig(name="still_for_test"), BOX, 2, seed=0).act(OBS[:2], {}).shape == (2, 3)


def test_the_test_policy_did_not_leak_into_the_global_registry() -> None:
    assert "still_for_test" not in registered_policies()
