"""Rollout workers as Ray actors that fill the learner's shared replay buffer (``collector=ray``).

:class:`RayCollectors` has the interface of :class:`agent.background.BackgroundCollectors`
(``start``, ``stop``, ``check``, ``restarts``, ``views_written``) but its workers are Ray
actors, so they can run on this machine or anywhere in a Ray cluster. Actor w
(:class:`RolloutWorker`) owns a vector env and a policy and answers each ``collect`` call
with the next ``chunk_steps`` vector steps as a numpy :class:`~agent.transitions.TransitionBatch`,
which travels through Ray's object store. A pump thread in the learner process keeps
``in_flight`` calls queued on every actor (so an actor starts its next chunk while the
previous one is in transit), writes each returned chunk into partition w of the shared
:class:`~agent.replay_buffer.ReplayBuffer`, and applies the buffer's rate limit by holding
back new calls. An actor that dies is restarted by Ray (``max_restarts``); the pump sees
the failed calls (``RayActorError``), logs it, counts it in ``restarts`` and starts the next
generation, whose episode ids and seeds are new, exactly as a restarted local worker's.
Ray is imported only by this module, so the rest of the project runs without it.
"""

from __future__ import annotations

import atexit
import collections
import logging
import math
import os
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from agent.background import GENERATION_SHIFT, CollectorPoolBase, WorkerError, worker_seed
from agent.collector import Collector, make_vector_env
from agent.policies import make_policy
from agent.replay_buffer import PartitionWriter, ReplayBuffer, ReplayBufferHandle
from agent.transitions import TransitionBatch, episode_id_base

try:
    import ray
    from ray.exceptions import RayError, RayTaskError
except ImportError as error:  # Ray is an optional extra
    raise ImportError(
        "collector.kind=ray needs Ray: pip install 'ciper-observer[distributed]' (or 'ray[default]')"
    ) from error

# Ray versions without this class report every lost call as an actor death (RayActorError).
ActorUnavailableError = getattr(ray.exceptions, "ActorUnavailableError", type("_NeverRaised", (Exception,), {}))

logger = logging.getLogger(__name__)

_RETRY_DELAY = 0.2  # seconds between calls to an actor that Ray is restarting


class _ChunkSink:
    """Keeps what a collector writes until the actor hands it back."""

    def __init__(self) -> None:
        self.batches: list[TransitionBatch] = []

    def write(self, batch: TransitionBatch) -> None:
        self.batches.append(batch)

    def take(self) -> TransitionBatch | None:
        batches, self.batches = self.batches, []
        return TransitionBatch.concatenate(batches) if batches else None


class RolloutWorker:
    """The body of one Ray actor: collector ``worker``'s vector env, policy and episode ids.

    The env is built lazily by the first ``collect`` call of a generation, so a restarted
    actor (Ray re-runs ``__init__`` with the same arguments) learns its generation from the
    learner and never reuses the episode ids or the seed of an earlier one.
    """

    def __init__(
        self,
        worker: int,
        env_cfg: Any,
        policy_cfg: Any,
        num_envs: int,
        seed: int,
        vectorization: str,
        chunk_steps: int,
        policy_factory: Callable[..., Any] | None,
    ) -> None:
        self.worker, self.env_cfg, self.policy_cfg = int(worker), env_cfg, policy_cfg
        self.num_envs, self.seed, self.vectorization = int(num_envs), int(seed), vectorization
        self.chunk_steps, self.policy_factory = int(chunk_steps), policy_factory
        self.generation = -1
        self._sink = _ChunkSink()
        self._collector: Collector | None = None

    def collect(self, generation: int) -> TransitionBatch:
        """The next ``chunk_steps`` vector steps; a newer ``generation`` starts afresh first."""
        if self._collector is None or generation > self.generation:
            self._begin(generation)
        assert self._collector is not None
        self._collector.collect(self.chunk_steps, progress=False)
        batch = self._sink.take()
        assert batch is not None  # collect() always flushes at least one step of views
        return batch

    def close(self) -> None:
        """Close the vector env (its worker processes, if async)."""
        if self._collector is not None:
            try:
                self._collector.close()
            except Exception as error:  # a broken env may fail to close; it is replaced anyway
                logger.warning("closing collector %d's vector env raised %r", self.worker, error)
            self._collector = None
        self._sink.take()

    def _begin(self, generation: int) -> None:
        self.close()
        seed = worker_seed(self.seed, self.worker, generation)
        vector_env = make_vector_env(self.env_cfg, self.num_envs, self.vectorization, seed=seed)
        factory = self.policy_factory or make_policy
        policy = factory(self.policy_cfg, vector_env.single_action_space, self.num_envs, seed,
                         action_set=self.env_cfg.action_set)  # fmt: skip
        first_episode = episode_id_base(self.worker) + (generation << GENERATION_SHIFT)
        self._collector = Collector(vector_env, policy, self._sink, first_episode, self.chunk_steps)
        self.generation = generation


