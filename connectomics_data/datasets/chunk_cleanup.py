"""Shared-memory chunk stores that outlive their run: termination signals and leftovers.

A :class:`~.chunk_store.ChunkStore` keeps its slots in ``<root>/cdata-chunks-<pid>-<random>``
(``/dev/shm``: RAM until reboot). It is removed by ``close``, by garbage collection and at
interpreter exit; three ways a run can end without those are handled here:

* **SIGTERM / SIGHUP** (``kill``, job schedulers, a closed terminal): :func:`install_signal_handlers`
  makes them act like Ctrl-C: the owner's store directories are removed at once and
  :class:`Terminated` (a ``KeyboardInterrupt``) unwinds the program, so DataLoader workers stop
  and the command line prints one line and exits with ``128 + signal``. Handlers a program
  installed itself are left alone.
* **SIGKILL** (``kill -9``, out-of-memory killer) cannot be caught. Every store holds an
  exclusive ``flock`` on its ``owner.lock`` file for its whole life; the kernel drops the lock
  when the owner (and the workers that inherited the descriptor) are gone. The next store
  created in the same root removes directories whose lock is free (:func:`remove_leftovers`)
  and warns with what it freed; ``scripts/chunk_stores.py`` lists them and removes them by hand.

The lock, not the pid, decides (a pid may be reused or belong to another pid namespace sharing
``/dev/shm``); directories without a lock file (older versions) fall back to "pid not alive".
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import threading
import time
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from .chunk_slots import pid_alive

DIR_PREFIX = "cdata-chunks-"
"""Store directories are ``<root>/cdata-chunks-<pid>-<random>``."""

LOCK_NAME = "owner.lock"
"""The file of a store directory its owner holds an exclusive ``flock`` on."""

SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class LeftoverChunkStoreWarning(UserWarning):
    """Shared-memory chunk stores of runs that were killed were found (and removed)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived; handled like Ctrl-C. ``signum`` is the signal's number."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = int(signum)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


