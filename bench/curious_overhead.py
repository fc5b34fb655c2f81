"""What ``policy=curious`` costs per learner step and per collector step, with numpy's BLAS
on all threads against one.

Run: ``python bench/curious_overhead.py [--busy 2] [--calls 200]``. It times the learner
side's ``ErrorModelFitter.update`` (64 pairs, 6 action columns, 128 features: one per
training step), ``solve`` (one per publication) and the collector side's
``ErrorModel.predict`` on 8 candidates x 2 envs (one per env step), once as the project runs
them (``agent.curious`` limits its BLAS to one thread) and once with the BLAS thread pool
left at its default. ``--busy N`` starts N processes that spin on the CPU while it measures,
as the learner and the collectors do during online training: that is where a multi-threaded
BLAS on these small matrices loses (its threads wait for cores the others hold). Prints a
markdown table, then one JSON line with the ratios.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import ThreadpoolController

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import agent.curious as curious  # noqa: E402

ACTIONS, PAIRS, CANDIDATES = 6, 64, 16


def spin(stop) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def time_calls(function, calls: int) -> float:
    """Milliseconds per call, best of three rounds."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(calls):
            function()
        best = min(best, (time.perf_counter() - started) / calls * 1e3)
    return best


def measure(calls: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    fitter = curious.ErrorModelFitter(ACTIONS, seed=0)
    x, error = rng.uniform(-1.0, 1.0, (PAIRS, ACTIONS)), rng.random(PAIRS)
    fitter.update(x, error)
    model = fitter.solve(1, 1)
    candidates = rng.uniform(-1.0, 1.0, (CANDIDATES, ACTIONS))
    return {
        "update_ms": time_calls(lambda: fitter.update(x, error), calls),
        "solve_ms": time_calls(lambda: fitter.solve(1, 1), max(1, calls // 10)),
        "predict_ms": time_calls(lambda: model.predict(candidates), calls),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--busy", type=int, default=2, help="CPU-spinning processes while measuring")
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    stop = multiprocessing.Event()
    spinners = [multiprocessing.Process(target=spin, args=(stop,), daemon=True) for _ in range(args.busy)]
    for process in spinners:
        process.start()
    try:
        one = measure(args.calls)
        controller = ThreadpoolController()
        default_threads = max((p["num_threads"] for p in controller.info() if p["user_api"] == "blas"), default=1)
        original = curious._one_blas_thread
        curious._one_blas_thread = lambda: controller.limit(limits=default_threads, user_api="blas")
        try:
            default = measure(args.calls)
        finally:
            curious._one_blas_thread = original
    finally:
        stop.set()
        for process in spinners:
            process.join()
    print(f"| call | one BLAS thread (ms) | {default_threads} BLAS threads (ms) | ratio |")
    print("|---|---:|---:|---:|")
    for key in one:
        print(f"| {key[:-3]} | {one[key]:.3f} | {default[key]:.3f} | {default[key] / one[key]:.1f} |")
    print(json.dumps({"busy": args.busy, "blas_threads": default_threads, "one_thread_ms": one, "default_ms": default,
                      "ratio": {k: default[k] / one[k] for k in one}}))  # fmt: skip


if __name__ == "__main__":
    main()
