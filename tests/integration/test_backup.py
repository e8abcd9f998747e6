"""Backups of real guests: full and incremental sets through libvirt's backup job, restores
byte-identical to the disk at backup time, a stopped and a raw-disk VM, verify, faults (a full
target, libvirtd restarting, a cancel) that leave nothing behind, and `backup run-due`."""

from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Bed, run_cli, tiny_spec, wait_for_text
from virtkit import Client
from virtkit.errors import BackendError, Cancelled, NotFound, VirtkitError
from virtkit.services.tinyguest import BOOT_MARKER, VDA_MARKER
from virtkit.specs import parse_vm_spec
from virtkit.specs.backup import Retention

PREFIX = "vkbak-"
MiB = 1024 * 1024


@dataclass
class Guest:
    name: str
    disk: Path
    n: int = 0

    def shell(self, vk: Client, bed: Bed, command: str, timeout: float = 60.0) -> None:
        """Run a command on the guest's serial shell and wait for it to finish."""
        self.n += 1
        marker = f"VKBAK{self.n}END"
        with vk.consoles.open(self.name, force=True) as console:
            # the echoed command line reads VKBAK""1END: only the output has the marker
            console.write(f'{command}; echo VKBAK""{self.n}END\n'.encode())
            wait_for_text(bed, self.name, marker, timeout=timeout)


def _make(bed: Bed, vk: Client, disk_size: str, start: bool = True, **extra: object) -> Guest:
    name = PREFIX + secrets.token_hex(3)
    vk.vms.create(parse_vm_spec(tiny_spec(bed, name, disks=[{"size": disk_size}], **extra)),
                  start=start)  # fmt: skip
    disk = Path(vk.vms.get(name).disks[0].source or "")
    if start:
        wait_for_text(bed, name, BOOT_MARKER)
    return Guest(name, disk)


def _restart(bed: Bed, vk: Client, name: str) -> None:
    """Start a stopped VM and wait for its boot (a start begins a new console log)."""
    (bed.log_dir / f"{name}-serial0.log").unlink(missing_ok=True)
    vk.vms.start(name)
    wait_for_text(bed, name, BOOT_MARKER)


def _remove(bed: Bed, name: str) -> None:
    with bed.client() as client, contextlib.suppress(NotFound):
        client.vms.delete(name, force=True, remove_storage=True)
    for leftover in bed.pool_dir.glob(f"{name}-*"):
        leftover.unlink()


@pytest.fixture(scope="module")
def vk(bed: Bed) -> Iterator[Client]:
    client = bed.client()
    yield client
    client.close()


@pytest.fixture(scope="module")
def backup_dir(bed: Bed) -> Iterator[Path]:
    path = bed.daemon.shared / f"{PREFIX}sets"
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def running(bed: Bed, vk: Client) -> Iterator[Guest]:
    guest = _make(bed, vk, "64M")
    yield guest
    _remove(bed, guest.name)


def _at_backup_time(vk: Client, guest: Guest, out: Path) -> None:
    """The disk as the guest has it now (paused, so it stays so for the backup after)."""
    subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", str(guest.disk), str(out)],
                   check=True)  # fmt: skip


def _same(a: Path, b: Path, fmt_b: str = "qcow2") -> bool:
    done = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", fmt_b, str(a), str(b)],
                          capture_output=True, text=True)  # fmt: skip
    return done.returncode == 0


def _checkpoints(vk: Client, name: str) -> list[str]:
    from virtkit.backend.backupjob import BackupJob

    return BackupJob(vk.connection, vk.host.lookup(name)).checkpoint_names()