class RayCollectors(CollectorPoolBase):
    """``num_workers`` Ray actors writing into the buffer behind ``buffer_handle``.

    Arguments shared with :class:`~agent.background.BackgroundCollectors` mean the same.
    ``ray_address`` connects to a running cluster (``ray://host:10001`` or ``auto``); with
    None a local Ray is started with ``num_cpus`` logical CPUs (default: enough for every
    actor, at least this machine's cores) unless this process already runs Ray. Only a Ray
    started here is shut down by :meth:`stop`. Each actor reserves ``actor_cpus`` CPUs
    (default: 1 with ``vectorization="sync"``, ``num_envs`` with ``"async"``, whose env
    processes do the rendering). ``in_flight`` calls are kept queued per actor.
    """

    kind = "Ray collector actors"

    def __init__(
        self,
        env_cfg: Any,
        policy_cfg: Any,
        buffer_handle: ReplayBufferHandle,
        num_workers: int,
        num_envs: int,
        seed: int = 0,
        vectorization: str = "sync",
        chunk_steps: int = 16,
        policy_factory: Callable[..., Any] | None = None,
        max_restarts: int = 10,
        rate_limit: tuple[float, int] | None = None,
        ray_address: str | None = None,
        num_cpus: int | None = None,
        actor_cpus: float | None = None,
        in_flight: int = 2,
        poll_interval: float = 0.05,
    ) -> None:
        if not 1 <= num_workers <= buffer_handle.spec.num_partitions:
            raise ValueError(
                f"num_workers={num_workers!r}: expected 1..{buffer_handle.spec.num_partitions} "
                "(one buffer partition per actor)"
            )
        if in_flight < 1:
            raise ValueError(f"in_flight={in_flight!r}: expected an int >= 1")
        self.env_cfg, self.policy_cfg, self.handle = env_cfg, policy_cfg, buffer_handle
        self.num_workers, self.num_envs, self.seed = int(num_workers), int(num_envs), int(seed)
        self.vectorization, self.chunk_steps = vectorization, int(chunk_steps)
        self.policy_factory, self.max_restarts = policy_factory, int(max_restarts)
        self.rate_limit, self.ray_address, self.num_cpus = rate_limit, ray_address, num_cpus
        default_cpus = 1.0 if vectorization == "sync" else float(self.num_envs)
        self.actor_cpus = default_cpus if actor_cpus is None else float(actor_cpus)
        self.in_flight, self.poll_interval = int(in_flight), float(poll_interval)
        self.actors: list[Any] = [None] * self.num_workers
        self.generations = [0] * self.num_workers
        self.restarts = 0
        self.errors: list[WorkerError] = []
        self._pending: list[collections.deque] = [collections.deque() for _ in range(self.num_workers)]
        self._delivered = [-1] * self.num_workers  # newest generation with a chunk in the buffer
        self._retry_at = [0.0] * self.num_workers  # monotonic time before which not to call again
        self._writers: list[PartitionWriter] = []
        self._buffer: ReplayBuffer | None = None
        self._started_ray = False
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._pump: threading.Thread | None = None
        self._pump_error: BaseException | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> RayCollectors:
        """Connect to (or start) Ray, create the actors and the pump thread; returns ``self``."""
        if not ray.is_initialized():
            if self.ray_address is None:
                cpus = self.num_cpus or max(os.cpu_count() or 1, math.ceil(self.num_workers * self.actor_cpus))
                ray.init(num_cpus=cpus, include_dashboard=False)
            else:
                ray.init(address=self.ray_address)
            self._started_ray = True
        self._buffer = ReplayBuffer.attach(self.handle)
        # One writer per partition, all in the pump thread: each partition keeps one writer.
        self._writers = [self._buffer.writer(worker) for worker in range(self.num_workers)]
        actor_class = ray.remote(RolloutWorker).options(
            num_cpus=self.actor_cpus, max_restarts=self.max_restarts, max_task_retries=0
        )
        for worker in range(self.num_workers):
            self.actors[worker] = actor_class.remote(
                worker, self.env_cfg, self.policy_cfg, self.num_envs, self.seed, self.vectorization,
                self.chunk_steps, self.policy_factory,
            )  # fmt: skip
        self._pump = threading.Thread(target=self._run_pump, name="ray-collector-pump", daemon=True)
        self._pump.start()
        atexit.register(self.stop)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop writing, let the actors close their envs, kill them; shut down a Ray we started."""
        atexit.unregister(self.stop)
        self._halt.set()
        if self._pump is not None:
            self._pump.join()
            self._pump = None
        live = [actor for actor in self.actors if actor is not None]
        if live and ray.is_initialized():
            # close() queues behind the calls in flight: their chunks are simply dropped.
            closing = [actor.close.remote() for actor in live]
            done, _ = ray.wait(closing, num_returns=len(closing), timeout=timeout)
            if len(done) < len(closing):
                logger.warning("%d Ray collector actors did not close in %.0f s: killing them",
                               len(closing) - len(done), timeout)  # fmt: skip
            for actor in live:
                ray.kill(actor)
        self.actors = [None] * self.num_workers
        self._pending = [collections.deque() for _ in range(self.num_workers)]
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False
        self._writers = []
        if self._buffer is not None:
            self._buffer.close()
            self._buffer = None

    def check(self) -> None:
        """Raise if an actor gave up after ``max_restarts`` restarts, or the pump thread failed."""
        if self._pump_error is not None:
            raise RuntimeError("the Ray collector pump thread failed") from self._pump_error
        super().check()

    # ------------------------------------------------------------------ pump thread

    def _run_pump(self) -> None:
        try:
            while not self._halt.is_set():
                self._submit()
                # Only each actor's oldest call: its chunks must reach the writer in order.
                heads = {queue[0][0]: worker for worker, queue in enumerate(self._pending) if queue}
                if not heads:
                    self._halt.wait(0.005)  # rate-limited (or every actor gave up)
                    continue
                ready, _ = ray.wait(list(heads), num_returns=1, timeout=self.poll_interval)
                for ref in ready:
                    self._receive(heads[ref])
        except BaseException as error:  # surfaced by check() in the learner's thread
            self._pump_error = error
            logger.exception("the Ray collector pump thread failed")

    def _submit(self) -> None:
        assert self._buffer is not None
        if self.rate_limit is not None and self._buffer.writers_ahead(*self.rate_limit):
            return  # far enough ahead of the learner: let the actors idle and leave it the cores
        for worker, actor in enumerate(self.actors):
            generation = self.generations[worker]
            if actor is None or generation > self.max_restarts or time.monotonic() < self._retry_at[worker]:
                continue
            while len(self._pending[worker]) < self.in_flight:
                self._pending[worker].append((actor.collect.remote(generation), generation))

    def _receive(self, worker: int) -> None:
        ref, generation = self._pending[worker].popleft()
        try:
            batch = ray.get(ref)
        except RayTaskError as error:  # the actor lives on; its env or policy raised
            self._lost(worker, generation, error, str(error))
        except ActorUnavailableError as error:
            if self._delivered[worker] == generation:
                self._lost(worker, generation, error, None)  # it ran this generation, then died
            else:
                # Called while Ray restarts it: nothing of this generation reached the buffer,
                # so the restarted actor may begin it afresh. Wait a little before asking again.
                self._retry_at[worker] = time.monotonic() + _RETRY_DELAY
        except RayError as error:  # the actor died (killed, crashed, node lost, out of restarts)
            self._lost(worker, generation, error, None)
        else:
            # A chunk of an older generation is still valid data: its episodes are its own.
            self._writers[worker].write(batch)
            self._delivered[worker] = max(self._delivered[worker], generation)

    def _lost(self, worker: int, generation: int, error: BaseException, trace: str | None) -> None:
        """Start the next generation of ``worker`` after a failed call of ``generation``."""
        with self._lock:
            if generation != self.generations[worker]:
                return  # a later call to the same lost generation: already handled
            if trace is not None:
                self.errors.append(WorkerError(worker, generation, trace))
            self.generations[worker] += 1
            give_up = self.generations[worker] > self.max_restarts
        if give_up:
            logger.error("Ray collector actor %d failed again (%s): giving up on it", worker, type(error).__name__)
            ray.kill(self.actors[worker])
            self.actors[worker] = None
            self._pending[worker].clear()
            return
        self.restarts += 1
        detail = trace if trace is not None else "".join(traceback.format_exception_only(type(error), error)).strip()
        logger.warning(
            "Ray collector actor %d failed (%s); continuing with generation %d (fresh env and episode ids):\n%s",
            worker, type(error).__name__, self.generations[worker], detail,
        )  # fmt: skip
