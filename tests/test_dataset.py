"""Dataset shards survive round trips, crashes and corruption, and pair like the replay buffer.

The transitions are synthetic but real in their semantics: interleaved episodes, as a vector
env makes them, whose states follow ``envs.scene_state.apply_action``, and random views. No
renderer is needed. The rollout app's crash/resume path is tested in test_rollout_app.py.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from agent.dataset import ViewPairDataset
from agent.replay_buffer import ReplayBuffer
from agent.shards import (
    MANIFEST_NAME,
    CorruptShardError,
    ShardWriter,
    file_sha256,
    read_manifest,
)
from agent.transitions import TransitionBatch
from envs.scene_state import STATE_DIM, apply_action, random_state, relative_action

HEADER = {"env": {"action_set": "camera", "image_size": 8}, "seed": 0}
MARKER_NAME = "unpickled.txt"


def interleaved_episodes(num_envs: int, steps: int, seed: int = 0, size: int = 8) -> TransitionBatch:
    """``num_envs`` episodes of ``steps`` transitions, stored step-major (env 0, env 1, ...)."""
    rng = np.random.default_rng(seed)
    states = np.empty((steps, num_envs, STATE_DIM))
    actions = np.zeros((steps, num_envs, 3), dtype=np.float32)
    for e in range(num_envs):
        states[0, e] = random_state(rng)
        for t in range(1, steps):
            states[t, e], applied = apply_action(states[t - 1, e], rng.uniform(-1, 1, 3), "camera")
            actions[t, e] = applied
    count = steps * num_envs
    episode = np.tile(np.arange(num_envs, dtype=np.int64) + 100 * seed, steps)
    return TransitionBatch(
        view=rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8),
        state=states.reshape(count, STATE_DIM),
        applied_action=actions.reshape(count, 3),
        object_index=episode % 7,
        category=episode % 3 - 1,
        episode_id=episode,
        step=np.repeat(np.arange(steps, dtype=np.int64), num_envs),
    )


def write_dataset(root: Path, batch: TransitionBatch, shard_size: int, chunk: int = 5) -> ShardWriter:
    writer = ShardWriter(root, HEADER, shard_size)
    for start in range(0, len(batch), chunk):
        writer.write(TransitionBatch(**{k: v[start : start + chunk] for k, v in batch.as_dict().items()}))
    writer.finish()
    return writer


def pair_keys(pairs) -> set[tuple[bytes, bytes]]:
    return {(a.tobytes(), b.tobytes()) for a, b in zip(pairs.state_a, pairs.state_b, strict=True)}


@pytest.fixture
def batch() -> TransitionBatch:
    return interleaved_episodes(num_envs=3, steps=12)


def test_shards_round_trip_in_order_with_a_partial_last_shard(tmp_path, batch):
    write_dataset(tmp_path, batch, shard_size=10)
    manifest = read_manifest(tmp_path)
    assert [s["transitions"] for s in manifest["shards"]] == [10, 10, 10, 6]
    assert manifest["counts"]["transitions"] == len(batch) and manifest["header"] == HEADER
    assert sorted(p.name for p in tmp_path.iterdir()) == [MANIFEST_NAME] + [f"shard_0000{k}" for k in range(4)]
    for entry in manifest["shards"]:
        for name, recorded in entry["files"].items():
            assert file_sha256(tmp_path / entry["name"] / name) == recorded["sha256"]
    dataset = ViewPairDataset(tmp_path)
    loaded = TransitionBatch.concatenate(list(dataset.iter_views(batch_size=7)))
    for name, value in batch.as_dict().items():
        np.testing.assert_array_equal(getattr(loaded, name), value, err_msg=name)
        assert getattr(loaded, name).dtype == value.dtype


def test_episodes_spanning_shards_pair_as_if_stored_in_one(tmp_path, batch):
    write_dataset(tmp_path / "small", batch, shard_size=4)
    write_dataset(tmp_path / "one", batch, shard_size=len(batch))
    small = ViewPairDataset(tmp_path / "small", min_offset=1, max_offset=3)
    one = ViewPairDataset(tmp_path / "one", min_offset=1, max_offset=3)
    # 3 episodes of 12 steps: (12 - k) pairs per offset k in 1..3, none lost at shard edges.
    assert small.num_pairs == one.num_pairs == 3 * (11 + 10 + 9)
    assert len(small) == len(one) == 3 * 11
    everything = small.pairs(small.pair_index.earlier, small.pair_index.later)
    assert pair_keys(everything) == pair_keys(one.pairs(one.pair_index.earlier, one.pair_index.later))


def test_items_and_batches_have_the_view_pairs_semantics(tmp_path, batch):
    write_dataset(tmp_path, batch, shard_size=8)
    dataset = ViewPairDataset(tmp_path, min_offset=2, max_offset=4, seed=3)
    item = dataset[5]
    assert item["view_a"].shape == (8, 8, 3) and item["view_a"].dtype == np.uint8
    np.testing.assert_allclose(item["relative_action"], relative_action(item["state_a"], item["state_b"], "camera"))
    assert 2 <= item["offset"] <= 4
    again = ViewPairDataset(tmp_path, min_offset=2, max_offset=4, seed=3)[5]
    np.testing.assert_array_equal(item["state_b"], again["state_b"])
    batched = dataset.__getitems__([0, 5])  # the DataLoader's batched path draws the same partner
    np.testing.assert_array_equal(batched[1]["state_b"], item["state_b"])
    pairs = dataset.sample_pairs(64, np.random.default_rng(0))
    assert len(pairs) == 64 and np.all((pairs.offset >= 2) & (pairs.offset <= 4))
    np.testing.assert_allclose(pairs.relative_action, relative_action(pairs.state_a, pairs.state_b, "camera"))
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_dataset_and_replay_buffer_draw_the_same_pairs(tmp_path, batch):
    write_dataset(tmp_path, batch, shard_size=7)
    dataset = ViewPairDataset(tmp_path, min_offset=1, max_offset=2)
    # Room to spare: a full ring hides its oldest slots (guard band) from the sampler.
    with ReplayBuffer.create(
        capacity=4 * len(batch), view_shape=(8, 8, 3), state_dim=STATE_DIM, action_dim=3, min_offset=1, max_offset=2
    ) as buffer:
        buffer.writer(0).write(batch)
        from_buffer = buffer.sample_pairs(2000, np.random.default_rng(0))
    from_dataset = dataset.sample_pairs(2000, np.random.default_rng(0))
    for pairs in (from_buffer, from_dataset):
        assert np.all((pairs.offset >= 1) & (pairs.offset <= 2))
        np.testing.assert_allclose(pairs.relative_action, relative_action(pairs.state_a, pairs.state_b, "camera"))
    # 2000 uniform draws from 63 valid pairs cover all of them, in both stores.
    assert pair_keys(from_buffer) == pair_keys(from_dataset)
    assert len(pair_keys(from_dataset)) == dataset.num_pairs == 3 * (11 + 10)


def test_dataloader_with_two_workers_reads_every_anchor(tmp_path, batch):
    write_dataset(tmp_path, batch, shard_size=10)
    dataset = ViewPairDataset(tmp_path)
    dataset.views(np.arange(3))  # memmaps now open in the parent must not travel to workers
    pickle.dumps(dataset)
    loader = torch.utils.data.DataLoader(dataset, batch_size=8, shuffle=True, num_workers=2)
    seen = 0
    for pairs in loader:
        assert pairs["view_a"].dtype == torch.uint8 and pairs["view_a"].shape[1:] == (8, 8, 3)
        assert torch.all(pairs["offset"] == 1)
        seen += pairs["view_a"].shape[0]
    assert seen == len(dataset) == 3 * 11


def test_stale_tmp_is_removed_and_an_unlisted_complete_shard_is_adopted(tmp_path, batch):
    write_dataset(tmp_path, batch, shard_size=10)
    manifest = read_manifest(tmp_path)
    # A crash after the last rename but before the manifest update, plus a half-written shard.
    listed = {**manifest, "shards": manifest["shards"][:2]}
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(listed))
    (tmp_path / "shard_00004.tmp").mkdir()
    (tmp_path / "shard_00004.tmp" / "view.npy").write_bytes(b"partial")
    (tmp_path / f".{MANIFEST_NAME}.999.tmp").write_text('{"half": ')  # a manifest write killed midway
    shutil.copytree(tmp_path / "shard_00003", tmp_path / "shard_00005")
    (tmp_path / "shard_00005" / "view.npy").write_bytes(b"not the recorded bytes")
    writer = ShardWriter(tmp_path, HEADER, 10)
    assert writer.shard_indices() == [0, 1, 2, 3]
    assert not (tmp_path / "shard_00004.tmp").exists() and not (tmp_path / "shard_00005").exists()
    assert not list(tmp_path.glob("*.tmp"))
    assert ViewPairDataset(tmp_path).num_transitions == len(batch)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_shard_is_named_and_can_be_skipped(tmp_path, batch, damage):
    write_dataset(tmp_path, batch, shard_size=10)
    path = tmp_path / "shard_00001" / "view.npy"
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:
        data[-5] ^= 0xFF
        path.write_bytes(data)
    expected = "bytes, expected" if damage == "truncate" else "sha256 .* does not match"
    with pytest.raises(CorruptShardError, match=f"shard_00001: view.npy .*{expected}"):
        ViewPairDataset(tmp_path)
    with pytest.warns(RuntimeWarning, match="skipping corrupt shard shard_00001"):
        dataset = ViewPairDataset(tmp_path, skip_corrupt=True)
    assert dataset.skipped == ["shard_00001"] and dataset.num_transitions == len(batch) - 10
    assert len(dataset.sample_pairs(8, np.random.default_rng(0))) == 8


class _RunsOnUnpickle:
    """Unpickling this writes a marker file: proof that a loader executed the payload."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "executed"))


