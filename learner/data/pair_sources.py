"""Where the training loop gets its view pairs: the live replay buffer or a saved dataset
(``ciper-rollout``'s shards, or a folder in the 3DIEBench layout).

The sources hand out :class:`agent.view_pairs.ViewPairs` batches through one small
interface, prepared ahead in a background thread so the learner does not wait on sampling
or disk reads. A source draws from one seeded numpy generator whose state, as of the last
batch handed out, goes into the checkpoint: an offline run resumed from a checkpoint sees
exactly the batches an uninterrupted run would have seen.

No wait is without a bound and a word: settings the online source could never feed are
refused before it starts (`online_feed_problem`); a wait for views longer than
``WAIT_LOG_S`` logs what it waits for; collectors that write nothing for ``STALL_S`` end
the run with an error; and the consumer can give up a wait at any moment (``next_pairs``
with ``cancelled``: a signal ends the run while it waits). The online source records its
shared-memory segment in the run folder and removes a stale one a killed run left there.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from agent.background import BackgroundCollectors
from agent.dataset import ViewPairDataset
from agent.iebench_dataset import open_split
from agent.replay_buffer import ReplayBuffer, SegmentRecord
from agent.shards import CorruptShardError
from agent.view_pairs import ViewPairs
from conf.app_common import resolve_path
from conf.errors import UserError
from conf.schema import CiperConfig
from conf.validate import ConfigError
from envs import IEBENCH_ID
from envs.world import World

log = logging.getLogger(__name__)

WAIT_LOG_S = 5.0  # a wait for views longer than this says what it waits for (then every WAIT_REPEAT_S)
WAIT_REPEAT_S = 30.0
STALL_S = 300.0  # collectors that add no view for this long end the run

Cancelled = Callable[[], bool]


class CollectorsStalled(RuntimeError):
    """The collectors wrote no view for ``STALL_S`` seconds while the learner waited."""


class PairSource(Protocol):
    """A stream of pair batches for the training loop."""

    def next_pairs(self, cancelled: Cancelled | None = None) -> ViewPairs | None:
        """The next batch; None when ``cancelled()`` turned true while it waited."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def stats(self) -> dict[str, float]: ...

    def close(self) -> None: ...


def relative_action_fn(world: World, action_set: str):
    """The picklable relative-action function of ``world`` under ``action_set``."""
    return functools.partial(world.relative_action, action_set=action_set)


