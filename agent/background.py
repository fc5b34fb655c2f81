"""Collector processes that fill the shared replay buffer in the background while the learner trains.

:class:`BackgroundCollectors` starts ``num_workers`` processes (forkserver by default, so
a parent that already imported torch or CUDA is safe). Worker w attaches to the buffer,
builds its own vector env and policy and runs a :class:`~agent.collector.Collector` that
writes into partition w until asked to stop. A monitor thread in the parent restarts a
worker that died (crash, kill, exception), logging why, while the others go on; a worker's
exception reaches the parent with its traceback through a queue. Restarted workers use
fresh episode ids (a new generation) and seeds, so nothing they write collides with what
the buffer already holds. A worker whose learner was killed (SIGKILL runs no cleanup) stops,
and the survivors destroy the learner's shared-memory segment.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing as mp
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.collector import Collector, ignore_interrupts_in_workers, make_vector_env
from agent.policies import make_policy
from agent.replay_buffer import ReplayBuffer, ReplayBufferHandle
from agent.transitions import episode_id_base

logger = logging.getLogger(__name__)

GENERATION_SHIFT = 32  # a worker restarted g times numbers its episodes from base + (g << 32)


@dataclass(frozen=True)
class WorkerError:
    """An exception raised in worker ``worker`` (its ``generation``-th start), as text."""

    worker: int
    generation: int
    traceback: str


def worker_seed(seed: int, worker: int, generation: int) -> int:
    """Independent seed of one start of one worker."""
    return int(np.random.SeedSequence([int(seed), int(worker), int(generation)]).generate_state(1)[0])


def _collector_main(
    worker: int,
    generation: int,
    env_cfg: Any,
    policy_cfg: Any,
    handle: ReplayBufferHandle,
    num_envs: int,
    seed: int,
    vectorization: str,
    chunk_steps: int,
    policy_factory: Callable[..., Any] | None,
    stop: Any,
    errors: Any,
    rate_limit: tuple[float, int] | None = None,
) -> None:
    ignore_interrupts_in_workers()  # the learner stops its collectors itself
    learner_alive = learner_lifeline()
    buffer = ReplayBuffer.attach(handle)
    collector = None
    try:
        seed = worker_seed(seed, worker, generation)
        vector_env = make_vector_env(env_cfg, num_envs, vectorization, seed=seed)
        factory = policy_factory or make_policy
        policy = factory(policy_cfg, vector_env.single_action_space, num_envs, seed, action_set=env_cfg.action_set)
        first_episode = episode_id_base(worker) + (generation << GENERATION_SHIFT)
        collector = Collector(vector_env, policy, buffer.writer(worker), first_episode, chunk_steps)
        # An orphaned worker (learner killed) stops too instead of rendering forever.
        while not stop.is_set() and learner_alive():
            if rate_limit is not None and buffer.writers_ahead(*rate_limit):
                # Far enough ahead of the learner: leave the cores to it (Reverb-style
                # sample-to-insert rate limiting).
                time.sleep(0.005)
                continue
            collector.collect(chunk_steps, progress=False)
    except BaseException:
        errors.put(WorkerError(worker, generation, traceback.format_exc()))
        raise
    finally:
        if collector is not None:
            collector.close()
        if stop.is_set() or learner_alive():
            buffer.close()
        else:  # the learner was killed: the survivors free its shared memory
            buffer.unlink_orphaned()


def learner_lifeline() -> Callable[[], bool]:
    """Whether the process that started this one still lives. With forkserver (the default
    here) a worker's OS parent is the fork server, which outlives a killed learner as long
    as any worker does, so ``os.getppid()`` never changes; the pipe multiprocessing keeps
    from the starting process does close when it dies."""
    parent = mp.parent_process()
    return (lambda: True) if parent is None else parent.is_alive


class CollectorPoolBase:
    """What every pool of collectors that writes into a shared buffer has in common (local
    processes here, Ray actors in ``agent.ray_collectors``): the context-manager protocol,
    the written-views counter and the give-up check over restart generations."""

    kind = "collector workers"
    _buffer: ReplayBuffer | None
    generations: list[int]
    errors: list[WorkerError]
    max_restarts: int
    _lock: threading.Lock

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def views_written(self) -> int:
        """Views the workers have committed to the buffer so far."""
        return 0 if self._buffer is None else self._buffer.views_written

    def check(self) -> None:
        """Raise if a worker gave up after ``max_restarts`` restarts (with its traceback)."""
        with self._lock:
            down = [w for w, g in enumerate(self.generations) if g > self.max_restarts]
            if down:
                last = [e for e in self.errors if e.worker == down[0]]
                detail = last[-1].traceback if last else "no traceback (killed?)"
                raise RuntimeError(f"{self.kind} {down} failed more than {self.max_restarts} times:\n{detail}")


class BackgroundCollectors(CollectorPoolBase):
    """``num_workers`` collector processes writing into the buffer behind ``buffer_handle``.

    The buffer needs ``num_partitions >= num_workers``. ``policy_factory`` (picklable, the
    signature of :func:`agent.policies.make_policy`) replaces the built-in policies, e.g.
    with a learned one. Workers are daemonic with ``vectorization="sync"``; with ``"async"``
    they own env subprocesses and cannot be, so call :meth:`stop` (it is also registered
    with ``atexit``). A worker that dies more than ``max_restarts`` times stays down and
    :meth:`check` raises its last traceback. ``rate_limit=(replay_ratio, lead_views)``
    pauses workers while they are more than ``lead_views`` views ahead of what the learner's
    consumption (``buffer.record_consumed``) needs at ``replay_ratio`` pairs per view.
    """

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
        context: str = "forkserver",
        max_restarts: int = 10,
        monitor_interval: float = 0.2,
        rate_limit: tuple[float, int] | None = None,
    ) -> None:
        if not 1 <= num_workers <= buffer_handle.spec.num_partitions:
            raise ValueError(
                f"num_workers={num_workers!r}: expected 1..{buffer_handle.spec.num_partitions} "
                "(one buffer partition per worker)"
            )
        self.env_cfg, self.policy_cfg, self.handle = env_cfg, policy_cfg, buffer_handle
        self.num_workers, self.num_envs, self.seed = int(num_workers), int(num_envs), int(seed)
        self.vectorization, self.chunk_steps = vectorization, int(chunk_steps)
        self.policy_factory, self.max_restarts = policy_factory, int(max_restarts)
        self.monitor_interval = float(monitor_interval)
        self.rate_limit = rate_limit
        self.context = mp.get_context(context)
        self.processes: list[Any] = [None] * self.num_workers
        self.generations = [0] * self.num_workers
        self.restarts = 0
        self.errors: list[WorkerError] = []
        self._stop = self.context.Event()
        self._error_queue = self.context.Queue()
        self._lock = threading.Lock()
        self._monitor: threading.Thread | None = None
        self._halt_monitor = threading.Event()
        self._buffer: ReplayBuffer | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> BackgroundCollectors:
        """Start every worker and the monitor thread; returns ``self``."""
        self._buffer = ReplayBuffer.attach(self.handle)
        for worker in range(self.num_workers):
            self._start_worker(worker)
        self._monitor = threading.Thread(target=self._watch, name="collector-monitor", daemon=True)
        self._monitor.start()
        atexit.register(self.stop)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the workers to finish their chunk and exit; terminate those that do not."""
        atexit.unregister(self.stop)
        self._halt_monitor.set()
        if self._monitor is not None:
            self._monitor.join()
            self._monitor = None
        self._stop.set()
        for process in self.processes:
            if process is not None:
                process.join(timeout)
                if process.is_alive():
                    logger.warning("collector worker pid %s did not stop in %.0f s: terminating it", process.pid, timeout)
                    process.terminate()
                    process.join()
        self._drain_errors()
        if self._buffer is not None:
            self._buffer.close()
            self._buffer = None

    # ------------------------------------------------------------------ internals

    def _start_worker(self, worker: int) -> None:
        process = self.context.Process(
            target=_collector_main,
            args=(
                worker, self.generations[worker], self.env_cfg, self.policy_cfg, self.handle, self.num_envs,
                self.seed, self.vectorization, self.chunk_steps, self.policy_factory, self._stop, self._error_queue,
                self.rate_limit,
            ),  # fmt: skip
            name=f"ciper-collector-{worker}",
            daemon=self.vectorization == "sync",
        )
        process.start()
        self.processes[worker] = process

    def alive(self) -> int:
        """Workers running now."""
        return sum(process is not None and process.is_alive() for process in self.processes)

    def _drain_errors(self) -> None:
        while True:
            try:
                error = self._error_queue.get_nowait()
            except Exception:  # queue.Empty, or a queue broken by a killed writer
                return
            with self._lock:
                self.errors.append(error)
            logger.warning("collector worker %d raised:\n%s", error.worker, error.traceback)

    def _watch(self) -> None:
        while not self._halt_monitor.wait(self.monitor_interval):
            self._drain_errors()
            for worker, process in enumerate(self.processes):
                if process is None or process.is_alive() or self._stop.is_set():
                    continue
                with self._lock:
                    self.generations[worker] += 1
                    give_up = self.generations[worker] > self.max_restarts
                if give_up:
                    logger.error("collector worker %d died again (exit code %s): giving up", worker, process.exitcode)
                    self.processes[worker] = None
                    continue
                logger.warning("collector worker %d (pid %s) died with exit code %s: restarting it",
                               worker, process.pid, process.exitcode)  # fmt: skip
                self.restarts += 1
                self._start_worker(worker)