def test_full_incremental_restore_in_place_and_as_a_new_vm(
    bed: Bed, vk: Client, running: Guest, backup_dir: Path, tmp_path: Path
) -> None:
    g = running
    g.shell(vk, bed, "echo VKBAKDATA-one | dd of=/dev/vda conv=notrunc; "
                     "dd if=/dev/urandom of=/dev/vda bs=1M seek=1 count=16; sync")  # fmt: skip
    vk.vms.pause(g.name)
    _at_backup_time(vk, g, tmp_path / "t1.raw")
    full = vk.backups.create(g.name, directory=backup_dir)
    vk.vms.resume(g.name)
    assert full.set.kind == "full" and full.set.method == "backup-api"
    assert full.set.fallback == "there is no previous backup set to build on"
    assert full.set.checkpoint in _checkpoints(vk, g.name)

    g.shell(vk, bed, "dd if=/dev/urandom of=/dev/vda bs=1M seek=30 count=4; sync")
    vk.vms.pause(g.name)
    _at_backup_time(vk, g, tmp_path / "t2.raw")
    inc = vk.backups.create(g.name, directory=backup_dir)
    vk.vms.resume(g.name)
    assert inc.set.kind == "incremental" and inc.set.parent == full.set.id, inc
    assert inc.set.fallback is None
    # the incremental holds the change (4 MiB), not the disk (17 MiB written)
    assert full.set.size > 16 * MiB
    assert 4 * MiB <= inc.set.size < 8 * MiB, inc.set.size
    assert vk.backups.verify(inc.set, directory=backup_dir).ok

    # the disk destroyed; restore the newest point, then the older one
    vk.vms.stop(g.name)
    subprocess.run(["dd", "if=/dev/urandom", f"of={g.disk}", "bs=1M", "count=8", "conv=notrunc"],
                   check=True, capture_output=True)  # fmt: skip
    restored = vk.backups.restore(inc.set, directory=backup_dir)
    assert restored.chain == [full.set.id, inc.set.id] and not restored.new_vm
    assert _same(tmp_path / "t2.raw", g.disk)
    assert _checkpoints(vk, g.name) == []  # their bitmaps went with the old disk
    vk.backups.restore(full.set, directory=backup_dir)
    assert _same(tmp_path / "t1.raw", g.disk)

    # into a new VM: new name and UUID, its own disk, boots and sees the data
    new = f"{g.name}-r"
    try:
        as_new = vk.backups.restore(inc.set, new_name=new, directory=backup_dir)
        assert as_new.new_vm and as_new.vm == new
        info, old = vk.vms.get(new), vk.vms.get(g.name)
        assert info.uuid != old.uuid
        source = Path(info.disks[0].source or "")
        assert source.parent == bed.pool_dir and source != g.disk
        assert _same(tmp_path / "t2.raw", source)
        vk.vms.start(new)
        wait_for_text(bed, new, f"{VDA_MARKER} VKBAKDATA-one")
    finally:
        _remove(bed, new)
    # the next backup of the restored VM is a full one, and says why
    _restart(bed, vk, g.name)
    again = vk.backups.create(g.name, directory=backup_dir)
    assert again.set.kind == "full" and "gone from libvirt" in (again.set.fallback or "")


def test_verify_finds_a_flipped_byte(vk: Client, running: Guest, backup_dir: Path) -> None:
    backup = vk.backups.get(running.name, directory=backup_dir)
    image = Path(backup.path) / backup.disks[0].file
    with open(image, "r+b") as f:
        f.seek(image.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    result = vk.backups.verify(backup, directory=backup_dir)
    assert not result.ok and not result.disks[0].checksum_ok
    assert "checksum differs" in result.disks[0].message


def test_what_a_dead_backup_left_goes_with_the_next(
    vk: Client, running: Guest, backup_dir: Path
) -> None:
    left = backup_dir / running.name / ".20000101T000000Z-full.partial"
    left.mkdir(parents=True)
    (left / "vda.qcow2").write_bytes(b"half")
    made = vk.backups.create(running.name, directory=backup_dir)
    assert not left.exists() and Path(made.set.path).is_dir()
    vk.backups.root(backup_dir).remove(running.name, made.set.id)


def test_stopped_vm_is_copied_and_a_raw_disk_falls_back_to_full(
    bed: Bed, vk: Client, backup_dir: Path, tmp_path: Path
) -> None:
    name = PREFIX + secrets.token_hex(3)
    raw = bed.pool_dir / f"{name}-raw.img"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(raw), "16M"], check=True)
    try:
        spec = tiny_spec(bed, name, disks=[{"path": str(raw), "format": "raw"}])
        vk.vms.create(parse_vm_spec(spec))
        copied = vk.backups.create(name, directory=backup_dir)
        assert copied.set.method == "copy" and copied.set.kind == "full"
        assert "shut off" in (copied.set.fallback or "")
        assert _same(raw, Path(copied.set.path) / "vda.qcow2")
        vk.vms.start(name)
        wait_for_text(bed, name, BOOT_MARKER)
        out = run_cli(bed, "backup", "create", name, "--to", str(backup_dir))
        assert out.returncode == 0, out.stderr
        assert "full backup instead of an incremental" in out.stdout
        assert "raw" in out.stdout and "qcow2" in out.stdout
        sets = vk.backups.list(name, directory=backup_dir)
        assert [s.checkpoint for s in sets] == [None, None]
    finally:
        _remove(bed, name)
        raw.unlink(missing_ok=True)


# -- faults: nothing half-made remains, the VM runs on ---------------------------------------


@pytest.fixture(scope="module")
def big(bed: Bed, vk: Client) -> Iterator[Guest]:
    """A VM whose backup takes a while: a 2 GiB disk that is all allocated (the job copies
    every cluster)."""
    guest = _make(bed, vk, "2G")
    vk.vms.stop(guest.name)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "preallocation=falloc",
                    str(guest.disk), "2G"], check=True)  # fmt: skip
    _restart(bed, vk, guest.name)
    yield guest
    _remove(bed, guest.name)


def _nothing_left(vk: Client, guest: Guest, directory: Path, before: list[str]) -> None:
    vm_dir = directory / guest.name
    assert not vm_dir.exists() or list(vm_dir.iterdir()) == []
    assert _checkpoints(vk, guest.name) == before
    assert vk.vms.state(guest.name).value == "running"


