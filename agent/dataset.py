"""Reading a saved view dataset: verified shards, one global pair index, memory-mapped views.

`ViewPairDataset` opens the shards listed in a dataset's ``manifest.json`` (see
``agent.shards``). It checks every file's size and sha256 and every ``.npy`` header against the
manifest, and it never unpickles. It keeps the small per-transition fields (state, labels,
episode, step) in memory, concatenated over all shards, so that `agent.pair_sampling.PairIndex`
pairs views of one episode even when the episode spans shards. Views stay in memory-mapped
files that each process opens on first use. Pairs have the same meaning as the live replay
buffer's (`agent.pair_sampling.build_view_pairs`). The class is map-style, so
``torch.utils.data.DataLoader`` can use it with workers; `sample_pairs` draws whole batches,
and `views` / `iter_views` give access for inspection and evaluation.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from agent.pair_sampling import (
    PairIndex,
    RelativeActionFn,
    build_view_pairs,
    check_offsets,
    object_view_relative_action,
)
from agent.shards import (
    FIELD_NAMES,
    CorruptShardError,
    open_shard_field,
    read_manifest,
    verify_shard,
)
from agent.transitions import TransitionBatch
from agent.view_pairs import ViewPairs

# Everything but the views is small (about 1% of a 64x64 view) and held in memory.
_META_FIELDS = tuple(name for name in FIELD_NAMES if name != "view")


class ViewPairDataset:
    """Pairs (view_a, view_b) of one episode, ``min_offset..max_offset`` steps apart.

    Item ``n`` is anchor ``n`` (a view with at least one valid later partner) paired with
    one of its partners drawn from ``(seed, epoch, n)``. Call `set_epoch` to draw other
    partners. Items are dicts with the keys of `ViewPairs`, without the batch axis.

    Args:
        root: the dataset folder (holding ``manifest.json``).
        min_offset, max_offset: the step distance from view a to view b.
        verify: check every file's sha256 against the manifest (sizes and ``.npy`` headers
            are always checked).
        seed: seeds the partner drawn for each anchor.
        skip_corrupt: warn about and leave out corrupt shards instead of raising.
        relative_action_fn: ``fn(state_a, state_b)``. The default is the ObjectView relative
            action for the dataset's ``action_set``.
    """

    def __init__(
        self,
        root: str | Path,
        min_offset: int = 1,
        max_offset: int = 1,
        verify: bool = True,
        seed: int = 0,
        skip_corrupt: bool = False,
        relative_action_fn: RelativeActionFn | None = None,
    ) -> None:
        check_offsets(min_offset, max_offset)
        self.root = Path(root)
        manifest = read_manifest(self.root)
        if manifest is None:
            raise FileNotFoundError(f"{self.root}: no manifest.json; not a dataset written by ciper-rollout")
        self.manifest = manifest
        self.header: dict[str, Any] = manifest["header"]
        self.min_offset, self.max_offset = int(min_offset), int(max_offset)
        self.seed = int(seed)
        self.epoch = 0
        self.relative_action_fn = relative_action_fn or object_view_relative_action(
            self.header["env"]["action_set"]
        )

        self.shards: list[dict[str, Any]] = []
        self.skipped: list[str] = []
        columns: dict[str, list[np.ndarray]] = {name: [] for name in _META_FIELDS}
        for entry in manifest["shards"]:
            try:
                loaded = self._open_shard(entry, verify)
            except CorruptShardError as error:
                if not skip_corrupt:
                    raise
                warnings.warn(f"skipping corrupt shard {entry['name']}: {error}", RuntimeWarning, stacklevel=2)
                self.skipped.append(entry["name"])
                continue
            self.shards.append(entry)
            for name in _META_FIELDS:
                columns[name].append(loaded[name])
        if not self.shards:
            raise ValueError(f"{self.root}: no readable shard (skipped: {self.skipped})")
        self._meta = {name: np.concatenate(parts) for name, parts in columns.items()}
        lengths = [entry["transitions"] for entry in self.shards]
        self._shard_starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self._view_maps: list[np.ndarray] | None = None

        self.pair_index = PairIndex(self._meta["episode_id"], self._meta["step"], min_offset, max_offset)
        # Group the pairs by anchor (earlier view) so item n picks among anchor n's partners.
        order = np.argsort(self.pair_index.earlier, kind="stable")
        self._partners = self.pair_index.later[order]
        self._anchors, self._partner_start, self._partner_count = np.unique(
            self.pair_index.earlier[order], return_index=True, return_counts=True
        )

    # ------------------------------------------------------------------ loading

    def _open_shard(self, entry: dict[str, Any], verify: bool) -> dict[str, np.ndarray]:
        shard_dir = self.root / entry["name"]
        verify_shard(shard_dir, entry["files"], checksums=verify)
        specs = self.manifest["fields"]
        # Opening the view header here refuses a bad view file now rather than in a worker.
        open_shard_field(shard_dir, "view", specs["view"], entry["transitions"])
        return {
            name: np.array(open_shard_field(shard_dir, name, specs[name], entry["transitions"]))
            for name in _META_FIELDS
        }

    def _views_of_shards(self) -> list[np.ndarray]:
        # Opened on first use in each process: memmaps must not travel to DataLoader workers.
        if self._view_maps is None:
            specs = self.manifest["fields"]["view"]
            self._view_maps = [
                open_shard_field(self.root / e["name"], "view", specs, e["transitions"]) for e in self.shards
            ]
        return self._view_maps

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_view_maps"] = None
        return state

    # ------------------------------------------------------------------ access

    @property
    def num_transitions(self) -> int:
        return int(self._shard_starts[-1])

    @property
    def num_pairs(self) -> int:
        return self.pair_index.num_pairs

    def set_epoch(self, epoch: int) -> None:
        """Draw other partners for the anchors (like ``DistributedSampler.set_epoch``)."""
        self.epoch = int(epoch)

    def views(self, indices: np.ndarray) -> np.ndarray:
        """Views (len(indices), H, W, 3) uint8 at global transition ``indices``."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= self.num_transitions):
            raise IndexError(f"view indices span {indices.min()}..{indices.max()}: expected 0..{self.num_transitions - 1}")
        maps = self._views_of_shards()
        shard = np.searchsorted(self._shard_starts, indices, side="right") - 1
        local = indices - self._shard_starts[shard]
        out = np.empty((indices.size, *maps[0].shape[1:]), dtype=np.uint8)
        for s in np.unique(shard):
            chosen = shard == s
            out[chosen] = maps[s][local[chosen]]
        return out

    def metadata(self, name: str, indices: np.ndarray) -> np.ndarray:
        """Field ``name`` (any `TransitionBatch` field but ``view``) at global ``indices``."""
        return self._meta[name][np.asarray(indices, dtype=np.int64)]

    def iter_views(self, batch_size: int = 1024) -> Iterator[TransitionBatch]:
        """All transitions in storage order, ``batch_size`` at a time."""
        for start in range(0, self.num_transitions, int(batch_size)):
            indices = np.arange(start, min(start + int(batch_size), self.num_transitions))
            yield TransitionBatch(view=self.views(indices), **{n: self._meta[n][indices] for n in _META_FIELDS})

    def _get(self, name: str, indices: np.ndarray) -> np.ndarray:
        return self.views(indices) if name == "view" else self.metadata(name, indices)

    def pairs(self, earlier: np.ndarray, later: np.ndarray) -> ViewPairs:
        """The `ViewPairs` batch of given global index pairs (earlier, later)."""
        return build_view_pairs(self._get, np.asarray(earlier), np.asarray(later), self.relative_action_fn)

    def sample_pairs(self, batch_size: int, rng: np.random.Generator) -> ViewPairs:
        """``batch_size`` pairs drawn with replacement, every valid pair equally likely (as
        the replay buffer draws them)."""
        earlier, later = self.pair_index.sample(batch_size, rng)
        return self.pairs(earlier, later)

    def __len__(self) -> int:
        return int(self._anchors.size)

    def __getitem__(self, n: int) -> dict[str, np.ndarray]:
        return self.__getitems__([n])[0]

    def __getitems__(self, items: list[int]) -> list[dict[str, np.ndarray]]:
        """Items ``items`` gathered in one batch (``DataLoader`` calls this when present)."""
        n = np.asarray(items, dtype=np.int64).reshape(-1)
        if n.size and (n.min() < -len(self) or n.max() >= len(self)):
            raise IndexError(f"items {n.min()}..{n.max()}: the dataset has {len(self)} anchors")
        n %= max(len(self), 1)
        # One generator per item keeps an item's partner independent of how items are batched.
        draws = [np.random.default_rng([self.seed, self.epoch, int(k)]).integers(self._partner_count[k]) for k in n]
        partners = self._partners[self._partner_start[n] + np.asarray(draws, dtype=np.int64)]
        batch = self.pairs(self._anchors[n], partners).as_dict()
        return [{name: value[r] for name, value in batch.items()} for r in range(n.size)]