class _Prefetcher:
    """Runs ``draw(rng)`` ahead of the consumer in one thread, in a fixed order.

    Each queued batch carries the generator state right after it was drawn, so
    ``state_dict`` reports the state as of the last batch *handed out*, not the last one
    prepared: that is what an exact resume needs.
    """

    def __init__(self, draw, seed: int, depth: int = 2) -> None:
        self._draw = draw
        self._rng = np.random.default_rng(seed)
        self._consumed_state = self._rng.bit_generator.state
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                batch = self._draw(self._rng)
                item = (batch, self._rng.bit_generator.state)
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as error:  # surfaced in the consumer thread
            self._error = error

    def get(self, cancelled: Cancelled | None = None) -> ViewPairs | None:
        """The next batch, or None as soon as ``cancelled()`` is true while waiting for it."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="pair-prefetch", daemon=True)
            self._thread.start()
        while True:
            if self._error is not None:
                if isinstance(self._error, UserError | MemoryError | CollectorsStalled):
                    raise self._error  # says what to do; "failed in the prefetch thread" would not
                raise RuntimeError("pair sampling failed in the prefetch thread") from self._error
            try:
                batch, state = self._queue.get(timeout=0.1)
                break
            except queue.Empty:
                if cancelled is not None and cancelled():
                    return None
        self._consumed_state = state
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"bit_generator": self._consumed_state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self._thread is not None:
            raise RuntimeError("load_state_dict after sampling started")
        self._rng.bit_generator.state = state["bit_generator"]
        self._consumed_state = state["bit_generator"]

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class _PrefetchedSource:
    """Hands out the batches of ``self._prefetch`` and saves/restores its sampler state."""

    _prefetch: _Prefetcher

    def next_pairs(self, cancelled: Cancelled | None = None) -> ViewPairs | None:
        return self._prefetch.get(cancelled)

    def state_dict(self) -> dict[str, Any]:
        return self._prefetch.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._prefetch.load_state_dict(state)


class DatasetPairSource(_PrefetchedSource):
    """Pairs from a dataset written by ``ciper-rollout`` (offline training)."""

    def __init__(
        self, root: str, world: World, env_cfg: Any, batch_size: int, min_offset: int, max_offset: int, seed: int
    ) -> None:
        try:
            self.dataset = ViewPairDataset(
                root, min_offset=min_offset, max_offset=max_offset, seed=seed,
                relative_action_fn=relative_action_fn(world, env_cfg.action_set),
            )  # fmt: skip
        except CorruptShardError as error:
            raise CorruptShardError(f"train.dataset={root}: {error}; rerun the ciper-rollout command that wrote it "
                                    "to regenerate the shard") from error  # fmt: skip
        saved_env = self.dataset.header["env"]
        for key in ("id", "action_set", "image_size"):
            if str(saved_env.get(key)) != str(getattr(env_cfg, key)):
                raise ConfigError(
                    f"dataset {root} was made with env.{key}={saved_env.get(key)!r} but the config has "
                    f"env.{key}={getattr(env_cfg, key)!r}: pass the dataset's value"
                )
        self._prefetch = _Prefetcher(lambda rng: self.dataset.sample_pairs(batch_size, rng), seed)

    def stats(self) -> dict[str, float]:
        return {"views_available": float(self.dataset.num_transitions)}

    def close(self) -> None:
        self._prefetch.close()


class BenchmarkPairSource(_PrefetchedSource):
    """Pairs from a folder in the 3DIEBench layout (offline): two views of one object of the
    split ``env_cfg.split``, SIE's relative rotation (and latent changes) as the target."""

    def __init__(self, root: str, env_cfg: Any, batch_size: int, min_offset: int, max_offset: int, seed: int) -> None:
        self.split = open_split(str(resolve_path(root)), env_cfg.split, env_cfg.image_size)
        split, action_set = self.split, env_cfg.action_set
        self._prefetch = _Prefetcher(lambda rng: split.sample_pairs(batch_size, rng, min_offset, max_offset, action_set), seed)

    def stats(self) -> dict[str, float]:
        return {"objects_available": float(len(self.split)), "views_available": float(self.split.view_counts.sum())}

    def close(self) -> None:
        self._prefetch.close()


