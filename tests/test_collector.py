"""Collectors on the real ObjectView env: episode bookkeeping, ground-truth relative actions,
recovery from a killed env worker, and background collector processes."""

from __future__ import annotations

import logging
import os
import signal
import time

import numpy as np
import pytest

from agent.background import BackgroundCollectors
from agent.collector import Collector, make_vector_env
from agent.policies import make_policy
from agent.replay_buffer import ReplayBuffer
from agent.transitions import TransitionBatch
from conf.schema import EnvConfig, PolicyConfig
from envs.actions import wrap_angle
from envs.scene_state import STATE_DIM, relative_action, relative_change

ENV = EnvConfig(image_size=32, episode_steps=5)


class RecordingSink:
    """Keeps every batch; optionally calls ``on_write`` after each write."""

    def __init__(self, on_write=None) -> None:
        self.batches: list[TransitionBatch] = []
        self.on_write = on_write

    def write(self, batch: TransitionBatch) -> None:
        self.batches.append(batch)
        if self.on_write is not None:
            self.on_write(len(self.batches))

    def all(self) -> TransitionBatch:
        return TransitionBatch.concatenate(self.batches)


class Tee:
    def __init__(self, *sinks) -> None:
        self.sinks = sinks

    def write(self, batch: TransitionBatch) -> None:
        for sink in self.sinks:
            sink.write(batch)


def assert_episodes_well_formed(batch: TransitionBatch, episode_steps: int | None = None) -> None:
    for episode in np.unique(batch.episode_id):
        steps = batch.step[batch.episode_id == episode]
        np.testing.assert_array_equal(steps, np.arange(steps.size))  # starts at 0, +1 per view
        assert episode_steps is None or steps.size <= episode_steps + 1
        assert np.unique(batch.object_index[batch.episode_id == episode]).size == 1


def collector_for(num_envs: int, sink, vectorization: str = "sync", seed: int = 0, **kwargs) -> Collector:
    vector_env = make_vector_env(ENV, num_envs, vectorization, seed=seed)
    policy = make_policy(PolicyConfig(), vector_env.single_action_space, num_envs, seed=seed)
    return Collector(vector_env, policy, sink, **kwargs)


def test_reset_views_have_step_zero_and_truncated_episodes_keep_their_final_view() -> None:
    sink = RecordingSink()
    collector = collector_for(3, sink, episode_id_base=100, chunk_steps=4)
    try:
        assert collector.collect(12, progress=False) == 3 + 12 * 3 + 2 * 3
    finally:
        collector.close()
    batch = sink.all()
    assert_episodes_well_formed(batch, ENV.episode_steps)
    assert batch.view.shape[1:] == (32, 32, 3) and batch.view.dtype == np.uint8
    full = [e for e in np.unique(batch.episode_id) if np.sum(batch.episode_id == e) == ENV.episode_steps + 1]
    assert len(full) == 6  # 12 steps = two whole episodes of 5 steps per env, finals included
    assert set(np.unique(batch.episode_id)) == set(range(100, 109))
    np.testing.assert_array_equal(batch.applied_action[batch.step == 0], 0.0)


def test_buffer_pairs_carry_the_env_ground_truth_relative_action() -> None:
    recorded = RecordingSink()
    with ReplayBuffer.create(512, (32, 32, 3), STATE_DIM, 3, min_offset=1, max_offset=3) as buffer:
        collector = collector_for(2, Tee(recorded, buffer.writer(0)))
        try:
            collector.collect(15, progress=False)
        finally:
            collector.close()
        pairs = buffer.sample_pairs(256, np.random.default_rng(0))
    truth = recorded.all()
    key = {tuple(state): n for n, state in enumerate(truth.state)}
    a = np.array([key[tuple(s)] for s in pairs.state_a])
    b = np.array([key[tuple(s)] for s in pairs.state_b])
    np.testing.assert_array_equal(truth.episode_id[a], truth.episode_id[b])
    np.testing.assert_array_equal(truth.step[b] - truth.step[a], pairs.offset)
    assert np.all((pairs.offset >= 1) & (pairs.offset <= 3))
    np.testing.assert_array_equal(pairs.view_a, truth.view[a])
    np.testing.assert_array_equal(pairs.view_b, truth.view[b])
    np.testing.assert_array_equal(pairs.category, truth.category[a])
    np.testing.assert_allclose(pairs.relative_action, relative_action(truth.state[a], truth.state[b], "camera"))
    # One step apart, the state change is exactly what the env reports it applied.
    one = pairs.offset == 1
    change = relative_change(truth.state[a[one]], truth.state[b[one]], "camera")
    applied = truth.applied_action[b[one]].astype(np.float64)
    np.testing.assert_allclose(wrap_angle(change[:, 0] - applied[:, 0]), 0.0, atol=1e-6)
    np.testing.assert_allclose(change[:, 1:], applied[:, 1:], atol=1e-6)


def test_a_killed_async_worker_is_logged_and_collection_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    def kill_once(writes: int) -> None:
        if writes == 2:
            os.kill(collector.vector_env.processes[1].pid, signal.SIGKILL)

    sink = RecordingSink(on_write=kill_once)
    collector = collector_for(2, sink, "async", chunk_steps=2)
    old_env = collector.vector_env
    try:
        with caplog.at_level(logging.WARNING, logger="agent.collector"):
            collector.collect(12, progress=False)
    finally:
        collector.close()
    assert collector.restarts == 1 and collector.vector_env is not old_env
    assert any("env worker 1" in record.getMessage() for record in caplog.records)
    batch = sink.all()
    assert_episodes_well_formed(batch, ENV.episode_steps)
    assert np.unique(batch.episode_id).size == collector.next_episode_id  # ids never reused


def test_background_collectors_fill_the_buffer_and_restart_a_killed_worker() -> None:
    with ReplayBuffer.create(2 * 256, (32, 32, 3), STATE_DIM, 3, num_partitions=2, max_offset=2) as buffer:
        collectors = BackgroundCollectors(ENV, PolicyConfig(), buffer.handle, num_workers=2, num_envs=2, seed=0,
                                          chunk_steps=4, monitor_interval=0.05).start()  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while buffer.views_written < 100 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert collectors.views_written >= 100
            killed = collectors.processes[0].pid
            os.kill(killed, signal.SIGKILL)
            committed = buffer.storage.counters()[0, 1]
            while (collectors.restarts == 0 or buffer.storage.counters()[0, 1] < committed + 40) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert collectors.restarts == 1 and collectors.processes[0].pid != killed
            assert buffer.storage.counters()[0, 1] >= committed + 40  # the restarted worker writes again
            pairs = buffer.sample_pairs(128, np.random.default_rng(0))
            assert np.all((pairs.offset >= 1) & (pairs.offset <= 2))
            collectors.check()
        finally:
            collectors.stop()
        assert all(not p.is_alive() for p in collectors.processes)
        assert collectors.errors == []  # a SIGKILL leaves no traceback; nothing else failed
