"""The live replay buffer: a shared-memory ring of views that collector processes fill while
the learner samples episode-aware view pairs from it.

Three pieces with small interfaces, as in torchrl: :class:`RingStorage` holds the arrays
(uint8 views, absolute states, actions, labels, episode ids, steps and pairing links) in
one ``multiprocessing.shared_memory`` segment; :class:`PartitionWriter` is the
:class:`~agent.transitions.TransitionSink` of one collector process and owns one
partition of the ring; :class:`EpisodePairSampler` returns slot indices of valid pairs.
:class:`ReplayBuffer` ties them together for the learner (``sample_pairs``, counters) and
hands picklable :class:`ReplayBufferHandle`\\ s to child processes, which ``attach``.
:class:`SegmentRecord` notes a live buffer's segment in its run folder, so that the next run
there destroys one a killed run left behind.

Concurrency guarantee (several writer processes, one or more readers, no locks): each
partition has exactly one writer, which numbers its views by an absolute position and
publishes two counters, ``reserved`` before it writes a chunk and ``committed`` after.
A reader draws only positions below ``committed`` and at least ``reserved - capacity +
guard`` (written in full, not being overwritten, with a small guard band of slots that
are next in line), gathers them, then re-reads ``reserved``: any pair whose earlier view
may have been overwritten during the copy is redrawn. A returned pair is therefore never
torn and its two views, states and labels belong together. This seqlock-style argument
relies on the CPU keeping stores in order (total store order, as on x86-64); the
positions themselves are 64-bit counters and never wrap.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np

from agent.pair_sampling import (
    RelativeActionFn,
    build_view_pairs,
    check_offsets,
    object_view_relative_action,
)
from agent.transitions import TransitionBatch
from agent.view_pairs import ViewPairs

_RESERVED, _COMMITTED = 0, 1
_ALIGN = 64


@dataclass(frozen=True)
class BufferSpec:
    """Shape of a replay buffer; everything needed to lay out (or re-attach) its memory.

    ``capacity`` is split evenly over ``num_partitions`` (one per writer process); the
    views are ``view_shape`` uint8; ``max_offset`` bounds the pair offsets the buffer can
    serve (it sizes the pairing links), ``min_offset`` is the default lower bound.
    """

    capacity: int
    view_shape: tuple[int, ...]
    state_dim: int
    action_dim: int
    num_partitions: int = 1
    min_offset: int = 1
    max_offset: int = 1

    def __post_init__(self) -> None:
        check_offsets(self.min_offset, self.max_offset)
        if self.num_partitions < 1:
            raise ValueError(f"num_partitions={self.num_partitions!r}: expected an int >= 1")
        if self.capacity < 2 * self.num_partitions:
            raise ValueError(
                f"capacity={self.capacity!r}: expected at least 2 views per partition "
                f"({self.num_partitions} partitions)"
            )

    @property
    def partition_capacity(self) -> int:
        return self.capacity // self.num_partitions

    def fields(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        c = self.partition_capacity * self.num_partitions
        return {
            "view": ((c, *self.view_shape), np.dtype(np.uint8)),
            "state": ((c, self.state_dim), np.dtype(np.float64)),
            "applied_action": ((c, self.action_dim), np.dtype(np.float32)),
            "object_index": ((c,), np.dtype(np.int64)),
            "category": ((c,), np.dtype(np.int64)),
            "episode_id": ((c,), np.dtype(np.int64)),
            "step": ((c,), np.dtype(np.int64)),
            # back[slot, k - 1]: position of the view k steps earlier in the slot's episode.
            "back": ((c, self.max_offset), np.dtype(np.int64)),
            "counters": ((self.num_partitions, 2), np.dtype(np.int64)),
            # written by the one reader: pairs it has consumed (rate limiting of writers)
            "consumed": ((1,), np.dtype(np.int64)),
        }

    def layout(self) -> tuple[dict[str, int], int]:
        """Byte offset of every field in the segment, and the segment size."""
        offsets, size = {}, 0
        for name, (shape, dtype) in self.fields().items():
            offsets[name] = size
            size += -(-int(np.prod(shape)) * dtype.itemsize // _ALIGN) * _ALIGN
        return offsets, max(size, _ALIGN)


@dataclass(frozen=True)
class ReplayBufferHandle:
    """What a child process needs to attach to a buffer (picklable)."""

    name: str
    spec: BufferSpec
    relative_action_fn: RelativeActionFn


class RingStorage:
    """The shared-memory arrays of a buffer; ``get(field, slots)`` gathers rows."""

    def __init__(self, spec: BufferSpec, name: str | None = None) -> None:
        self.spec = spec
        offsets, size = spec.layout()
        if name is None:
            name = f"ciper_rb_{os.getpid()}_{secrets.token_hex(4)}"
            self.memory = shared_memory.SharedMemory(name=name, create=True, size=size)
        else:
            self.memory = shared_memory.SharedMemory(name=name)
        self.arrays = {
            field: np.ndarray(shape, dtype=dtype, buffer=self.memory.buf, offset=offsets[field])
            for field, (shape, dtype) in spec.fields().items()
        }

    @property
    def name(self) -> str:
        return self.memory.name

    def get(self, field: str, slots: np.ndarray) -> np.ndarray:
        return np.take(self.arrays[field], slots, axis=0)

    def counters(self) -> np.ndarray:
        """A snapshot (P, 2) of the (reserved, committed) positions of every partition."""
        return self.arrays["counters"].copy()

    def close(self) -> None:
        # The numpy views export the segment's buffer; drop them before closing it.
        self.arrays = {}
        self.memory.close()


class PartitionWriter:
    """Writes transitions into one partition of the ring (the sink of one collector).

    Exactly one writer may own a partition at a time. A new writer (say, of a restarted
    collector) continues at the partition's committed position, overwriting any chunk a
    crashed writer left half written. Episodes must not span partitions, and each episode's
    views must arrive in step order (any interleaving of episodes is fine), as a collector
    writes them: a view is linked to its episode's previous view only if it is the next step.
    """

    def __init__(self, storage: RingStorage, partition: int) -> None:
        spec = storage.spec
        if not 0 <= partition < spec.num_partitions:
            raise ValueError(f"partition={partition!r}: expected 0..{spec.num_partitions - 1}")
        self.storage, self.partition = storage, int(partition)
        self.capacity = spec.partition_capacity
        self.base = self.partition * self.capacity
        self.position = int(storage.arrays["counters"][partition, _COMMITTED])
        # episode id -> (last step, positions of its latest views, newest first)
        self._episodes: dict[int, tuple[int, list[int]]] = {}

    def write(self, batch: TransitionBatch) -> None:
        spec = self.storage.spec
        if batch.view.shape[1:] != tuple(spec.view_shape):
            raise ValueError(f"view shape {batch.view.shape[1:]}: expected {tuple(spec.view_shape)}")
        if batch.state.shape[1:] != (spec.state_dim,) or batch.applied_action.shape[1:] != (spec.action_dim,):
            raise ValueError(
                f"state {batch.state.shape[1:]}, applied_action {batch.applied_action.shape[1:]}: "
                f"expected ({spec.state_dim},), ({spec.action_dim},)"
            )
        for start in range(0, len(batch), self.capacity):
            rows = slice(start, start + self.capacity)
            self._write_chunk({name: value[rows] for name, value in batch.as_dict().items()})

    def _write_chunk(self, chunk: dict[str, np.ndarray]) -> None:
        n = chunk["view"].shape[0]
        positions = self.position + np.arange(n, dtype=np.int64)
        back = self._links(chunk["episode_id"], chunk["step"], positions)
        arrays = self.storage.arrays
        slots = self.base + positions % self.capacity
        arrays["counters"][self.partition, _RESERVED] = self.position + n
        for name, value in chunk.items():
            arrays[name][slots] = value
        arrays["back"][slots] = back
        arrays["counters"][self.partition, _COMMITTED] = self.position + n
        self.position += n

    def _links(self, episode_id: np.ndarray, step: np.ndarray, positions: np.ndarray) -> np.ndarray:
        depth = self.storage.spec.max_offset
        back = np.full((positions.size, depth), -1, dtype=np.int64)
        for t, (episode, current, position) in enumerate(zip(episode_id.tolist(), step.tolist(), positions.tolist(), strict=True)):
            last_step, recent = self._episodes.get(episode, (None, []))
            if last_step is None or current != last_step + 1:
                recent = []
            back[t, : len(recent)] = recent
            self._episodes[episode] = (current, [position, *recent][:depth])
        # An episode silent for a whole partition can no longer be linked to: forget it.
        oldest = int(positions[-1]) - self.capacity if positions.size else 0
        for episode in [e for e, (_, recent) in self._episodes.items() if not recent or recent[0] < oldest]:
            del self._episodes[episode]
        return back


class EpisodePairSampler:
    """Draws slot pairs (i earlier, j later) of one episode, ``min..max_offset`` steps apart.

    Proposes a later view j uniformly among the sampleable views and an offset k uniformly
    in the range, follows j's link k steps back and keeps the proposal when that view is
    still held; every valid pair is thus equally likely. Views whose episode has no partner
    in range are simply never accepted.
    """

    def __init__(self, spec: BufferSpec, max_rounds: int = 100) -> None:
        self.spec = spec
        self.capacity = spec.partition_capacity
        self.guard = self.capacity // 32
        self.max_rounds = max_rounds

    def live_range(self, counters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """First and end (exclusive) sampleable position of every partition."""
        committed = counters[:, _COMMITTED]
        lower = np.clip(counters[:, _RESERVED] - self.capacity + self.guard, 0, committed)
        return lower, committed

    def draw(
        self, storage: RingStorage, size: int, min_offset: int, max_offset: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Slots (i, j), partition and the older of the two positions, for ``size`` pairs.

        The older position is normally i's; it is j's when j was overwritten while its link
        was read, which :meth:`torn` then catches."""
        lower, end = self.live_range(storage.counters())
        live = end - lower
        total = int(live.sum())
        if total == 0:
            raise ValueError("the replay buffer holds no views yet: wait for the collectors")
        starts = np.cumsum(live) - live
        back = storage.arrays["back"]
        found: list[tuple[np.ndarray, ...]] = []
        missing = size
        for _ in range(self.max_rounds):
            proposals = 2 * missing + 16
            u = rng.integers(total, size=proposals)
            partition = np.searchsorted(starts + live, u, side="right")
            later = lower[partition] + u - starts[partition]
            later_slot = partition * self.capacity + later % self.capacity
            k = rng.integers(min_offset, max_offset + 1, size=proposals)
            earlier = later.copy()
            linked = k > 0
            earlier[linked] = back[later_slot[linked], k[linked] - 1]
            ok = np.flatnonzero(earlier >= lower[partition])[:missing]
            earlier_slot = partition[ok] * self.capacity + earlier[ok] % self.capacity
            oldest = np.minimum(earlier[ok], later[ok])
            found.append((earlier_slot, later_slot[ok], partition[ok], oldest))
            missing -= ok.size
            if missing == 0:
                return tuple(np.concatenate(parts) for parts in zip(*found, strict=True))
        raise RuntimeError(
            f"found {size - missing} of {size} pairs {min_offset}..{max_offset} steps apart among "
            f"{total} views after {self.max_rounds} rounds: are the episodes too short?"
        )

    def torn(self, storage: RingStorage, partition: np.ndarray, oldest: np.ndarray) -> np.ndarray:
        """Rows with a view that may have been overwritten since it was drawn."""
        reserved = storage.arrays["counters"][:, _RESERVED].copy()
        return np.flatnonzero(oldest < reserved[partition] - self.capacity)


