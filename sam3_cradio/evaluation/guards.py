"""What keeps a run's output folder sound: one run at a time (:class:`FolderLock`) and a clean, prompt stop on
Ctrl-C (:class:`InterruptGuard`, :class:`RunInterrupted`).

Why a lock and not a split of the work between concurrent runs: a run's ranks already split the work (torchrun),
and a second, independent command into the same folder is almost always a mistake (a repeated command, a
forgotten terminal). Refusing it, with the holder named, is simple to reason about; claiming units would need a
claim per unit, a way to tell a dead claimer from a slow one, and a merge step. The lock is ``flock`` on
``<out>/.lock``: the kernel drops it when the holding process ends, however it ends (a crash, ``kill -9``, a
power cut of the machine on NFSv4 once the server's lease expires), so a stale lock never blocks.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import platform
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = ['FolderLock', 'FolderBusy', 'InterruptGuard', 'RunInterrupted', 'LOCK_NAME']

_logger = logging.getLogger(__name__)

LOCK_NAME = '.lock'


class FolderBusy(ValueError):
    """Another run holds the output folder."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a run; ``str()`` says how far it got and how to go on. A ``KeyboardInterrupt``, so that
    ``except Exception`` handlers let it through as they would the plain one."""


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return 'holder unknown'
    parts = [f'pid {holder.get("pid")} on {holder.get("host")}']
    if holder.get('started'):
        parts.append(f'since {holder["started"]}')
    if holder.get('command'):
        parts.append(f'command: {holder["command"][:160]}')
    return ', '.join(parts)


class FolderLock:
    """An exclusive lock on an output folder, held by one process for the length of a run.

    ``acquire()`` creates the folder and ``<folder>/.lock``, takes a non-blocking ``flock`` on it and writes the
    holder (pid, host, start time, command) into it; if another process holds it, :class:`FolderBusy` names that
    holder. ``release()`` removes the file. A file left behind by a process that died is not a lock: the kernel
    released its ``flock``, and the next run takes it over.

    Example:
        >>> lock = FolderLock('runs/x').acquire()
        >>> FolderLock('runs/x').acquire()
        Traceback (most recent call last):
        FolderBusy: runs/x is in use by another run (pid ... on ...); ...
        >>> lock.release()
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> FolderLock:
        import fcntl

        if self._fd is not None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                for _ in range(20):  # the holder writes who it is just after it locks: give it a moment to
                    if holder:
                        break
                    time.sleep(0.05)
                    holder = _read_holder(fd)
                os.close(fd)
                raise FolderBusy(f'{self.folder} is in use by another run ({_describe(holder)}); wait for it to '
                                 'finish or stop it, or use another --out') from None
            except OSError as e:  # a file system without locks (some FUSE or old NFS mounts)
                os.close(fd)
                _logger.warning('cannot lock %s (%s): two runs into this folder at once would not be detected',
                                self.path, e.strerror or e)
                return self
            # a releasing holder unlinks the file before unlocking it: make sure we hold the file at the path now
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        info = {'pid': os.getpid(), 'host': platform.node(),
                'started': datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
                'command': ' '.join(sys.argv)}
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(info) + '\n').encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)  # while still locked, so no one locks a file that is going away
        except FileNotFoundError:
            pass
        os.close(self._fd)  # drops the flock
        self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = os.read(fd, 65536)
        return json.loads(data) if data.strip() else {}
    except (OSError, ValueError):
        return {}


class InterruptGuard:
    """Ctrl-C (SIGINT) handling for the length of a run, in the main thread (elsewhere it does nothing).

    Every SIGINT raises ``KeyboardInterrupt`` at once, as Python's own handler does, and also sets
    :attr:`requested`. Code that swallows the exception (a bare ``except:`` in a library, e.g. sam3's BPE
    tokenizer, or a ``__del__`` where Python only prints "Exception ignored") cannot make the run go on: the loop
    calls :meth:`check` after every unit, which raises again. After :meth:`quiet` (cleanup), further SIGINTs only
    set the flag, so that a second Ctrl-C cannot cut the cleanup short with a traceback.
    """

    def __init__(self) -> None:
        self.requested = False
        self._raising = True
        self._previous: Any = None
        self._installed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        if self._raising:
            raise KeyboardInterrupt

    def check(self) -> None:
        """Raise ``KeyboardInterrupt`` if a SIGINT arrived (whatever became of the first exception)."""
        if self.requested:
            raise KeyboardInterrupt

    def quiet(self) -> None:
        """From now on a SIGINT only sets :attr:`requested`."""
        self._raising = False

    def __enter__(self) -> InterruptGuard:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False
