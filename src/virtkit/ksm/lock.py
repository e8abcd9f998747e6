"""The tuning daemon's lock: one daemon per KSM directory on a host.

A lock file under /run/virtkit (an ``flock``, released by the kernel when the daemon dies, so no
stale lock survives a crash) holds its PID; ``running_pid`` and ``stop_daemon`` find it by that.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

from virtkit.errors import InvalidState, NotFound, PermissionDenied

LOCK_DIR = Path("/run/virtkit")


def lock_path(ksm_root: Path, lock_dir: Path = LOCK_DIR) -> Path:
    """The lock of the daemon tuning ``ksm_root`` (one per KSM directory, host-wide)."""
    digest = hashlib.sha256(str(ksm_root.resolve()).encode()).hexdigest()[:12]
    return lock_dir / f"ksm-tune-{digest}.lock"


def running_pid(path: Path) -> int | None:
    """PID of the daemon that holds the lock at ``path``, or None. Reads the PID it wrote and
    checks the process is alive and a virtkit; it takes no lock itself (a probing lock, even a
    shared one, could make a daemon that is starting at that moment fail to take its own)."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text.isdigit():
        return None
    pid = int(text)
    if pid == os.getpid():
        return pid
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return pid if b"virtkit" in cmdline else None


@contextlib.contextmanager
def hold_lock(path: Path) -> Iterator[None]:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except PermissionError:
        raise PermissionDenied(
            f"cannot take the KSM tuning lock {path}: the daemon needs root", code="ksm_permission"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = path.read_text().strip() or "?"
            raise InvalidState(
                f"a KSM tuning daemon is already running on this host (pid {pid}); stop it "
                "first ('virtkit ksm tune --stop')",
                code="ksm_tune_running",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # no PID left behind once the lock is released
    finally:
        os.close(fd)  # releases the flock


def stop_daemon(path: Path, timeout: float = 30.0) -> int:
    """Ask the daemon holding ``path`` to stop (SIGTERM to the PID it wrote) and wait for it."""
    pid = running_pid(path)
    if pid is None or pid <= 0:
        raise NotFound("no KSM tuning daemon is running on this host", code="ksm_tune_not_running")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while running_pid(path) is not None:
        if time.monotonic() > deadline:
            raise InvalidState(
                f"the KSM tuning daemon (pid {pid}) did not stop within {timeout:.0f} s",
                code="ksm_tune_stuck",
            )
        time.sleep(0.1)
    return pid