# ---------------------------------------------------------------------- ownership
def take_ownership(directory: str) -> int:
    """Create ``owner.lock`` in ``directory``, lock it exclusively and return its descriptor.

    The descriptor must stay open for the store's life (closing it releases the lock).
    """
    fd = os.open(os.path.join(directory, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    os.write(fd, json.dumps(info).encode())
    return fd


def _pid_of(name: str) -> int | None:
    try:
        return int(name[len(DIR_PREFIX):].split("-", 1)[0])
    except ValueError:
        return None


def _owner_alive(directory: str, pid: int | None) -> bool:
    """True while the store's owner (or a process that inherited its lock) lives."""
    try:
        fd = os.open(os.path.join(directory, LOCK_NAME), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        if not os.path.isdir(directory):
            return False
        # no lock file: an older store, or one being created this instant; trust the pid
        age = time.time() - os.stat(directory).st_mtime
        return age < 5 or (pid is not None and pid_alive(pid))
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return True
    finally:
        os.close(fd)  # also releases a lock we took
    return False


def _tree_bytes(directory: str) -> int:
    total = 0
    for base, _dirs, files in os.walk(directory):
        for name in files:
            try:
                total += os.stat(os.path.join(base, name)).st_blocks * 512
            except OSError:
                pass
    return total


@dataclass
class StoreDir:
    """A chunk store directory found under a root."""

    path: str
    pid: int | None
    alive: bool
    nbytes: int

    def describe(self) -> str:
        state = "in use" if self.alive else "left over (owner gone)"
        return f"{self.path}  {self.nbytes / 2**20:.1f} MiB  pid {self.pid}  {state}"


def list_stores(root: str) -> list[StoreDir]:
    """Every ``cdata-chunks-*`` directory under ``root``, with its owner state and size."""
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return []
    out = []
    for name in names:
        path = os.path.join(root, name)
        if not name.startswith(DIR_PREFIX) or not os.path.isdir(path):
            continue
        pid = _pid_of(name)
        out.append(StoreDir(path, pid, _owner_alive(path, pid), _tree_bytes(path)))
    return out


def remove_leftovers(root: str, warn: bool = True) -> list[StoreDir]:
    """Remove the stores under ``root`` whose owner is gone; return them.

    With ``warn`` a :class:`LeftoverChunkStoreWarning` says how much memory came back.
    """
    removed = []
    for store in list_stores(root):
        if store.alive:
            continue
        shutil.rmtree(store.path, ignore_errors=True)
        if not os.path.exists(store.path):
            removed.append(store)
    if removed and warn:
        total = sum(s.nbytes for s in removed) / 2**20
        warnings.warn(
            f"removed {len(removed)} chunk store(s) of killed runs from {root} ({total:.1f} MiB of "
            f"shared memory): {', '.join(os.path.basename(s.path) for s in removed)}",
            LeftoverChunkStoreWarning, stacklevel=3,
        )
    return removed


# ---------------------------------------------------------------------- signals
_RELEASERS: weakref.WeakValueDictionary[int, Callable[[], None]] = weakref.WeakValueDictionary()
_HANDLED: dict[str, object] = {"pid": None, "signals": set()}
_COUNTER = [0]


class _Releaser:
    """Holds what the signal handler calls for one store (kept weakly)."""

    def __init__(self, release: Callable[[], None]):
        self.release = release

    def __call__(self) -> None:
        self.release()


def register(release: Callable[[], None]) -> object:
    """Have ``release`` called when SIGTERM/SIGHUP arrives; keep the returned token alive as
    long as it should be (the registry holds it weakly)."""
    token = _Releaser(release)
    _COUNTER[0] += 1
    _RELEASERS[_COUNTER[0]] = token
    return token


def release_all() -> None:
    """Call every registered release function of this process (errors ignored)."""
    for token in list(_RELEASERS.values()):
        try:
            token()
        except Exception:  # noqa: BLE001 - best effort while terminating
            pass


def _handler(signum: int, frame: object) -> None:
    if _HANDLED["pid"] != os.getpid():
        # a forked child (DataLoader worker) inherited the handler: die as the signal would
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    release_all()
    raise Terminated(signum)


def install_signal_handlers() -> bool:
    """Make SIGTERM and SIGHUP act like Ctrl-C in this process (see the module doc).

    Only from the main thread, and only for signals still at their default action (a program's
    own handlers are kept). Returns True when a handler is in place.
    """
    signals: set = _HANDLED["signals"]  # type: ignore[assignment]
    if _HANDLED["pid"] != os.getpid():
        signals.clear()  # inherited through fork: this process has not installed any
    if threading.current_thread() is not threading.main_thread():
        return bool(signals)
    for sig in SIGNALS:
        if sig not in signals and signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, _handler)
            signals.add(sig)
    _HANDLED["pid"] = os.getpid()
    return bool(signals)


# ---------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    """``scripts/chunk_stores.py``: list chunk stores, ``--remove`` those of killed runs."""
    import argparse

    from .chunk_store import default_root

    ap = argparse.ArgumentParser(
        description="List the shared-memory chunk stores of chunked training runs "
        "(DATASET.DO_CHUNK_TITLE) and remove those whose run was killed.")
    ap.add_argument("--root", default=None, help="where the stores live (default: /dev/shm)")
    ap.add_argument("--remove", action="store_true", help="remove the stores whose owner is gone")
    args = ap.parse_args(argv)
    root = args.root or default_root()
    stores = list_stores(root)
    if not stores:
        print(f"no chunk stores in {root}")
        return 0
    for store in stores:
        print(store.describe())
    dead = [s for s in stores if not s.alive]
    if args.remove:
        removed = remove_leftovers(root, warn=False)
        total = sum(s.nbytes for s in removed) / 2**20
        print(f"removed {len(removed)} left-over store(s), {total:.1f} MiB freed")
    elif dead:
        print(f"{len(dead)} left over ({sum(s.nbytes for s in dead) / 2**20:.1f} MiB): "
              "rerun with --remove to free them")
    return 0