class ReplayBuffer:
    """A shared-memory replay buffer of views that serves episode-aware view pairs.

    Create it in the learner (parent) process with :meth:`create`; give each collector
    process ``buffer.handle`` and its partition number; the child calls :meth:`attach`
    and writes through :meth:`writer`. The creator calls :meth:`unlink` at the end (also
    on errors: use it as a context manager); attached processes call :meth:`close`.
    """

    def __init__(self, storage: RingStorage, relative_action_fn: RelativeActionFn, owner: bool) -> None:
        self.storage = storage
        self.spec = storage.spec
        self.relative_action_fn = relative_action_fn
        self.sampler = EpisodePairSampler(storage.spec)
        self._owner = owner

    @classmethod
    def create(
        cls,
        capacity: int,
        view_shape: tuple[int, ...],
        state_dim: int,
        action_dim: int,
        num_partitions: int = 1,
        min_offset: int = 1,
        max_offset: int = 1,
        relative_action_fn: RelativeActionFn | None = None,
        action_set: str = "camera",
    ) -> ReplayBuffer:
        """A new buffer; ``relative_action_fn`` defaults to ObjectView's for ``action_set``
        and must be picklable (a module-level function or ``functools.partial``)."""
        spec = BufferSpec(
            int(capacity), tuple(int(s) for s in view_shape), int(state_dim), int(action_dim),
            int(num_partitions), int(min_offset), int(max_offset),
        )  # fmt: skip
        fn = relative_action_fn or object_view_relative_action(action_set)
        return cls(RingStorage(spec), fn, owner=True)

    @classmethod
    def attach(cls, handle: ReplayBufferHandle) -> ReplayBuffer:
        """Open the buffer ``handle`` names (in a child process, or a second reader)."""
        return cls(RingStorage(handle.spec, handle.name), handle.relative_action_fn, owner=False)

    @property
    def handle(self) -> ReplayBufferHandle:
        return ReplayBufferHandle(self.storage.name, self.spec, self.relative_action_fn)

    def writer(self, partition: int) -> PartitionWriter:
        """The sink of the single process that writes ``partition``."""
        return PartitionWriter(self.storage, partition)

    @property
    def views_written(self) -> int:
        """Views committed since the buffer was created, over all partitions."""
        return int(self.storage.arrays["counters"][:, _COMMITTED].sum())

    @property
    def pairs_consumed(self) -> int:
        """Pairs the learner reported with :meth:`record_consumed`."""
        return int(self.storage.arrays["consumed"][0])

    def record_consumed(self, pairs: int) -> None:
        """Count pairs handed to the learner (single reader), for writers' rate limiting."""
        self.storage.arrays["consumed"][0] += int(pairs)

    def writers_ahead(self, replay_ratio: float, lead_views: int) -> bool:
        """Whether writers have more than ``lead_views`` views beyond what ``replay_ratio``
        pairs per view needs for the pairs consumed so far (then they should pause)."""
        return self.views_written > self.pairs_consumed / replay_ratio + lead_views

    @property
    def size(self) -> int:
        """Views held now (at most the capacity)."""
        committed = self.storage.arrays["counters"][:, _COMMITTED]
        return int(np.minimum(committed, self.spec.partition_capacity).sum())

    def sample_pairs(
        self,
        batch_size: int,
        rng: np.random.Generator,
        min_offset: int | None = None,
        max_offset: int | None = None,
    ) -> ViewPairs:
        """``batch_size`` pairs of views of one episode, ``min..max_offset`` steps apart
        (defaults: the buffer's), with their relative actions, object ids and categories."""
        low = self.spec.min_offset if min_offset is None else int(min_offset)
        high = self.spec.max_offset if max_offset is None else int(max_offset)
        check_offsets(low, high)
        if high > self.spec.max_offset:
            raise ValueError(f"max_offset={high}: this buffer links views at most {self.spec.max_offset} steps apart")
        earlier, later, partition, position = self.sampler.draw(self.storage, batch_size, low, high, rng)
        pairs = build_view_pairs(self.storage.get, earlier, later, self.relative_action_fn)
        torn = self.sampler.torn(self.storage, partition, position)
        while torn.size:
            earlier, later, partition[torn], position[torn] = self.sampler.draw(self.storage, torn.size, low, high, rng)
            redrawn = build_view_pairs(self.storage.get, earlier, later, self.relative_action_fn)
            for name, value in redrawn.as_dict().items():
                getattr(pairs, name)[torn] = value
            torn = torn[self.sampler.torn(self.storage, partition[torn], position[torn])]
        return pairs

    def close(self) -> None:
        """Detach this process from the buffer (the segment lives on)."""
        if self.storage.arrays:
            self.storage.close()

    def unlink(self) -> None:
        """Close and destroy the segment (creator only, once the children are done)."""
        self.close()
        if self._owner:
            self.storage.memory.unlink()
            self._owner = False

    def unlink_orphaned(self) -> None:
        """Destroy the segment from an attached process whose creator died without doing it
        (the surviving collectors clean up after a killed learner); then detach."""
        if self.storage.arrays:
            try:
                self.storage.memory.unlink()
            except FileNotFoundError:  # another survivor was first
                pass
        self.close()

    def __enter__(self) -> ReplayBuffer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.unlink() if self._owner else self.close()


