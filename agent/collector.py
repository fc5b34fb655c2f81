"""Collectors: step a Gymnasium vector env with an observer policy and write transitions.

A :class:`Collector` runs the vector env in ``SAME_STEP`` autoreset mode, so every vector
step yields a view for every env: when an episode truncates, the same step delivers its
final view (``info["final_obs"]``, recorded as the episode's last step) and the reset view
of the next episode (recorded with step 0 under a fresh episode id). Transitions are
batched for ``chunk_steps`` vector steps and then written to a
:class:`~agent.transitions.TransitionSink` (the replay buffer or a dataset writer). When
the vector env fails (a worker process crashed), the collector logs which worker died,
rebuilds the vector env and carries on with new episodes; already written views stay valid.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv, VectorEnv
from tqdm import tqdm

from agent.policies import ObserverPolicy
from agent.transitions import TransitionBatch, TransitionSink
from envs.view_arguments import env_kwargs

logger = logging.getLogger(__name__)

VECTORIZATIONS = ("async", "sync")


def ignore_interrupts_in_workers() -> None:
    """In a worker process, ignore SIGINT: Ctrl-C reaches the whole process group, and the
    parent, not each worker, decides how to stop (it closes its workers)."""
    if multiprocessing.parent_process() is not None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _make_env(env_id: str, kwargs: dict[str, Any]) -> gym.Env:
    ignore_interrupts_in_workers()

    return gym.make(env_id, **kwargs)


def make_vector_env(
    env_cfg: Any, num_envs: int, vectorization: str = "async", seed: int | None = None
) -> VectorEnv:
    """A ``SAME_STEP``-autoreset vector env of ``num_envs`` copies of ``env_cfg``'s env.

    ``async`` runs one process per env (forkserver, observations in shared memory; one
    renderer per process as pybullet wants); ``sync`` steps them in this process. With a
    ``seed`` the envs are reset once with it, which seeds env i with ``seed + i`` so the
    collector's later resets are reproducible.
    """
    if vectorization not in VECTORIZATIONS:
        raise ValueError(f"vectorization={vectorization!r}: expected one of {VECTORIZATIONS}")
    if int(num_envs) < 1:
        raise ValueError(f"num_envs={num_envs!r}: expected an int >= 1")
    env_fns = [functools.partial(_make_env, env_cfg.id, env_kwargs(env_cfg))] * int(num_envs)
    if vectorization == "async":
        # The collector copies every view it keeps, so the vector env need not copy again.
        vector_env: VectorEnv = AsyncVectorEnv(
            env_fns, shared_memory=True, copy=False, context="forkserver", autoreset_mode=AutoresetMode.SAME_STEP
        )
    else:
        vector_env = SyncVectorEnv(env_fns, copy=False, autoreset_mode=AutoresetMode.SAME_STEP)
    if seed is not None:
        vector_env.reset(seed=int(seed))
    return vector_env


def rebuild_vector_env(vector_env: VectorEnv) -> VectorEnv:
    """A fresh vector env of the same kind and env factories as ``vector_env`` (unseeded)."""
    if isinstance(vector_env, AsyncVectorEnv):
        return AsyncVectorEnv(
            vector_env.env_fns, shared_memory=vector_env.shared_memory, copy=vector_env.copy,
            context=vector_env.context, daemon=vector_env.daemon, autoreset_mode=vector_env.autoreset_mode,
        )  # fmt: skip
    if isinstance(vector_env, SyncVectorEnv):
        return SyncVectorEnv(vector_env.env_fns, copy=vector_env.copy, autoreset_mode=vector_env.autoreset_mode)
    raise TypeError(f"vector_env={vector_env!r}: pass rebuild= to rebuild this kind of vector env")


def _rgb(observation: Any) -> np.ndarray:
    return observation["rgb"] if isinstance(observation, dict) else observation


class Collector:
    """Steps ``vector_env`` with ``policy`` and writes every view into ``sink``.

    Episode ids are ``episode_id_base``, ``episode_id_base + 1``, ... in the order episodes
    start. ``rebuild`` makes a replacement vector env after a failure (default: the same
    kind with the same env factories); after ``max_failures`` consecutive failures with no
    successful step in between, the error is raised.
    """

    def __init__(
        self,
        vector_env: VectorEnv,
        policy: ObserverPolicy,
        sink: TransitionSink,
        episode_id_base: int = 0,
        chunk_steps: int = 16,
        rebuild: Callable[[VectorEnv], VectorEnv] = rebuild_vector_env,
        max_failures: int = 3,
    ) -> None:
        mode = vector_env.metadata.get("autoreset_mode")
        if mode != AutoresetMode.SAME_STEP:
            raise ValueError(
                f"autoreset_mode={mode!r}: the collector needs AutoresetMode.SAME_STEP (see make_vector_env)"
            )
        self.vector_env, self.policy, self.sink = vector_env, policy, sink
        self.num_envs = vector_env.num_envs
        self.chunk_steps, self.rebuild, self.max_failures = int(chunk_steps), rebuild, int(max_failures)
        self.next_episode_id = int(episode_id_base)
        self.views_written = 0
        self.restarts = 0
        self._pending: list[TransitionBatch] = []
        self._episode = np.zeros(self.num_envs, dtype=np.int64)
        self._step = np.zeros(self.num_envs, dtype=np.int64)
        self._observation: np.ndarray | None = None
        self._infos: dict[str, Any] = {}

    # ------------------------------------------------------------------ public

    def collect(self, num_steps: int, progress: bool = True) -> int:
        """Run ``num_steps`` vector steps (resetting first if needed); returns views written."""
        written_before = self.views_written
        show = progress and sys.stderr.isatty()
        failures = 0
        # tqdm allocates a multiprocessing lock even when disabled; skip it entirely when hidden.
        bar = tqdm(total=int(num_steps), unit="step", desc="collect") if show else None
        done_steps = 0
        try:
            while done_steps < num_steps:
                try:
                    if self._observation is None:
                        self._reset()
                    self._step_once()
                except Exception as error:  # any env failure leads to a rebuild
                    failures += 1
                    if failures > self.max_failures:
                        raise
                    self._recover(error)
                    continue
                failures = 0
                done_steps += 1
                if bar is not None:
                    bar.update(1)
                if len(self._pending) >= self.chunk_steps:
                    self.flush()
        finally:
            if bar is not None:
                bar.close()
        self.flush()
        return self.views_written - written_before

    def flush(self) -> None:
        """Write the transitions gathered so far to the sink."""
        if self._pending:
            batch = TransitionBatch.concatenate(self._pending)
            self._pending = []
            self.sink.write(batch)
            self.views_written += len(batch)

    def close(self) -> None:
        """Flush and close the vector env."""
        self.flush()
        self.vector_env.close()

    # ------------------------------------------------------------------ stepping

    def _new_episodes(self, mask: np.ndarray) -> None:
        rows = np.flatnonzero(mask)
        self._episode[rows] = self.next_episode_id + np.arange(rows.size)
        self.next_episode_id += rows.size
        self._step[rows] = 0
        self.policy.reset(mask)

    def _reset(self) -> None:
        observation, infos = self.vector_env.reset()
        self._new_episodes(np.ones(self.num_envs, dtype=bool))
        self._observation, self._infos = _rgb(observation), infos
        self._record(self._observation, infos, np.arange(self.num_envs))

    def _step_once(self) -> None:
        action = self.policy.act(self._observation, self._infos)
        observation, _, terminated, truncated, infos = self.vector_env.step(action)
        observation = _rgb(observation)
        ended = np.asarray(terminated, dtype=bool) | np.asarray(truncated, dtype=bool)
        self._step += 1
        running = np.flatnonzero(~ended)
        self._record(observation[running], infos, running)
        if ended.any():
            rows = np.flatnonzero(ended)
            final_views = np.stack([_rgb(infos["final_obs"][e]) for e in rows])
            self._record(final_views, infos["final_info"], rows)
            self._new_episodes(ended)
            self._record(observation[rows], infos, rows)
        self._observation, self._infos = observation, infos

    def _record(self, views: np.ndarray, infos: dict[str, Any], env_rows: np.ndarray) -> None:
        """Queue ``views`` (one per row of ``env_rows``) with the per-env ``infos`` of those envs."""
        if env_rows.size == 0:
            return
        self._pending.append(
            TransitionBatch(
                view=np.array(views, dtype=np.uint8),
                state=np.asarray(infos["state"], dtype=np.float64)[env_rows],
                applied_action=np.asarray(infos["applied_action"], dtype=np.float32)[env_rows],
                object_index=np.asarray(infos["object_index"], dtype=np.int64)[env_rows],
                category=np.asarray(infos["category_index"], dtype=np.int64)[env_rows],
                episode_id=self._episode[env_rows].copy(),
                step=self._step[env_rows].copy(),
            )
        )

    def _recover(self, error: BaseException) -> None:
        processes = list(getattr(self.vector_env, "processes", []))
        # The broken pipe can surface before the killed worker is reaped: give it a moment.
        deadline = time.monotonic() + 1.0
        while processes and all(p.is_alive() for p in processes) and time.monotonic() < deadline:
            time.sleep(0.01)
        dead = [
            f"env worker {index} (pid {p.pid}, exit code {p.exitcode})"
            for index, p in enumerate(processes)
            if not p.is_alive()
        ]
        logger.warning(
            "vector env failed (%s: %s); dead: %s; rebuilding it and starting new episodes",
            type(error).__name__, error, ", ".join(dead) or "none",
        )  # fmt: skip
        _discard(self.vector_env)
        self.vector_env = self.rebuild(self.vector_env)
        self.restarts += 1
        self._observation = None


def _discard(vector_env: VectorEnv) -> None:
    """Shut a failed vector env down without its ``close``, which expects live workers."""
    if not isinstance(vector_env, AsyncVectorEnv):
        try:
            vector_env.close()
        except Exception as error:  # a broken env may fail to close; it is dropped anyway
            logger.debug("closing the failed vector env raised %r", error)
        return
    for process in vector_env.processes:
        if process.is_alive():
            process.terminate()
    for process in vector_env.processes:
        process.join(5.0)
    for pipe in vector_env.parent_pipes:
        if pipe is not None:
            pipe.close()
    vector_env.closed = True  # so its __del__ does not try to close it again
