"""One writer per folder: an OS file lock on a run folder or a dataset being written.

`FolderLock` holds ``fcntl.flock`` on ``<folder>/.lock``: the kernel drops it when its
process ends in any way (SIGKILL included), so a stale lock file of a killed run never blocks
the next one. The holder writes its PID and command into the file, so a second writer is
refused with a `FolderInUse` (a `conf.errors.UserError`) naming them, and writes nothing.
The holder removes the file on release; a process that locked a file someone just removed
sees that the path now names another file (or none) and tries again, so two writers can
never both hold one folder.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from pathlib import Path
from types import TracebackType

from conf.errors import UserError

LOCK_NAME = ".lock"


class FolderInUse(UserError):
    """Another live process holds the folder's lock."""


class FolderLock:
    """``with FolderLock(folder, what="hydra.run.dir=runs/x"):`` -- the folder is this
    process's until the block ends; ``what`` names the folder in the refusal (a config key
    and value, so the user knows which setting to change)."""

    def __init__(self, folder: str | Path, what: str | None = None) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.what = what or str(self.folder)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> FolderLock:
        """Take the lock (creating the folder if needed) or raise `FolderInUse`."""
        if self._fd is not None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise FolderInUse(f"{self.what}: in use by {self._holder()}; wait for it to end or choose "
                                  "another folder") from None  # fmt: skip
            if self._same_file(fd):
                break
            os.close(fd)  # the holder released and removed the file meanwhile: lock the new one
        os.ftruncate(fd, 0)
        command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
        os.write(fd, f"pid {os.getpid()}: {command}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file and drop the lock (remove first: see the module docstring)."""
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def _same_file(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def _holder(self) -> str:
        """``pid N (command)`` as the holder wrote it; it writes right after locking, so
        give it a moment."""
        for _ in range(20):
            try:
                text = self.path.read_text().strip()
            except FileNotFoundError:
                text = ""
            if text:
                pid, _, command = text.partition(": ")
                return f"another process ({pid}: {command})"
            time.sleep(0.01)
        return "another process (pid not recorded yet)"

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.release()
