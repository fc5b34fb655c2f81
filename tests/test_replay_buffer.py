"""Pair sampling and the shared-memory replay buffer: pairing rules, wrap-around, concurrency."""

from __future__ import annotations

import multiprocessing as mp
import os

import numpy as np
import pytest

from agent.pair_sampling import PairIndex, partner_links, sample_pair_indices
from agent.replay_buffer import ReplayBuffer
from agent.transitions import TransitionBatch

VIEW = (16, 16, 3)
VIEW_LARGE = (32, 32, 3)  # bigger copies widen the window in which a torn read could happen


def shm_segments() -> set[str]:
    return {name for name in os.listdir("/dev/shm") if name.startswith("ciper_rb_")}


@pytest.fixture(autouse=True)
def no_leaked_segments():
    before = shm_segments()
    yield
    assert shm_segments() == before


def interleaved_episodes(num_episodes: int, length: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    episode = np.repeat(np.arange(num_episodes) * 1000 + 7, length)
    step = np.tile(np.arange(length), num_episodes)
    order = np.random.default_rng(seed).permutation(episode.size)
    return episode[order], step[order]


def in_step_order(num_episodes: int, length: int, num_envs: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Episodes of ``num_envs`` envs interleaved the way a collector writes them."""
    n = np.arange(num_episodes * length)
    env, tick = n % num_envs, n // num_envs
    return env + num_envs * (tick // length), tick % length


def encoded_batch(episode: np.ndarray, step: np.ndarray, view_shape: tuple[int, ...] = VIEW) -> TransitionBatch:
    """Views whose pixels and states encode (episode, step), to check what comes back."""
    n = episode.size
    value = ((episode * 7 + step) % 251).astype(np.uint8)
    view = np.broadcast_to(value[:, None, None, None], (n, *view_shape)).copy()
    state = np.zeros((n, 13))
    state[:, 0], state[:, 1] = episode, step
    state[:, 6] = 1.0  # identity quaternion keeps relative_action well defined
    return TransitionBatch(
        view=view, state=state, applied_action=np.zeros((n, 3), np.float32),
        object_index=episode % 5, category=episode % 3, episode_id=episode.astype(np.int64),
        step=step.astype(np.int64),
    )  # fmt: skip


def assert_pairs_consistent(pairs, min_offset: int, max_offset: int) -> None:
    episode_a, step_a = pairs.state_a[:, 0], pairs.state_a[:, 1]
    np.testing.assert_array_equal(episode_a, pairs.state_b[:, 0])
    np.testing.assert_array_equal(pairs.offset, pairs.state_b[:, 1] - step_a)
    assert np.all((pairs.offset >= min_offset) & (pairs.offset <= max_offset))
    expected_a = ((episode_a.astype(np.int64) * 7 + step_a.astype(np.int64)) % 251).astype(np.uint8)
    expected_b = ((episode_a.astype(np.int64) * 7 + pairs.state_b[:, 1].astype(np.int64)) % 251).astype(np.uint8)
    assert np.all(pairs.view_a == expected_a[:, None, None, None])
    assert np.all(pairs.view_b == expected_b[:, None, None, None])
    np.testing.assert_array_equal(pairs.object_index, episode_a.astype(np.int64) % 5)


# ---------------------------------------------------------------- pure pair sampling


def test_partner_links_find_the_view_k_steps_earlier_in_shuffled_storage() -> None:
    episode, step = interleaved_episodes(4, 6)
    links = partner_links(episode, step, max_offset=3)
    for n in range(episode.size):
        for k in range(4):
            m = links[n, k]
            if step[n] - k < 0:
                assert m == -1
            else:
                assert episode[m] == episode[n] and step[m] == step[n] - k


def test_pair_index_holds_exactly_the_valid_pairs_and_skips_invalid_views() -> None:
    episode, step = interleaved_episodes(3, 7, seed=1)
    valid = np.ones(episode.size, dtype=bool)
    valid[np.flatnonzero((episode == 1007) & (step == 3))] = False
    index = PairIndex(episode, step, 2, 3, valid)
    got = set(zip(index.earlier.tolist(), index.later.tolist(), strict=True))
    expected = {
        (i, j)
        for i in range(episode.size)
        for j in range(episode.size)
        if valid[i] and valid[j] and episode[i] == episode[j] and 2 <= step[j] - step[i] <= 3
    }
    assert got == expected
    i, j = sample_pair_indices(episode, step, 500, 2, 3, np.random.default_rng(0), valid)
    assert set(zip(i.tolist(), j.tolist(), strict=True)) <= expected


def test_no_pair_in_range_is_an_error_naming_the_range() -> None:
    episode, step = interleaved_episodes(2, 3)
    with pytest.raises(ValueError, match="5..6 steps apart"):
        sample_pair_indices(episode, step, 4, 5, 6, np.random.default_rng(0))


# ---------------------------------------------------------------- the buffer


def test_buffer_pairs_come_from_one_episode_within_the_offsets() -> None:
    with ReplayBuffer.create(400, VIEW, 13, 3, min_offset=1, max_offset=3, action_set="object") as buffer:
        episode, step = in_step_order(20, 10)
        buffer.writer(0).write(encoded_batch(episode, step))
        assert buffer.views_written == buffer.size == 200
        pairs = buffer.sample_pairs(512, np.random.default_rng(0))
        assert_pairs_consistent(pairs, 1, 3)
        assert set(np.unique(pairs.offset)) == {1, 2, 3}
        only_two = buffer.sample_pairs(64, np.random.default_rng(1), min_offset=2, max_offset=2)
        assert np.all(only_two.offset == 2)


def test_buffer_wraps_and_never_pairs_across_an_overwritten_view() -> None:
    capacity = 64
    with ReplayBuffer.create(capacity, VIEW, 13, 3, min_offset=0, max_offset=4) as buffer:
        writer = buffer.writer(0)
        episode, step = in_step_order(num_episodes=23, length=9, num_envs=2)
        episode, step = episode[:200], step[:200]
        for start, stop in [(0, 30), (30, 31), (31, 120), (120, 200)]:
            writer.write(encoded_batch(episode[start:stop], step[start:stop]))
        assert buffer.views_written == 200 and buffer.size == capacity
        newest = set(zip(episode[-capacity:].tolist(), step[-capacity:].tolist(), strict=True))
        pairs = buffer.sample_pairs(2000, np.random.default_rng(0))
        assert_pairs_consistent(pairs, 0, 4)
        for state in (pairs.state_a, pairs.state_b):
            held = set(zip(state[:, 0].astype(int).tolist(), state[:, 1].astype(int).tolist(), strict=True))
            assert held <= newest


def test_an_attached_buffer_sees_the_same_views() -> None:
    with ReplayBuffer.create(128, VIEW, 13, 3) as buffer:
        buffer.writer(0).write(encoded_batch(*in_step_order(4, 5)))
        other = ReplayBuffer.attach(buffer.handle)
        try:
            assert other.views_written == 20
            assert_pairs_consistent(other.sample_pairs(32, np.random.default_rng(0)), 1, 1)
        finally:
            other.close()


def _synthetic_writer(handle, partition: int, stop, chunk: int) -> None:
    buffer = ReplayBuffer.attach(handle)
    writer = buffer.writer(partition)
    episode, step = in_step_order(num_episodes=3000, length=12)
    episode = episode + (partition << 20)
    try:
        for start in range(0, episode.size, chunk):
            if stop.is_set():
                break
            rows = slice(start, start + chunk)
            writer.write(encoded_batch(episode[rows], step[rows], VIEW_LARGE))
    finally:
        buffer.close()


def test_concurrent_writers_never_hand_the_reader_a_torn_view() -> None:
    context = mp.get_context("fork")
    with ReplayBuffer.create(2 * 96, VIEW_LARGE, 13, 3, num_partitions=2, min_offset=1, max_offset=4) as buffer:
        stop = context.Event()
        writers = [context.Process(target=_synthetic_writer, args=(buffer.handle, p, stop, 9)) for p in range(2)]
        try:
            for process in writers:
                process.start()
            while buffer.size < buffer.spec.capacity:
                pass
            rng = np.random.default_rng(0)
            written_before = buffer.views_written
            for _ in range(60):
                assert_pairs_consistent(buffer.sample_pairs(128, rng), 1, 4)
            assert buffer.views_written > written_before + 2 * 96  # the ring wrapped meanwhile
        finally:
            stop.set()
            for process in writers:
                process.join(10)
        assert all(process.exitcode == 0 for process in writers)
