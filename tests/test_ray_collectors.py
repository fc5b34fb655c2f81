"""Ray collectors (``collector=ray``): actors fill the shared buffer with valid transitions, a
killed actor is restarted while collection goes on, and an online training run completes.

All tests share one local 2-CPU Ray (starting Ray takes seconds on a small machine); the
collectors must leave a Ray they did not start running. Skipped when Ray is not installed.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from agent.ray_collectors import RayCollectors  # noqa: E402
from agent.replay_buffer import ReplayBuffer  # noqa: E402
from agent.transitions import episode_id_base  # noqa: E402
from conf.schema import EnvConfig, PolicyConfig  # noqa: E402
from envs.actions import wrap_angle  # noqa: E402
from envs.scene_state import STATE_DIM, relative_action, relative_change  # noqa: E402

ENV = EnvConfig(image_size=32, episode_steps=5)
GENERATION_BITS = 32  # agent.background.GENERATION_SHIFT


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def committed(buffer: ReplayBuffer, partition: int) -> int:
    return int(buffer.storage.counters()[partition, 1])


def wait_until(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


def held_views(buffer: ReplayBuffer, partition: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions and slots of the views partition ``partition`` holds now, oldest first."""
    capacity = buffer.spec.partition_capacity
    end = committed(buffer, partition)
    positions = np.arange(max(0, end - capacity), end)
    return positions, partition * capacity + positions % capacity


def assert_partition_holds_valid_transitions(buffer: ReplayBuffer, partition: int) -> None:
    """Every linked step of the partition is the env's applied action between the two states."""
    arrays = buffer.storage.arrays
    positions, slots = held_views(buffer, partition)
    episode = arrays["episode_id"][slots]
    assert np.all(episode >> 40 == partition)  # each actor numbers episodes in its own range
    previous = arrays["back"][slots, 0]
    linked = previous >= positions[0]
    assert linked.sum() > positions.size // 2
    earlier = partition * buffer.spec.partition_capacity + previous[linked] % buffer.spec.partition_capacity
    later = slots[linked]
    np.testing.assert_array_equal(arrays["episode_id"][earlier], arrays["episode_id"][later])
    np.testing.assert_array_equal(arrays["step"][earlier] + 1, arrays["step"][later])
    change = relative_change(arrays["state"][earlier], arrays["state"][later], "camera")
    applied = arrays["applied_action"][later].astype(np.float64)
    np.testing.assert_allclose(wrap_angle(change[:, 0] - applied[:, 0]), 0.0, atol=1e-6)
    np.testing.assert_allclose(change[:, 1:], applied[:, 1:], atol=1e-6)


def test_two_actors_fill_the_buffer_with_valid_transitions(local_ray) -> None:
    with ReplayBuffer.create(2 * 1024, (32, 32, 3), STATE_DIM, 3, num_partitions=2, max_offset=2) as buffer:
        collectors = RayCollectors(ENV, PolicyConfig(), buffer.handle, num_workers=2, num_envs=2,
                                   chunk_steps=4).start()  # fmt: skip
        try:
            wait_until(lambda: min(committed(buffer, 0), committed(buffer, 1)) >= 60)
            collectors.check()
        finally:
            collectors.stop()
        assert ray.is_initialized()  # a Ray the collectors did not start stays up
        assert min(committed(buffer, 0), committed(buffer, 1)) >= 60
        for partition in (0, 1):
            assert_partition_holds_valid_transitions(buffer, partition)
        pairs = buffer.sample_pairs(256, np.random.default_rng(0))
        assert np.all((pairs.offset >= 1) & (pairs.offset <= 2))
        np.testing.assert_allclose(pairs.relative_action, relative_action(pairs.state_a, pairs.state_b, "camera"),
                                   rtol=1e-5, atol=1e-6)  # fmt: skip
        assert pairs.view_a.dtype == np.uint8 and pairs.view_a.shape == (256, 32, 32, 3)
        assert collectors.restarts == 0 and collectors.errors == []


def test_a_killed_actor_is_restarted_while_collection_goes_on(local_ray, caplog) -> None:
    with ReplayBuffer.create(2 * 1024, (32, 32, 3), STATE_DIM, 3, num_partitions=2, max_offset=2) as buffer:
        collectors = RayCollectors(ENV, PolicyConfig(), buffer.handle, num_workers=2, num_envs=2,
                                   chunk_steps=4).start()  # fmt: skip
        try:
            wait_until(lambda: min(committed(buffer, 0), committed(buffer, 1)) >= 40)
            before = [committed(buffer, 0), committed(buffer, 1)]
            with caplog.at_level(logging.WARNING, logger="agent.ray_collectors"):
                ray.kill(collectors.actors[0], no_restart=False)
                wait_until(lambda: collectors.restarts >= 1 and committed(buffer, 0) >= before[0] + 40)
            assert collectors.restarts >= 1
            assert committed(buffer, 0) >= before[0] + 40  # the restarted actor writes again
            assert committed(buffer, 1) > before[1]  # and the other one never stopped
            collectors.check()
        finally:
            collectors.stop()
        assert any("Ray collector actor 0 failed" in r.getMessage() for r in caplog.records)
        _, slots = held_views(buffer, 0)
        generation = (buffer.storage.arrays["episode_id"][slots] - episode_id_base(0)) >> GENERATION_BITS
        assert generation.max() >= 1  # the new incarnation numbers its episodes afresh
        assert_partition_holds_valid_transitions(buffer, 0)


def test_an_actor_that_keeps_failing_is_given_up_with_its_traceback(local_ray) -> None:
    with ReplayBuffer.create(256, (32, 32, 3), STATE_DIM, 3) as buffer:
        collectors = RayCollectors(ENV, PolicyConfig(name="no-such-policy"), buffer.handle, num_workers=1,
                                   num_envs=1, max_restarts=2).start()  # fmt: skip
        try:
            wait_until(lambda: collectors.generations[0] > 2, timeout=30)
            with pytest.raises(RuntimeError, match=r"(?s)failed more than 2 times.*no-such-policy"):
                collectors.check()
        finally:
            collectors.stop()
        assert collectors.restarts == 2 and len(collectors.errors) == 3


@pytest.mark.slow
def test_a_tiny_online_run_trains_from_ray_actors(local_ray, make_config, tmp_path) -> None:
    from learner.training.loop import train

    cfg = make_config(
        "collector=ray", "collector.num_workers=2", "collector.num_envs=2", "collector.vectorization=sync",
        "env.image_size=32", "env.episode_steps=16", "model.width=8", "model.proj_hidden=64",
        "model.proj_dim=32", "model.pred_hidden=64", "train.mode=online", "train.steps=5",
        "train.batch_size=16", "train.evaluate=false", "buffer.warmup_views=64", "buffer.capacity=2000",
    )  # fmt: skip
    metrics = train(cfg, tmp_path / "online")
    assert metrics["completed"] and metrics["steps"] == 5
    assert metrics["data"]["views_collected"] >= 64
    assert metrics["data"]["collector_restarts"] == 0
    assert (tmp_path / "online" / "checkpoints" / "last.pt").exists()