def unlink_segment(name: str) -> bool:
    """Destroy the shared-memory segment ``name`` if it exists; returns whether it did."""
    try:
        segment = shared_memory.SharedMemory(name=name)
    except FileNotFoundError:
        return False
    segment.close()
    segment.unlink()
    return True


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class SegmentRecord:
    """The segments of live buffers, recorded in a folder (a run folder) as
    ``<folder>/.shared_memory/<segment name>`` holding the creator's PID, so that the next run
    in that folder removes a segment whose creator was killed before it could (SIGKILL runs
    no cleanup; a segment lives until unlinked or the machine restarts)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.folder = Path(run_dir) / ".shared_memory"

    def add(self, name: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / name).write_text(f"{os.getpid()}\n")

    def remove(self, name: str) -> None:
        (self.folder / name).unlink(missing_ok=True)
        if self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()

    def remove_stale(self) -> list[str]:
        """Destroy the recorded segments whose creator is gone; returns the names of those
        that still existed."""
        removed = []
        for path in sorted(self.folder.glob("*")) if self.folder.is_dir() else []:
            try:
                pid = int(path.read_text().strip())
            except ValueError:
                pid = None
            if pid is not None and pid != os.getpid() and _process_alive(pid):
                continue  # a live run's (another torchrun rank's)
            if unlink_segment(path.name):
                removed.append(path.name)
            self.remove(path.name)
        return removed
