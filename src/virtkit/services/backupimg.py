"""The qemu-img work of backups on the local host: make an incremental's target on its parent,
copy a disk's chain (stopped VMs, restores), check an image, hash a file."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

from virtkit.errors import BackendError, Cancelled, Unsupported

Percent = Callable[[float], None]
_PERCENT = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")
CHECK_TIMEOUT = 600.0


def _run(cmd: list[str], what: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise Unsupported("qemu-img is not installed (apt-get install qemu-utils)") from None
    except subprocess.TimeoutExpired:
        raise BackendError(f"{what} did not finish in {timeout:g} s") from None
    return done


def create_overlay(path: Path, backing: str, size: int) -> None:
    """A new qcow2 ``path`` on ``backing`` (a qcow2, relative to ``path``'s directory)."""
    cmd = ["qemu-img", "create", "-q", "-f", "qcow2", "-b", backing, "-F", "qcow2", str(path)]
    done = _run([*cmd, str(size)], f"qemu-img create {path}")
    if done.returncode != 0:
        raise BackendError(f"could not make {path} on {backing}: {done.stderr.strip()}")


def allocated(path: Path) -> int:
    """Bytes a (sparse) file takes on disk."""
    return path.stat().st_blocks * 512


def convert(
    source: str,
    target: Path,
    *,
    source_format: str | None = None,
    target_format: str = "qcow2",
    force_share: bool = False,
    progress: Percent | None = None,
    cancel: threading.Event | None = None,
) -> None:
    """``qemu-img convert`` of ``source``'s whole chain into one image ``target`` (sparse).
    ``cancel`` set (or Ctrl+C) ends it: the process is stopped and ``Cancelled`` raised; the
    caller removes ``target``."""
    cmd = ["qemu-img", "convert", "-p", "-O", target_format]
    if source_format:
        cmd += ["-f", source_format]
    if force_share:
        cmd.append("-U")
    cmd += [source, str(target)]
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except FileNotFoundError:
        raise Unsupported("qemu-img is not installed (apt-get install qemu-utils)") from None
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.2):
            if cancel is not None and cancel.is_set():
                proc.terminate()
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        assert proc.stdout is not None
        buffer = b""
        while chunk := os.read(proc.stdout.fileno(), 4096):
            buffer = (buffer + chunk)[-256:]
            found = _PERCENT.findall(buffer)
            if found and progress is not None:
                progress(float(found[-1]))
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        code = proc.wait()
    except BaseException:
        proc.terminate()
        proc.wait()
        raise
    finally:
        stop.set()
        watcher.join()
    if cancel is not None and cancel.is_set():
        raise Cancelled(f"copy of {source} cancelled")
    if code != 0:
        raise BackendError(f"qemu-img convert {source} -> {target} failed: {stderr.strip()}")


def check(path: Path) -> tuple[bool, str]:
    """``qemu-img check`` of one image (not its backing files): (ok, what it said)."""
    done = _run(["qemu-img", "check", "-q", "-f", "qcow2", str(path)],
                f"qemu-img check {path}", CHECK_TIMEOUT)  # fmt: skip
    text = (done.stdout + done.stderr).strip()
    return done.returncode == 0, text or "no errors"


def sha256(path: Path, progress: Callable[[int], None] | None = None) -> str:
    digest = hashlib.sha256()
    done = 0
    with open(path, "rb") as f:
        while block := f.read(4 * 1024 * 1024):
            digest.update(block)
            done += len(block)
            if progress is not None:
                progress(done)
    return digest.hexdigest()