class OnlinePairSource(_PrefetchedSource):
    """Pairs from a shared replay buffer that background collectors fill while we train.

    The replay ratio caps how many pairs are trained per collected view: when the learner
    runs ahead of the renderers it waits, so no view is reused more than the ratio allows.
    ``run_dir`` (optional) gets a record of the buffer's shared-memory segment while it
    lives, so that a run killed without cleaning up has its segment removed by the next run
    in that folder.
    """

    def __init__(self, cfg: CiperConfig, world: World, seed: int, policy_factory=None, run_dir: Path | None = None) -> None:
        problem = online_feed_problem(cfg)
        if problem is not None:
            raise ConfigError(problem)
        env_cfg = cfg.env
        self.batch_size = cfg.train.batch_size
        self.replay_ratio = cfg.train.replay_ratio
        self.warmup_views = cfg.buffer.warmup_views
        self.stall_s = STALL_S
        self._closing = threading.Event()
        # The buffer links views as far apart as any method here samples them.
        max_offset = max(cfg.buffer.max_offset, cfg.method.time_offset)
        self.min_offset, self.max_offset = pair_offsets(cfg)
        self.record = None if run_dir is None else SegmentRecord(run_dir)
        if self.record is not None:
            for name in self.record.remove_stale():
                log.warning("removed the shared-memory segment %s that a killed run left behind (recorded in %s)",
                            name, self.record.folder)  # fmt: skip
        self.buffer = ReplayBuffer.create(
            capacity=cfg.buffer.capacity,
            view_shape=(env_cfg.image_size, env_cfg.image_size, 3),
            state_dim=len(world.STATE_FIELDS),
            action_dim=len(world.action_dims(env_cfg.action_set)),
            num_partitions=cfg.collector.num_workers,
            min_offset=self.min_offset,
            max_offset=max_offset,
            relative_action_fn=relative_action_fn(world, env_cfg.action_set),
        )
        self.collectors = None
        try:
            if self.record is not None:
                self.record.add(self.buffer.handle.name)
            self.collectors = self._collectors(cfg, seed, policy_factory)
            self.collectors.start()
        except BaseException:  # Ctrl-C during start-up included: free the segment
            self.close()
            raise
        self.pairs_served = 0
        self._prefetch = _Prefetcher(self._draw, seed)

    def _collectors(self, cfg: CiperConfig, seed: int, policy_factory) -> BackgroundCollectors:
        kind, collectors_class, ray_options = cfg.collector.kind, BackgroundCollectors, {}
        if kind == "ray":
            # Ray is an optional extra: imported only when asked for.
            from agent.ray_collectors import RayCollectors

            collectors_class = RayCollectors
            ray_options = {"ray_address": cfg.collector.ray_address}
        elif kind != "local":
            raise ValueError(f"collector.kind={kind!r}: expected 'local' or 'ray'")
        return collectors_class(
            env_cfg=cfg.env,
            policy_cfg=cfg.policy,
            buffer_handle=self.buffer.handle,
            num_workers=cfg.collector.num_workers,
            num_envs=cfg.collector.num_envs,
            seed=seed,
            vectorization=cfg.collector.vectorization,
            chunk_steps=cfg.collector.chunk_steps,
            policy_factory=policy_factory,
            rate_limit=None if cfg.collector.lead_views is None else (self.replay_ratio, cfg.collector.lead_views),
            **ray_options,
        )

    def _draw(self, rng: np.random.Generator) -> ViewPairs:
        self._wait_for_views()
        self.pairs_served += self.batch_size
        self.buffer.record_consumed(self.batch_size)
        return self.buffer.sample_pairs(self.batch_size, rng, self.min_offset, self.max_offset)

    def _views_needed(self) -> float:
        """Views written before the next batch may be drawn: the warm-up, then
        pairs_served / views_written under the replay ratio."""
        return max(self.warmup_views, (self.pairs_served + self.batch_size) / max(self.replay_ratio, 1e-9))

    def _wait_for_views(self) -> None:
        """Block until the next batch may be drawn, saying after ``WAIT_LOG_S`` what it waits
        for; raise `CollectorsStalled` when no view arrives for ``stall_s`` seconds."""
        started = told = time.monotonic()
        progress_at, progress = started, self.buffer.views_written
        next_word = WAIT_LOG_S
        while self.buffer.views_written < self._views_needed():
            self.collectors.check()
            if self._closing.is_set():
                raise InterruptedError("the pair source is closing")
            now, written = time.monotonic(), self.buffer.views_written
            if written != progress:
                progress_at, progress = now, written
            elif now - progress_at > self.stall_s:
                raise CollectorsStalled(f"no view collected for {self.stall_s:.0f} s while waiting for "
                                        f"{self._waiting_for()}; see the collector warnings above")  # fmt: skip
            if now - told >= next_word:
                log.warning("waiting %.0f s for %s", now - started, self._waiting_for())
                told, next_word = now, WAIT_REPEAT_S
            time.sleep(0.002)

    def _waiting_for(self) -> str:
        written, needed = self.buffer.views_written, self._views_needed()
        if written < self.warmup_views:
            why = f"buffer.warmup_views={self.warmup_views} before the first step"
        else:
            why = (f"{self.pairs_served + self.batch_size} pairs at train.replay_ratio={self.replay_ratio:g} pairs "
                   "per view")  # fmt: skip
        alive = f"{self.collectors.alive()} collector workers alive, " if hasattr(self.collectors, "alive") else ""
        return f"views: {written} collected, {needed:.0f} needed ({why}); {alive}{self.collectors.restarts} restarts"

    def stats(self) -> dict[str, float]:
        return {
            "views_collected": float(self.buffer.views_written),
            "buffer_size": float(self.buffer.size),
            "collector_restarts": float(self.collectors.restarts),
        }

    def close(self) -> None:
        self._closing.set()
        if hasattr(self, "_prefetch"):
            self._prefetch.close()
        if self.collectors is not None:
            self.collectors.stop()
        name = self.buffer.handle.name
        self.buffer.unlink()
        if self.record is not None:
            self.record.remove(name)


