#!/usr/bin/env python3
"""Backup benchmark (issue 14).

* A full backup (``Client.backups.create(full=True)``: libvirt's push backup job) of a running
  VM's 4 GiB qcow2 disk of random bytes, against ``qemu-img convert -U -O qcow2`` of the same
  disk. Goal: the backup at 0.9x qemu-img's speed or better.
* Incrementals after the guest rewrote 64 MiB and 256 MiB of its disk: the time should follow
  the change, not the disk.
* External snapshot delete (``Client.snapshots.delete``: a block commit of the running VM's
  active layer, then the pivot) of 1 GiB of changes, against ``qemu-img commit`` of the same
  overlay into a copy of the same base. Goal: at least 0.9x qemu-img's speed.

Runs its own private libvirtd (tests/testbed) and the tiny guest; everything is under one
temporary directory, removed at the end. Needs root. Usage:
``PYTHONPATH=src:. .venv/bin/python bench/backup.py --runs 3 [--size 4G] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from tests.testbed.libvirtd import PrivateLibvirtd  # noqa: E402

from virtkit import Client, Settings  # noqa: E402
from virtkit.services.tinyguest import BOOT_MARKER, build_tiny_guest  # noqa: E402
from virtkit.specs import parse_size, parse_vm_spec  # noqa: E402

MIB = 1 << 20
NAME = "vkbench-backup"
CACHE = Path(os.environ.get("VIRTKIT_TEST_CACHE", ".cache/tests"))


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def wait_log(log: Path, text: str, count: int = 1, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and log.read_text(errors="replace").count(text) >= count:
            return
        time.sleep(0.05)
    raise RuntimeError(f"{text!r} not on the console")


class Bench:
    def __init__(self, size: int, runs: int) -> None:
        self.size, self.runs = size, runs
        self.daemon = PrivateLibvirtd(name="vkbench")
        self.shared = self.daemon.shared
        self.n = 0

    def setup(self) -> None:
        self.daemon.start()
        for sub in ("images", "logs", "sets"):
            (self.shared / sub).mkdir(parents=True, exist_ok=True)
        self.vk = Client(settings=Settings(
            uri=self.daemon.uri, cache_dir=self.shared / "cache", state_dir=self.shared / "state",
            storage_pool="vkbench-pool", storage_pool_path=self.shared / "images",
            console_log_dir=self.shared / "logs", kvm_probe_timeout=8.0))  # fmt: skip
        raw = self.shared / "random.raw"
        with open(raw, "wb") as f:
            for _ in range(self.size // (64 * MIB)):
                f.write(os.urandom(64 * MIB))
        self.disk = self.shared / "images" / "disk.qcow2"
        subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(self.disk)], check=True)
        raw.unlink()
        guest = build_tiny_guest(CACHE)
        spec = {"name": NAME, "memory": "128M", "vcpus": 1, "kernel": guest.kernel,
                "initrd": guest.initrd, "cmdline": guest.cmdline,
                "disks": [{"path": str(self.disk), "format": "qcow2"}]}  # fmt: skip
        self.vk.vms.create(parse_vm_spec(spec), start=True)
        self.log = self.shared / "logs" / f"{NAME}-serial0.log"
        wait_log(self.log, BOOT_MARKER)

    def shell(self, command: str) -> None:
        self.n += 1
        with self.vk.consoles.open(NAME, force=True) as console:
            console.write(f'{command}; echo VKB""{self.n}END\n'.encode())
            wait_log(self.log, f"VKB{self.n}END")

    def drop_caches(self) -> None:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")

    def full(self) -> dict[str, Any]:
        qemu, direct, backup, job = [], [], [], []
        sets = self.shared / "sets"
        out = self.shared / "copy.qcow2"
        for _ in range(self.runs):
            for times, extra in ((qemu, []), (direct, ["-t", "none"])):
                self.drop_caches()
                cmd = ["qemu-img", "convert", "-U", *extra, "-O", "qcow2", str(self.disk), str(out)]
                times.append(timed(lambda cmd=cmd: subprocess.run(cmd, check=True)))
                out.unlink()
            shutil.rmtree(sets, ignore_errors=True)
            self.drop_caches()
            start = time.perf_counter()
            made = self.vk.backups.create(NAME, directory=sets, full=True)
            backup.append(time.perf_counter() - start)
            job.append(made.set.finished - made.set.started)
        q, b = statistics.median(qemu), statistics.median(backup)
        return {"disk_bytes": self.size, "qemu_img_convert_s": qemu,
                "qemu_img_convert_direct_s": direct, "backup_full_s": backup,
                "backup_job_s": job, "qemu_img_MiBps": self.size / MIB / q,
                "backup_MiBps": self.size / MIB / b, "speed_vs_qemu_img": q / b,
                "job_speed_vs_qemu_img": q / statistics.median(job),
                "job_speed_vs_qemu_img_direct":
                    statistics.median(direct) / statistics.median(job)}  # fmt: skip

    def incremental(self, change_mib: int) -> dict[str, Any]:
        self.shell(f"dd if=/dev/urandom of=/dev/vda bs=1M seek=100 count={change_mib}; sync")
        self.drop_caches()
        start = time.perf_counter()
        made = self.vk.backups.create(NAME, directory=self.shared / "sets")
        took = time.perf_counter() - start
        assert made.set.kind == "incremental", made
        return {"change_MiB": change_mib, "seconds": took, "set_MiB": made.set.size / MIB}

    def cleanup(self) -> None:
        try:
            self.vk.vms.delete(NAME, force=True)
            self.vk.close()
        finally:
            self.daemon.stop()
            self.daemon.cleanup()


def _hand_commit(bench: Bench, overlay: Path, base: Path) -> float:
    """``qemu-img commit`` of a copy of ``overlay`` into a copy of ``base``, then the removal of
    the merged overlay: the same delete by hand, timed from cold caches."""
    base2, top2 = bench.shared / "base2.qcow2", bench.shared / "top2.qcow2"
    subprocess.run(["cp", "--sparse=always", str(base), str(base2)], check=True)
    subprocess.run(["cp", "--sparse=always", str(overlay), str(top2)], check=True)
    subprocess.run(["qemu-img", "rebase", "-u", "-f", "qcow2", "-F", "qcow2", "-b", str(base2),
                    str(top2)], check=True)  # fmt: skip
    bench.drop_caches()
    start = time.perf_counter()
    subprocess.run(["qemu-img", "commit", "-q", "-d", "-f", "qcow2", str(top2)], check=True)
    top2.unlink()
    took = time.perf_counter() - start
    base2.unlink()
    return took


def snapshot_hooks(bench: Bench) -> dict[str, Any]:
    """External snapshot delete of 1 GiB of changes (``Client.snapshots.delete``, the overlay
    file removed too) against ``qemu-img commit`` of the same overlay into a copy of the same
    base plus the removal: ``active``, the running VM's active layer (QEMU's mirror, then the
    pivot); ``inner``, a layer below the active one (QEMU's commit job)."""
    vk = bench.vk
    runs: list[dict[str, Any]] = []
    for i in range(bench.runs):
        for mode in ("active", "inner"):
            name = f"bc{mode}{i}"
            vk.snapshots.create(NAME, name, memory=False)
            # 1 GiB of the disk's own random data copied onto its first GiB: 1 GiB of changes
            bench.shell("dd if=/dev/vda of=/dev/vda bs=1M skip=2048 count=1024 conv=notrunc; sync")
            if mode == "inner":
                vk.snapshots.create(NAME, name + "top", memory=False)
            [chain] = [c for c in vk.snapshots.chain(NAME) if c.target == "vda"]
            layer = 0 if mode == "active" else 1
            overlay = Path(chain.layers[layer].path)
            base = Path(chain.layers[layer + 1].path)
            changed = overlay.stat().st_blocks * 512
            qemu = _hand_commit(bench, overlay, base)
            bench.drop_caches()
            ours = timed(lambda n=name: vk.snapshots.delete(NAME, n))
            if mode == "inner":
                vk.snapshots.delete(NAME, name + "top")
            runs.append({"mode": mode, "changed_bytes": changed, "qemu_img_commit_s": qemu,
                         "virtkit_delete_s": ours})  # fmt: skip
    speed = {}
    for mode in ("active", "inner"):
        mine = [r for r in runs if r["mode"] == mode]
        q = statistics.median(r["qemu_img_commit_s"] for r in mine)
        v = statistics.median(r["virtkit_delete_s"] for r in mine)
        speed[mode] = q / v
    return {"runs": runs, "speed_vs_qemu_img_commit": speed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size", default="4G")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("-v", "--verbose", action="store_true", help="virtkit's INFO logs.")
    args = parser.parse_args()
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
        logging.getLogger("virtkit.services.backupcreate").setLevel(logging.DEBUG)
    bench = Bench(parse_size(args.size), args.runs)
    try:
        bench.setup()
        result = {"full": bench.full(), "incremental": [bench.incremental(64),
                  bench.incremental(256)], "snapshots": snapshot_hooks(bench)}  # fmt: skip
    finally:
        bench.cleanup()
    if args.json:
        print(json.dumps(result, indent=2))
        return
    f = result["full"]
    q, b = statistics.median(f["qemu_img_convert_s"]), statistics.median(f["backup_full_s"])
    print(
        f"full backup of {f['disk_bytes'] / MIB:.0f} MiB: median {b:.2f} s "
        f"({f['backup_MiBps']:.0f} MiB/s); qemu-img convert {q:.2f} s "
        f"({f['qemu_img_MiBps']:.0f} MiB/s): {f['speed_vs_qemu_img']:.2f}x qemu-img's speed"
    )
    for inc in result["incremental"]:
        print(
            f"incremental after {inc['change_MiB']} MiB changed: {inc['seconds']:.2f} s, "
            f"set {inc['set_MiB']:.1f} MiB"
        )
    snap = result["snapshots"]
    for run in snap["runs"]:
        print(
            f"snapshot delete ({run['mode']}) of {run['changed_bytes'] / MIB:.0f} MiB: virtkit "
            f"{run['virtkit_delete_s']:.2f} s, qemu-img commit {run['qemu_img_commit_s']:.2f} s"
        )
    for mode, speed in snap["speed_vs_qemu_img_commit"].items():
        print(f"snapshot delete ({mode}): {speed:.2f}x the speed of qemu-img commit")


if __name__ == "__main__":
    main()