@pytest.mark.parametrize("verify", [True, False])
def test_pickled_object_array_is_refused_without_running_it(tmp_path, batch, verify):
    write_dataset(tmp_path, batch, shard_size=10)
    marker = tmp_path / MARKER_NAME
    path = tmp_path / "shard_00000" / "state.npy"
    payload = np.empty(10, dtype=object)
    payload[:] = [_RunsOnUnpickle(marker) for _ in range(10)]
    np.save(path, payload, allow_pickle=True)
    # Record the new file's checksum so only the dtype check stands in the way.
    manifest = read_manifest(tmp_path)
    manifest["shards"][0]["files"]["state.npy"] = {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(CorruptShardError, match="shard_00000: state.npy holds dtype object"):
        ViewPairDataset(tmp_path, verify=verify)
    assert not marker.exists()


def test_writer_refuses_another_header_and_bad_shard_sizes(tmp_path, batch):
    write_dataset(tmp_path, batch, shard_size=10)
    with pytest.raises(ValueError, match="different header"):
        ShardWriter(tmp_path, {**HEADER, "seed": 1}, 10)
    with pytest.raises(ValueError, match="shard_size=0"):
        ShardWriter(tmp_path / "other", HEADER, 0)
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        ViewPairDataset(tmp_path / "missing")
