"""Finding QEMU processes in /proc: the per-UUID lookup trusts a PID it found before only after
reading that PID's command line again. A directory laid out as /proc stands in for it, so a PID
can be reused on purpose."""

from __future__ import annotations

from pathlib import Path

import pytest

from virtkit.backend import procfs

A = "6c3a2b52-8d1f-4bb0-9d36-8d0c0ab3b0f1"
B = "0f0e0d0c-0b0a-4909-8807-060504030201"


def _process(proc: Path, pid: int, *args: str) -> None:
    (proc / str(pid)).mkdir(exist_ok=True)
    (proc / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in args) + b"\0")


@pytest.fixture
def proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(procfs, "_PROC", tmp_path)
    monkeypatch.setattr(procfs, "_seen", {})
    _process(tmp_path, 1, "/sbin/init")
    _process(tmp_path, 200, "/usr/bin/qemu-system-x86_64", "-name", "guest=a", "-uuid", A)
    _process(tmp_path, 300, "/usr/bin/qemu-system-x86_64", "-uuid", B, "-S")
    (tmp_path / "self").mkdir()
    return tmp_path


def test_all_and_some(proc: Path) -> None:
    assert procfs.qemu_pids() == {A: 200, B: 300}
    assert procfs.qemu_pids([A]) == {A: 200}
    assert procfs.qemu_pids([]) == {}


def test_a_known_pid_is_checked_again_and_a_reused_one_is_not_trusted(
    proc: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert procfs.qemu_pids([A]) == {A: 200}  # a scan: A was not known
    scans = []
    real_scan = procfs._scan
    monkeypatch.setattr(procfs, "_scan", lambda: scans.append(1) or real_scan())
    assert procfs.qemu_pids([A, B]) == {A: 200, B: 300}
    assert scans == []  # both known: one read each, no pass over /proc

    # A's QEMU ends and PID 200 goes to another program; A starts again as PID 400.
    _process(proc, 200, "/usr/bin/sleep", "60")
    _process(proc, 400, "/usr/bin/qemu-system-x86_64", "-uuid", A)
    assert procfs.qemu_pids([A]) == {A: 400}
    assert scans == [1]

    # Gone for good: not found, and never the stale PID.
    (proc / "400" / "cmdline").unlink()
    (proc / "400").rmdir()
    assert procfs.qemu_pids([A]) == {}
