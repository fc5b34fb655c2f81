"""Faults a long run meets: SIGTERM/SIGINT during ``ciper-train``, a full disk under
``ciper-rollout``. Nothing done before the fault is lost, nothing partial is left behind,
and running the same thing again completes with the result an uninterrupted run gives.

``ciper-train`` runs as a subprocess, signalled once it has written its first checkpoint.
The full disk is met twice: injected (a write that fills the disk half way through a file,
at each kind of file a shard write touches) and real (a tmpfs of a few pages, when this
machine lets the test mount one). The other faults are tested elsewhere; see
docs/reliability.md.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import agent.atomic_files as atomic_files
import agent.shards as shards
from agent.dataset import ViewPairDataset
from agent.rollout_app import rollout
from agent.shards import (
    CHECKSUMS_NAME,
    FIELD_NAMES,
    MANIFEST_NAME,
    read_manifest,
    shard_index,
    verify_shard,
)
from conf.compose import compose_config
from learner.training.checkpoint import load_checkpoint
from learner.training.loop import train

REPO = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------- SIGTERM / SIGINT during ciper-train

# The tiny model of tests/test_train.py, on the CPU so that losses repeat to the last bit.
TINY = ("env.image_size=32", "model.width=8", "model.proj_hidden=64", "model.proj_dim=32",
        "model.pred_hidden=64", "train.batch_size=32", "train.evaluate=false", "train.mode=offline",
        "train.log_every=5", "optim.warmup_steps=2", "train.device=cpu")  # fmt: skip
TRAIN_STEPS = 36
TRAINING = (*TINY, f"train.steps={TRAIN_STEPS}", "train.checkpoint_every=3", "method.augment_crop=true")


@pytest.fixture(scope="module")
def uninterrupted_losses(tiny_dataset, tmp_path_factory) -> list[dict[str, float]]:
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    cfg = compose_config([*TRAINING, f"train.dataset={tiny_dataset}"], run_dir=run_dir)
    assert train(cfg, run_dir)["completed"]
    return json.loads((run_dir / "loss_history.json").read_text())


def train_command(dataset: Path, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "learner.train_app", *TRAINING, f"train.dataset={dataset}", f"hydra.run.dir={run_dir}"]


def wait_for(condition, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"ciper-train exited (code {process.returncode}) before it was signalled"
        assert time.monotonic() < deadline, f"no progress within {timeout} s"
        time.sleep(0.01)


def stopped(process: subprocess.Popen) -> bool:
    """Whether ``process`` is stopped (SIGSTOP has taken effect)."""
    return Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("T", "t")


def signal_once(condition, process: subprocess.Popen, signum: int, timeout: float, slice_s: float = 0.02) -> None:
    """Let ``process`` run in slices of ``slice_s`` (SIGCONT, then SIGSTOP) until
    ``condition()`` holds while it is stopped, then send ``signum`` and let it go on. The
    process cannot move past the moment the condition came true before the signal is
    pending, however busy the machine (at most one slice of its own CPU time)."""
    deadline = time.monotonic() + timeout
    try:
        while True:
            process.send_signal(signal.SIGSTOP)
            while not stopped(process):
                assert process.poll() is None, f"ciper-train exited (code {process.returncode}) before it was signalled"
                time.sleep(0.001)
            if condition():
                break
            assert time.monotonic() < deadline, f"no progress within {timeout} s"
            process.send_signal(signal.SIGCONT)
            time.sleep(slice_s)
        process.send_signal(signum)
    finally:
        process.send_signal(signal.SIGCONT)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signalled_ciper_train_checkpoints_and_the_same_command_resumes_the_same_losses(
    tiny_dataset, uninterrupted_losses, tmp_path, signum
):
    run_dir = tmp_path / "run"
    command = train_command(tiny_dataset, run_dir)
    checkpoint = run_dir / "checkpoints" / "last.pt"
    with open(tmp_path / "interrupted.log", "w") as log:
        process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        try:
            # the first checkpoint is renamed into place (complete); the run is stopped when it
            # is seen, so the signal is pending long before the run could reach its last step
            signal_once(checkpoint.exists, process, signum, timeout=300)
            process.wait(timeout=120)  # a bound for a hang, not a speed claim
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    output = (tmp_path / "interrupted.log").read_text()
    assert process.returncode == 0, output  # a signal finishes the step, checkpoints and returns

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["stopped_by"] == signum.name and not metrics["completed"]
    payload = load_checkpoint(checkpoint)
    assert 3 <= payload["step"] == metrics["steps"] < TRAIN_STEPS
    assert [h["step"] for h in payload["history"]] == list(range(1, payload["step"] + 1))

    resumed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"at step {payload['step']}" in resumed.stdout
    assert json.loads((run_dir / "metrics.json").read_text())["completed"]
    history = json.loads((run_dir / "loss_history.json").read_text())
    assert [h["step"] for h in history] == list(range(1, TRAIN_STEPS + 1))
    for name in uninterrupted_losses[0]:
        np.testing.assert_allclose(
            [h[name] for h in history], [h[name] for h in uninterrupted_losses], rtol=1e-6, atol=1e-7, err_msg=name
        )


# ---------------------------------------------------------------- disk full under ciper-rollout

ROLLOUT = ("env.image_size=16", "env.episode_steps=8", "collector.vectorization=sync", "collector.num_envs=2",
           "dataset.steps=100", "dataset.shard_size=20")  # fmt: skip


def rollout_config(dataset: Path, run_dir: Path):
    return compose_config([*ROLLOUT, f"dataset.path={dataset}"], run_dir=run_dir)


def view_hashes(root: Path) -> list[str]:
    return [s["files"]["view.npy"]["sha256"] for s in read_manifest(root)["shards"]]


@pytest.fixture(scope="module")
def reference_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reference") / "data"
    rollout(rollout_config(root, root.parent / "run"))
    return root


class _FillingFile:
    """A file on a disk that fills up: the first write stores half its bytes, then fails."""

    def __init__(self, handle) -> None:
        self._handle = handle

    def write(self, data) -> int:
        self._handle.write(data[: len(data) // 2])
        self._handle.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self._handle.close()


def fill_disk_at(monkeypatch, matches) -> dict[str, Path]:
    """Make the first file that ``agent.shards`` opens for writing at a path ``matches``
    accepts fill the disk; returns a record of the path it failed."""
    failed: dict[str, Path] = {}

    def filling_open(file, mode="r", *args, **kwargs):
        handle = open(file, mode, *args, **kwargs)
        if "w" in mode and not failed and matches(Path(file)):
            failed["path"] = Path(file)
            return _FillingFile(handle)
        return handle

    monkeypatch.setattr(shards, "open", filling_open, raising=False)
    monkeypatch.setattr(atomic_files, "open", filling_open, raising=False)  # manifest, checksums
    return failed


def assert_only_complete_shards(root: Path) -> int:
    """Every shard folder holds all its files with their recorded sizes and hashes, no
    partial file is left, and the listed shards load; returns the transitions listed."""
    for path in root.iterdir():
        assert not path.name.endswith(".tmp"), f"partial write left behind: {path.name}"
        if shard_index(path.name) is not None:
            entry = json.loads((path / CHECKSUMS_NAME).read_text())["entry"]
            assert set(entry["files"]) == {f"{name}.npy" for name in FIELD_NAMES}
            verify_shard(path, entry["files"], checksums=True)
    listed = read_manifest(root)["counts"]["transitions"]
    if listed:
        assert ViewPairDataset(root, verify=True).num_transitions == listed
    return listed


def is_temporary_of(path: Path, name: str) -> bool:
    """Whether ``path`` is the temporary file an atomic write of ``name`` goes through."""
    return path.name.startswith(f".{name}.") and path.name.endswith(".tmp")


FAIL_POINTS = {
    "view.npy": lambda p: p.parent.name == "shard_00002.tmp" and p.name == "view.npy",
    "checksums.json": lambda p: p.parent.name == "shard_00002.tmp" and is_temporary_of(p, CHECKSUMS_NAME),
    "manifest.json": lambda p: is_temporary_of(p, MANIFEST_NAME) and (p.parent / "shard_00002").is_dir(),
}


@pytest.mark.parametrize("fail_point", sorted(FAIL_POINTS))
def test_disk_full_during_a_shard_write_keeps_earlier_shards_and_the_rerun_completes(
    reference_dataset, tmp_path, monkeypatch, fail_point
):
    dataset = tmp_path / "data"
    cfg = rollout_config(dataset, tmp_path / "run")
    failed = fill_disk_at(monkeypatch, FAIL_POINTS[fail_point])
    with pytest.raises(OSError) as full:
        rollout(cfg)
    assert full.value.errno == errno.ENOSPC and fail_point in failed["path"].name
    # The error names the file it could not write, not just "No space left on device".
    assert str(failed["path"].parent) in str(full.value)
    assert assert_only_complete_shards(dataset) == 40  # shards 0 and 1; a complete, unlisted 2 is fine

    monkeypatch.undo()  # space freed
    metrics = rollout(cfg)
    assert metrics["transitions"] == 100 and metrics["shards_kept"] == 2 + (fail_point == "manifest.json")
    assert assert_only_complete_shards(dataset) == 100
    assert view_hashes(dataset) == view_hashes(reference_dataset)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A mounted tmpfs of 160 KiB (room for about three shards); skipped where mounting is
    not allowed. Yields a function that grows it (frees space)."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(mount_point)],
                             capture_output=True, text=True, check=False)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")

    def grow() -> None:
        subprocess.run(["mount", "-o", "remount,size=8m", str(mount_point)], check=True)

    try:
        yield mount_point, grow
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


def test_rollout_onto_a_really_full_disk_fails_clearly_and_completes_once_space_is_freed(
    reference_dataset, small_tmpfs, tmp_path
):
    mount_point, grow = small_tmpfs
    dataset = mount_point / "data"
    cfg = rollout_config(dataset, tmp_path / "run")
    with pytest.raises(OSError) as full:
        rollout(cfg)
    assert full.value.errno == errno.ENOSPC
    assert str(dataset) in str(full.value)
    kept = assert_only_complete_shards(dataset)
    assert 0 < kept < 100

    grow()
    metrics = rollout(cfg)
    assert metrics["transitions"] == 100 and metrics["shards_kept"] >= kept // 20
    assert assert_only_complete_shards(dataset) == 100
    assert view_hashes(dataset) == view_hashes(reference_dataset)


# ---------------------------------------------------------------- issue 22: no wait without a bound and a word


class _EmptyBuffer:
    views_written = 0


class _IdleCollectors:
    restarts = 0

    def check(self) -> None:
        pass

    def alive(self) -> int:
        return 1


def waiting_source(stall_s: float):
    """An online source whose collectors never write a view (its buffer stays empty)."""
    import threading

    from learner.data.pair_sources import OnlinePairSource

    source = OnlinePairSource.__new__(OnlinePairSource)
    source.buffer, source.collectors = _EmptyBuffer(), _IdleCollectors()
    source.batch_size, source.replay_ratio, source.warmup_views, source.pairs_served = 64, 4.0, 512, 0
    source.stall_s, source._closing = stall_s, threading.Event()
    return source


def test_a_long_wait_for_views_says_what_it_waits_for_and_a_stall_ends_it(monkeypatch, caplog):
    import learner.data.pair_sources as pair_sources

    monkeypatch.setattr(pair_sources, "WAIT_LOG_S", 0.05)
    source = waiting_source(stall_s=0.5)
    with caplog.at_level("WARNING", logger="learner.data.pair_sources"):
        with pytest.raises(pair_sources.CollectorsStalled, match="no view collected for 0 s while waiting for views: 0 collected"):
            source._wait_for_views()
    assert "waiting 0 s for views: 0 collected, 512 needed (buffer.warmup_views=512 before the first step)" in caplog.text
    assert "1 collector workers alive" in caplog.text


def test_a_wait_for_pairs_gives_up_as_soon_as_it_is_cancelled():
    import threading

    from learner.data.pair_sources import _Prefetcher

    never = threading.Event()

    def draw(rng):
        never.wait(10)  # a draw that waits for views that never come

    prefetch = _Prefetcher(draw, seed=0)
    started = time.monotonic()
    assert prefetch.get(cancelled=lambda: time.monotonic() - started > 0.3) is None
    assert time.monotonic() - started < 5
    never.set()
    prefetch.close()


def test_online_settings_that_could_never_be_fed_are_named_with_the_arithmetic():
    from learner.data.pair_sources import online_feed_problem

    problem = online_feed_problem(compose_config(["train.batch_size=8192", "env.image_size=32"]))
    assert "8192 / 4" in problem and "collector.lead_views=1024" in problem and "train.replay_ratio to >= 8" in problem
    assert online_feed_problem(compose_config(["train.batch_size=4096"])) is None  # 1024 views per step: fed
    assert online_feed_problem(compose_config(["train.batch_size=8192", "collector.lead_views=null", "buffer.capacity=8192"])) is None


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def running(pids: set[int]) -> set[int]:
    """Those of ``pids`` that still run (a zombie no longer does)."""
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


# Online training that waits for ever: the warm-up is never reached.
WAITING = ("env.image_size=16", "collector.num_envs=1", "buffer.warmup_views=10000000", "collector.lead_views=null",
           "train.evaluate=false", "train.device=cpu")  # fmt: skip


def start_waiting_run(run_dir: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """A ``ciper-train`` that waits for data; returns once it said so in its log, with the
    name of its shared-memory segment (recorded in the run folder)."""
    command = [sys.executable, "-m", "learner.train_app", *WAITING, f"hydra.run.dir={run_dir}"]
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    run_log = run_dir / "ciper-train.log"
    wait_for(lambda: run_log.exists() and "waiting" in run_log.read_text(), process, timeout=300)
    (segment,) = [p.name for p in (run_dir / ".shared_memory").iterdir()]
    assert Path("/dev/shm", segment).exists()
    return process, segment


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_ends_an_online_run_that_waits_for_data(tmp_path, signum):
    run_dir = tmp_path / "run"
    process, segment = start_waiting_run(run_dir, tmp_path / "out.log")
    workers = descendants(process.pid)
    try:
        os.killpg(process.pid, signum) if signum == signal.SIGINT else process.send_signal(signum)  # Ctrl-C: the group
        process.wait(timeout=120)  # a bound for a hang, not a speed claim
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    output = (tmp_path / "out.log").read_text()
    assert process.returncode == 0, output
    line = output.strip().splitlines()[-1]
    assert line.startswith(f"ciper-train: stopped by {signum.name} at step 0/300; checkpoint kept in ") and "Traceback" not in output
    assert json.loads((run_dir / "metrics.json").read_text())["stopped_by"] == signum.name
    assert not Path("/dev/shm", segment).exists() and not (run_dir / ".shared_memory").exists()
    deadline = time.monotonic() + 120
    while running(workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not running(workers)


@pytest.mark.slow
def test_a_killed_online_run_leaves_no_collector_and_no_shared_memory(tmp_path):
    process, segment = start_waiting_run(tmp_path / "run", tmp_path / "out.log")
    workers = descendants(process.pid)
    assert workers
    process.kill()  # the learner only: its collectors are the survivors
    process.wait()
    deadline = time.monotonic() + 120
    while (running(workers) or Path("/dev/shm", segment).exists()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not running(workers), "collector processes outlived their learner"
    assert not Path("/dev/shm", segment).exists(), "the shared-memory segment outlived the run"


def test_the_next_run_removes_a_segment_a_killed_run_recorded(tmp_path):
    from multiprocessing import shared_memory

    from agent.replay_buffer import SegmentRecord

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    segment = shared_memory.SharedMemory(create=True, size=4096)
    record = SegmentRecord(tmp_path)
    record.add(segment.name)
    (record.folder / segment.name).write_text(gone.stdout)  # its creator has exited
    live = SegmentRecord(tmp_path / "live")
    live.add("ciper_rb_of_a_live_run")
    other_run = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    (live.folder / "ciper_rb_of_a_live_run").write_text(f"{other_run.pid}\n")  # another torchrun rank, say
    try:
        assert record.remove_stale() == [segment.name]
        assert not Path("/dev/shm", segment.name).exists() and not record.folder.exists()
        assert live.remove_stale() == [] and (live.folder / "ciper_rb_of_a_live_run").exists()
    finally:
        other_run.kill()
        other_run.wait()
        segment.close()


def test_running_out_of_memory_in_a_step_names_the_batch(tiny_dataset, tmp_path, monkeypatch):
    from conf.errors import UserError
    from learner.training.learner import Learner
    from learner.training.loop import OutOfMemory

    def out_of_memory(self, pairs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried "
                           "to allocate 96636764160 bytes")  # fmt: skip

    monkeypatch.setattr(Learner, "step", out_of_memory)
    cfg = compose_config([*TINY, "train.steps=2", f"train.dataset={tiny_dataset}"], run_dir=tmp_path)
    with pytest.raises(OutOfMemory, match=r"out of memory at step 1: train\.batch_size=32 pairs of two 32x32 views") as error:
        train(cfg, tmp_path)
    assert isinstance(error.value, UserError) and "lower train.batch_size" in str(error.value)


def test_a_diverging_loss_and_an_absurd_learning_rate_are_warned_about(tiny_dataset, tmp_path, caplog):
    from learner.train_app import check_feasible

    cfg = compose_config([*TINY, "train.steps=6", "optim.lr=1e6", f"train.dataset={tiny_dataset}"], run_dir=tmp_path)
    with caplog.at_level("WARNING"):
        check_feasible(cfg)
        train(cfg, tmp_path)
    assert "optim.lr=1e+06 is far outside the learning rates" in caplog.text
    assert len([r for r in caplog.records if "training is diverging" in r.getMessage()]) == 1
