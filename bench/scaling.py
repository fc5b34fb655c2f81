"""Collection scaling at 64x64: local collector processes against Ray actors, measured in one run.

Fills a shared replay buffer with 1 and 2 local worker processes
(:class:`agent.background.BackgroundCollectors`) and then with 1 and 2 Ray actors
(:class:`agent.ray_collectors.RayCollectors`), each worker stepping ``--num-envs`` envs
in its own process (``sync`` vectorization, so one worker is one core's worth of
rendering), and prints frames/s (views committed to the buffer per second, after a
warm-up) with the ratio of 2 Ray actors to 1 local worker (target >= 1.6x on a 2-core
machine). Rows are measured in interleaved rounds and the best round of each is kept, and
the load average is printed, because other work on the machine shares the cores. Run
``python bench/scaling.py [--seconds 8 --rounds 2 --num-envs 2]``; needs Ray
(``pip install 'ciper-observer[distributed]'``).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")  # no numpy/torch thread pools competing with renderers

from agent.background import BackgroundCollectors  # noqa: E402
from agent.replay_buffer import ReplayBuffer  # noqa: E402
from conf.schema import EnvConfig, PolicyConfig  # noqa: E402
from envs.scene_state import STATE_DIM  # noqa: E402

IMAGE = 64


def frames_per_second(kind: str, num_workers: int, num_envs: int, seconds: float, chunk_steps: int) -> float:
    """Views/s that ``num_workers`` collectors of ``kind`` commit to a buffer, after warm-up."""
    env_cfg = EnvConfig(image_size=IMAGE, episode_steps=32)
    with ReplayBuffer.create(num_workers * 4096, (IMAGE, IMAGE, 3), STATE_DIM, 3, num_partitions=num_workers) as buffer:
        options: dict[str, Any] = dict(
            env_cfg=env_cfg, policy_cfg=PolicyConfig(), buffer_handle=buffer.handle, num_workers=num_workers,
            num_envs=num_envs, seed=0, vectorization="sync", chunk_steps=chunk_steps,
        )  # fmt: skip
        if kind == "ray":
            from agent.ray_collectors import RayCollectors

            collectors: Any = RayCollectors(**options)
        else:
            collectors = BackgroundCollectors(**options)
        collectors.start()
        try:
            # Warm-up: every worker has built its envs and delivered a few chunks.
            warm = 4 * chunk_steps * num_envs
            deadline = time.monotonic() + 120
            while buffer.storage.counters()[:, 1].min() < warm:
                collectors.check()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{kind} collectors wrote {buffer.storage.counters()[:, 1]} views in 120 s")
                time.sleep(0.05)
            start_views, start = buffer.views_written, time.perf_counter()
            time.sleep(seconds)
            rate = (buffer.views_written - start_views) / (time.perf_counter() - start)
            collectors.check()
        finally:
            collectors.stop()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="measuring time per row and round")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the best of each row is kept")
    parser.add_argument("--num-envs", type=int, default=2, help="envs per worker (stepped in its process)")
    parser.add_argument("--chunk-steps", type=int, default=16, help="vector steps per chunk")
    args = parser.parse_args()
    import ray

    configs = [("local", 1), ("local", 2), ("ray", 1), ("ray", 2)]
    rates: dict[tuple[str, int], list[float]] = {config: [] for config in configs}
    loads: list[float] = []
    # Ray's daemons stay up for the local rows too; the rounds interleave every row so that
    # load from other work on the machine hits them all alike.
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:
        for round_index in range(args.rounds):
            for kind, workers in configs:
                loads.append(os.getloadavg()[0])
                rate = frames_per_second(kind, workers, args.num_envs, args.seconds, args.chunk_steps)
                rates[(kind, workers)].append(rate)
                print(f"  round {round_index + 1}: {kind} x{workers}: {rate:.0f} frames/s", flush=True)
    finally:
        ray.shutdown()

    best = {config: max(values) for config, values in rates.items()}
    base = best[("local", 1)]
    print(f"\nCollection scaling at {IMAGE}x{IMAGE}, {args.num_envs} envs per worker (sync), "
          f"{os.cpu_count()} CPUs, ray {ray.__version__}, best of {args.rounds} rounds of {args.seconds:.0f} s, "
          f"load average {min(loads):.1f}..{max(loads):.1f}")  # fmt: skip
    print(f"{'collector':<10} {'workers':>7} {'frames/s':>9} {'vs 1 local':>11}")
    for kind, workers in configs:
        rate = best[(kind, workers)]
        print(f"{kind:<10} {workers:>7} {rate:>9.0f} {rate / base:>10.2f}x")
    ratio = best[("ray", 2)] / base
    verdict = "meets" if ratio >= 1.6 else "misses"
    print(f"\n2 Ray actors / 1 local worker: {ratio:.2f}x ({verdict} the 1.6x target)")


if __name__ == "__main__":
    main()