def test_a_full_target_leaves_nothing(bed: Bed, vk: Client, big: Guest) -> None:
    small = bed.daemon.shared / "small"  # 32 MiB
    before = _checkpoints(vk, big.name)
    with pytest.raises(BackendError, match="backup job failed"):
        vk.backups.create(big.name, directory=small, full=True)
    _nothing_left(vk, big, small, before)
    shutil.rmtree(small / big.name, ignore_errors=True)
    shutil.rmtree(small / ".locks", ignore_errors=True)  # the small disk is shared: leave it empty


def _in_thread(vk: Client, guest: Guest, directory: Path, cancel: threading.Event | None,
               on_progress: object) -> tuple[threading.Thread, list[BaseException]]:  # fmt: skip
    errors: list[BaseException] = []

    def work() -> None:
        try:
            vk.backups.create(guest.name, directory=directory, full=True,
                              progress=on_progress, cancel=cancel)  # type: ignore[arg-type]  # fmt: skip
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    return thread, errors


def test_a_cancelled_backup_leaves_nothing(vk: Client, big: Guest, backup_dir: Path) -> None:
    before = _checkpoints(vk, big.name)
    cancel = threading.Event()
    seen: list[int] = []

    def progress(phase: str, done: int, total: int | None) -> None:
        seen.append(done)
        cancel.set()  # the job runs: cancel it

    thread, errors = _in_thread(vk, big, backup_dir, cancel, progress)
    thread.join(120)
    assert seen, "the job reported no progress"
    assert len(errors) == 1 and isinstance(errors[0], Cancelled), errors
    _nothing_left(vk, big, backup_dir, before)


def test_libvirtd_restarting_mid_backup_finishes_or_leaves_nothing(
    bed: Bed, backup_dir: Path, big: Guest
) -> None:
    """libvirt 9 keeps a backup job across a restart of libvirtd: virtkit reconnects and the
    set is finished (whole, verified, its checkpoint made); should the job be lost, nothing of
    it may remain."""
    client = bed.client()  # its own: this connection drops
    try:
        before = _checkpoints(client, big.name)
        restarted = threading.Event()

        def progress(phase: str, done: int, total: int | None) -> None:
            if not restarted.is_set():
                restarted.set()
                bed.daemon.kill()
                bed.daemon.start()

        thread, errors = _in_thread(client, big, backup_dir, None, progress)
        thread.join(180)
        assert restarted.is_set() and not thread.is_alive()
        print("after the restart:", f"failed ({errors[0]})" if errors else "set finished")
        if errors:
            assert isinstance(errors[0], VirtkitError), errors
            _nothing_left(client, big, backup_dir, before)
        else:
            (made,) = client.backups.list(big.name, directory=backup_dir)
            assert client.backups.verify(made, directory=backup_dir).ok
            assert _checkpoints(client, big.name) == [made.checkpoint, *before]
            assert client.backups.root(backup_dir).leftovers(big.name) == []
            assert client.backups.prune(big.name, Retention(keep_last=1),
                                        directory=backup_dir).kept == [made.id]  # fmt: skip
            client.backups.root(backup_dir).remove(big.name, made.id)
            assert client.vms.state(big.name).value == "running"
    finally:
        if bed.daemon.proc is None:
            bed.daemon.start()
        client.close()


def test_run_due_backs_up_and_prunes(bed: Bed, vk: Client, running: Guest, tmp_path: Path) -> None:
    target = tmp_path / "sets"
    added = run_cli(bed, "backup", "schedule", "add", "--vm", running.name, "--cron",
                    "* * * * *", "--keep-last", "1", "--to", str(target), "--json")  # fmt: skip
    assert added.returncode == 0, added.stderr
    import json

    schedule_id = json.loads(added.stdout)["id"]
    try:
        # due from its creation on: make it look a minute old
        with vk.store.db() as db:
            db.execute("UPDATE backup_schedules SET created = created - 120 WHERE id = ?",
                       (schedule_id,))  # fmt: skip
        first = run_cli(bed, "backup", "run-due")
        assert first.returncode == 0, first.stdout + first.stderr
        assert f"{schedule_id}: {running.name} -> " in first.stdout
        assert run_cli(bed, "backup", "run-due").stdout.strip() == "no schedule is due"
        with vk.store.db() as db:
            db.execute("UPDATE backup_schedules SET last_run = last_run - 120 WHERE id = ?",
                       (schedule_id,))  # fmt: skip
        second = run_cli(bed, "backup", "run-due")
        assert second.returncode == 0, second.stdout + second.stderr
        assert "incremental" in second.stdout
        sets = vk.backups.list(running.name, directory=target)
        # keep-last 1: the incremental and the full it builds on stay
        assert [s.kind for s in sets] == ["full", "incremental"]
        pruned = vk.backups.prune(running.name, Retention(keep_last=1), directory=target)
        assert pruned.removed == []
    finally:
        run_cli(bed, "backup", "schedule", "remove", str(schedule_id))