def online_feed_problem(cfg: CiperConfig) -> str | None:
    """Why the online source could never hand out a batch with ``cfg``'s settings (the
    learner and the collectors would wait for each other forever), or None.

    A step draws ``train.batch_size`` pairs once ``batch_size / replay_ratio`` more views
    were collected, but collectors pause once ``collector.lead_views`` views ahead of what
    the pairs drawn so far need: so a step must need no more views than that lead.
    """
    batch, ratio, lead = cfg.train.batch_size, cfg.train.replay_ratio, cfg.collector.lead_views
    per_step = batch / ratio
    if lead is not None and per_step > lead:
        return (f"train.batch_size={batch} at train.replay_ratio={ratio:g} pairs per view needs {per_step:.0f} new "
                f"views per step ({batch} / {ratio:g}), but collectors pause once collector.lead_views={lead} views "
                f"ahead, so the learner would wait forever: raise collector.lead_views to >= {per_step:.0f} (or null), "
                f"train.replay_ratio to >= {batch / lead:g}, or lower train.batch_size to <= {int(lead * ratio)}")  # fmt: skip
    capacity, workers = cfg.buffer.capacity, cfg.collector.num_workers
    if capacity < 2 * workers:
        return (f"buffer.capacity={capacity}: expected at least 2 views per collector worker "
                f"(collector.num_workers={workers}), i.e. >= {2 * workers}")  # fmt: skip
    if batch > capacity:
        return (f"train.batch_size={batch}: more pairs than the replay buffer holds views (buffer.capacity={capacity}), "
                f"so every batch would repeat pairs (NT-Xent would count a pair's copy as its negative); raise "
                f"buffer.capacity to >= {batch} or lower train.batch_size")  # fmt: skip
    return None


def pair_offsets(cfg: CiperConfig) -> tuple[int, int]:
    """(min, max) steps between the two views of a pair: up to ``method.time_offset``, and
    at least ``buffer.min_offset`` unless the method pairs a view with itself (offset 0:
    SimCLR's two augmented copies of one view)."""
    high = cfg.method.time_offset
    return min(cfg.buffer.min_offset, high), high


def make_pair_source(
    cfg: CiperConfig, world: World, seed: int, policy_factory=None, run_dir: Path | None = None
) -> PairSource:
    """The pair source ``train.mode`` asks for, of ``world`` (the world of ``cfg.env.id``);
    an online source records its shared memory in ``run_dir``."""
    mode = cfg.train.mode
    if cfg.env.id == IEBENCH_ID:  # recorded views: read from a folder, no env to run
        if mode != "offline" or not cfg.train.dataset:
            raise ConfigError(f"env.id={IEBENCH_ID}: its views are recorded, no env renders them; "
                              "train with train.mode=offline train.dataset=<3DIEBench folder>")  # fmt: skip
        return BenchmarkPairSource(cfg.train.dataset, cfg.env, cfg.train.batch_size, *pair_offsets(cfg), seed=seed)
    if mode == "offline":
        if not cfg.train.dataset:
            raise ValueError("train.mode=offline needs train.dataset=PATH (a folder written by ciper-rollout)")
        return DatasetPairSource(
            cfg.train.dataset, world, cfg.env, cfg.train.batch_size,
            *pair_offsets(cfg), seed=seed,
        )  # fmt: skip
    if mode == "online":
        return OnlinePairSource(cfg, world, seed, policy_factory, run_dir)
    raise ValueError(f"train.mode={mode!r}: expected 'online' or 'offline'")
