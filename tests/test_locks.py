"""One writer per run folder and per dataset being written (issue 22).

A second ``ciper-train`` in a folder another run holds, or a ``ciper-rollout`` onto a dataset
another rollout is writing, is refused in one line naming the holder's PID, exit code 2, and
writes nothing; the lock of a killed process does not block. The holder here is a small
process that takes the lock and says so through a marker file the test waits for, so no
test depends on how fast a training run starts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conf.errors import UserError
from conf.locks import LOCK_NAME, FolderInUse, FolderLock

REPO = Path(__file__).resolve().parents[1]
MODULES = {"ciper-train": "learner.train_app", "ciper-rollout": "agent.rollout_app"}

HOLD = """
import sys, time
from pathlib import Path
from conf.locks import FolderLock
with FolderLock(sys.argv[1]):
    Path(sys.argv[2]).write_text("locked")
    time.sleep(600)
"""


def run_script(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"} | {"PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", MODULES[script], *args], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


def assert_refused(done: subprocess.CompletedProcess, script: str, expected: list[str]) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith(f"{script}: error: ") and all(text in line for text in expected), line


def folder_state(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.fixture
def holder(tmp_path):
    """``holder(folder)`` -> a process holding ``folder``'s lock (killed at the end)."""
    processes: list[subprocess.Popen] = []

    def hold(folder: Path) -> subprocess.Popen:
        marker = tmp_path / f"locked_{len(processes)}"
        process = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), str(marker)], cwd=REPO,
                                   env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
        processes.append(process)
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert process.poll() is None, "the lock holder died"
            assert time.monotonic() < deadline, "the lock holder never took the lock"
            time.sleep(0.01)
        return process

    yield hold
    for process in processes:
        process.kill()
        process.wait()


def test_a_second_writer_is_refused_naming_the_pid_and_a_killed_holder_does_not_block(tmp_path, holder):
    folder = tmp_path / "run"
    process = holder(folder)
    with pytest.raises(FolderInUse, match=rf"in use by another process \(pid {process.pid}: ") as refused:
        FolderLock(folder, what=f"hydra.run.dir={folder}").acquire()
    assert isinstance(refused.value, UserError) and str(refused.value).startswith(f"hydra.run.dir={folder}: ")
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (folder / LOCK_NAME).exists()  # a killed holder leaves its file; the kernel dropped its lock
    with FolderLock(folder) as lock:
        assert lock.held and f"pid {os.getpid()}:" in (folder / LOCK_NAME).read_text()
    assert not (folder / LOCK_NAME).exists()


def test_ciper_train_in_a_folder_another_run_holds_is_refused_and_writes_nothing(tmp_path, holder):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "metrics.json").write_text("{}")
    process = holder(folder)
    before = folder_state(folder)
    done = run_script("ciper-train", f"hydra.run.dir={folder}", "train.seed=1", cwd=tmp_path)
    assert_refused(done, "ciper-train", [f"hydra.run.dir={folder}", f"pid {process.pid}", "wait for it to end"])
    assert folder_state(folder) == before  # no .hydra, no log, nothing resumed


def test_ciper_rollout_onto_a_dataset_being_written_is_refused_and_writes_nothing(tmp_path, holder):
    dataset = tmp_path / "data"
    process = holder(dataset)
    before = folder_state(dataset)
    done = run_script("ciper-rollout", f"dataset.path={dataset}", "env.image_size=16", "dataset.steps=20",
                      "dataset.shard_size=20", "collector.vectorization=sync", cwd=tmp_path)  # fmt: skip
    assert_refused(done, "ciper-rollout", [f"dataset.path={dataset}", f"pid {process.pid}"])
    assert folder_state(dataset) == before
    assert not (tmp_path / "runs").exists()
