"""Where the training loop gets its view pairs: the live replay buffer or a saved dataset.

Both sources hand out :class:`agent.view_pairs.ViewPairs` batches through one small
interface, prepared ahead in a background thread so the learner does not wait on sampling
or disk reads. A source draws from one seeded numpy generator whose state, as of the last
batch handed out, goes into the checkpoint: an offline run resumed from a checkpoint sees
exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from typing import Any, Protocol

import numpy as np

from agent.background import BackgroundCollectors
from agent.dataset import ViewPairDataset
from agent.replay_buffer import ReplayBuffer
from agent.view_pairs import ViewPairs
from conf.schema import CiperConfig
from envs.world import World

log = logging.getLogger(__name__)


class PairSource(Protocol):
    """A stream of pair batches for the training loop."""

    def next_pairs(self) -> ViewPairs: ...

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

    def get(self) -> ViewPairs:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="pair-prefetch", daemon=True)
            self._thread.start()
        while True:
            if self._error is not None:
                raise RuntimeError("pair sampling failed in the prefetch thread") from self._error
            try:
                batch, state = self._queue.get(timeout=0.1)
                break
            except queue.Empty:
                continue
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

    def next_pairs(self) -> ViewPairs:
        return self._prefetch.get()

    def state_dict(self) -> dict[str, Any]:
        return self._prefetch.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._prefetch.load_state_dict(state)


class DatasetPairSource(_PrefetchedSource):
    """Pairs from a dataset written by ``ciper-rollout`` (offline training)."""

    def __init__(
        self, root: str, world: World, env_cfg: Any, batch_size: int, min_offset: int, max_offset: int, seed: int
    ) -> None:
        self.dataset = ViewPairDataset(
            root, min_offset=min_offset, max_offset=max_offset, seed=seed,
            relative_action_fn=relative_action_fn(world, env_cfg.action_set),
        )  # fmt: skip
        saved_env = self.dataset.header["env"]
        for key in ("id", "action_set", "image_size"):
            if str(saved_env.get(key)) != str(getattr(env_cfg, key)):
                raise ValueError(
                    f"dataset {root} was made with env.{key}={saved_env.get(key)!r} but the config has "
                    f"env.{key}={getattr(env_cfg, key)!r}: pass the dataset's value"
                )
        self._prefetch = _Prefetcher(lambda rng: self.dataset.sample_pairs(batch_size, rng), seed)

    def stats(self) -> dict[str, float]:
        return {"views_available": float(self.dataset.num_transitions)}

    def close(self) -> None:
        self._prefetch.close()


class OnlinePairSource(_PrefetchedSource):
    """Pairs from a shared replay buffer that background collectors fill while we train.

    The replay ratio caps how many pairs are trained per collected view: when the learner
    runs ahead of the renderers it waits, so no view is reused more than the ratio allows.
    """

    def __init__(self, cfg: CiperConfig, world: World, seed: int, policy_factory=None) -> None:
        env_cfg = cfg.env
        self.batch_size = cfg.train.batch_size
        self.replay_ratio = cfg.train.replay_ratio
        self.warmup_views = cfg.buffer.warmup_views
        # The buffer links views as far apart as any method here samples them.
        max_offset = max(cfg.buffer.max_offset, cfg.method.time_offset)
        self.min_offset, self.max_offset = pair_offsets(cfg)
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
        kind, collectors_class, ray_options = cfg.collector.kind, BackgroundCollectors, {}
        if kind == "ray":
            # Ray is an optional extra: imported only when asked for.
            from agent.ray_collectors import RayCollectors

            collectors_class = RayCollectors
            ray_options = {"ray_address": cfg.collector.ray_address}
        elif kind != "local":
            raise ValueError(f"collector.kind={kind!r}: expected 'local' or 'ray'")
        self.collectors = collectors_class(
            env_cfg=env_cfg,
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
        self.collectors.start()
        self.pairs_served = 0
        self._prefetch = _Prefetcher(self._draw, seed)

    def _draw(self, rng: np.random.Generator) -> ViewPairs:
        # Wait for warm-up, then keep pairs_served / views_written under the replay ratio.
        while True:
            self.collectors.check()
            written = self.buffer.views_written
            needed = (self.pairs_served + self.batch_size) / max(self.replay_ratio, 1e-9)
            if written >= self.warmup_views and written >= needed:
                break
            time.sleep(0.002)
        self.pairs_served += self.batch_size
        self.buffer.record_consumed(self.batch_size)
        return self.buffer.sample_pairs(self.batch_size, rng, self.min_offset, self.max_offset)

    def stats(self) -> dict[str, float]:
        return {
            "views_collected": float(self.buffer.views_written),
            "buffer_size": float(self.buffer.size),
            "collector_restarts": float(self.collectors.restarts),
        }

    def close(self) -> None:
        self._prefetch.close()
        self.collectors.stop()
        self.buffer.unlink()


def pair_offsets(cfg: CiperConfig) -> tuple[int, int]:
    """(min, max) steps between the two views of a pair: up to ``method.time_offset``, and
    at least ``buffer.min_offset`` unless the method pairs a view with itself (offset 0:
    SimCLR's two augmented copies of one view)."""
    high = cfg.method.time_offset
    return min(cfg.buffer.min_offset, high), high


def make_pair_source(cfg: CiperConfig, world: World, seed: int, policy_factory=None) -> PairSource:
    """The pair source ``train.mode`` asks for, of ``world`` (the world of ``cfg.env.id``)."""
    mode = cfg.train.mode
    if mode == "offline":
        if not cfg.train.dataset:
            raise ValueError("train.mode=offline needs train.dataset=PATH (a folder written by ciper-rollout)")
        return DatasetPairSource(
            cfg.train.dataset, world, cfg.env, cfg.train.batch_size,
            *pair_offsets(cfg), seed=seed,
        )  # fmt: skip
    if mode == "online":
        return OnlinePairSource(cfg, world, seed, policy_factory)
    raise ValueError(f"train.mode={mode!r}: expected 'online' or 'offline'")
