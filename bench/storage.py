#!/usr/bin/env python3
"""Storage benchmark: linked-clone creation time and full-clone throughput.

* Linked clones of a 100 MiB and a big (default 4 GiB) qcow2 template, by the CLI (``virtkit
  volume clone --linked``, whole command) and the Python API (``clone_volume``, in-process).
  Goal: the same time for both sizes (O(1)), under 0.2 s.
* Full copies of the big template: ``virtkit volume clone`` (CLI; the API in-process for
  reference) against ``qemu-img convert -O qcow2`` of the same file and ``virt-clone`` of a
  shut-off VM using it. Goal: the virtkit CLI within 1.1x of qemu-img.

Templates hold random bytes (zeros would be skipped). Everything lives in the pool
``vkbench-storage`` (/var/tmp/vkbench-storage) and is removed at the end, also on errors and
Ctrl-C. Needs root. Usage: ``.venv/bin/python bench/storage.py --runs 5``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import virtkit
from virtkit.errors import VirtkitError
from virtkit.specs import parse_size

PREFIX = "vkbench-storage"
POOL, POOL_DIR, RAW = PREFIX, Path(f"/var/tmp/{PREFIX}"), Path(f"/var/tmp/{PREFIX}-raw.img")
SRC_VM = f"{PREFIX}-src"
MIB = 1 << 20
LINKED_CASES = [f"{size}/{how}" for size in ("small", "big") for how in ("cli", "api")]
FULL_METHODS = ("virtkit", "virtkit-api", "qemu-img", "virt-clone")
LINKED_TARGET, SAME_TOLERANCE, FULL_TARGET = 0.2, 0.10, 1.10
VIRTKIT = str(Path(sys.executable).parent / "virtkit")


def run(*argv: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


class Bench:
    def __init__(self, big: int, big_data: int, drop_caches: bool) -> None:
        self.big, self.big_data, self.drop_caches = big, big_data, drop_caches
        self.vk = virtkit.Client(settings=virtkit.Settings.load())
        self.domains: set[str] = set()
        self.templates = {"small": f"{PREFIX}-small.qcow2", "big": f"{PREFIX}-big.qcow2"}

    def virtkit(self, *args: str) -> str:
        return run(VIRTKIT, "-c", self.vk.uri, *args)

    def setup(self) -> None:
        names = run("virsh", "-q", "-c", self.vk.uri, "list", "--all", "--name").split()
        self.domains.update(n for n in names if n.startswith(f"{PREFIX}-"))  # a killed run's
        self.cleanup()
        self.virtkit("pool", "create", POOL, "--path", str(POOL_DIR), "--no-autostart")
        self.make_template(self.templates["small"], 100 * MIB, 100 * MIB)
        self.make_template(self.templates["big"], self.big, self.big_data)
        self.vk.pools.refresh_pool(POOL)

    def make_template(self, name: str, size: int, data: int) -> None:
        """A qcow2 of virtual ``size`` whose first ``data`` bytes are random."""
        with RAW.open("wb") as out:
            for offset in range(0, data, 64 * MIB):
                out.write(os.urandom(min(64 * MIB, data - offset)))
            out.truncate(size)
        run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(RAW), str(POOL_DIR / name))
        RAW.unlink()
        os.sync()

    def define_source_vm(self) -> None:
        """A shut-off VM with the big template as its disk, for virt-clone (defined after the
        linked clones: virtkit refuses to base a linked clone on a VM's disk)."""
        kernel = json.loads(self.virtkit("dev", "tiny-guest"))["kernel"]
        self.domains.add(SRC_VM)
        big = str(POOL_DIR / self.templates["big"])
        self.virtkit("vm", "create", SRC_VM, "--disk", big, "--memory", "128M", "--kernel", kernel)

    # Each run removes what it made; after an error or Ctrl-C, cleanup() does.
    def linked(self, case: str, rnd: int) -> float:
        size, how = case.split("/")
        name, src = f"{PREFIX}-linked-{size}-{how}-{rnd}.qcow2", self.templates[size]
        start = time.perf_counter()
        if how == "cli":
            self.virtkit("volume", "clone", src, name, "-p", POOL, "--linked")
        else:
            self.vk.pools.clone_volume(POOL, src, name, linked=True)
        seconds = time.perf_counter() - start
        self.vk.pools.delete_volume(POOL, name)
        return seconds

    def full(self, method: str, rnd: int) -> tuple[float, float]:
        """Seconds of the copy alone, and until it is on disk (copy + fsync). Before it: sync,
        then the template is evicted from the page cache (or all caches are dropped)."""
        name, src = f"{PREFIX}-full-{method}-{rnd}.qcow2", POOL_DIR / self.templates["big"]
        dst, domain = POOL_DIR / name, f"{PREFIX}-vc-{rnd}"
        vc = ["virt-clone", "--connect", self.vk.uri, "--original", SRC_VM, "--name", domain]
        argv = {
            "virtkit": [VIRTKIT, "-c", self.vk.uri, "volume", "clone", src.name, name, "-p", POOL],
            "qemu-img": ["qemu-img", "convert", "-O", "qcow2", str(src), str(dst)],
            "virt-clone": [*vc, "--file", str(dst)],
        }
        self.domains.add(domain)
        os.sync()
        if self.drop_caches:
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
        else:  # evict the template's (clean, synced) pages
            with src.open("rb") as f:
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        start = time.perf_counter()
        if method == "virtkit-api":
            self.vk.pools.clone_volume(POOL, src.name, name)
        else:
            run(*argv[method])
        copied = time.perf_counter()
        with dst.open("rb") as f:
            os.fsync(f.fileno())
        on_disk = time.perf_counter()
        self.remove_domain(domain)
        if method == "qemu-img":
            dst.unlink()
        else:
            self.vk.pools.delete_volume(POOL, name)
        return copied - start, on_disk - start

    def remove_domain(self, name: str) -> None:
        subprocess.run(["virsh", "-q", "-c", self.vk.uri, "undefine", name], capture_output=True)
        self.domains.discard(name)

    def cleanup(self) -> None:
        """Domains, volumes (clones before templates; one libvirt is still copying after a
        Ctrl-C cannot be deleted until done, so retry), stray files, the pool, its directory."""
        for name in list(self.domains):
            self.remove_domain(name)
        RAW.unlink(missing_ok=True)
        pools = self.vk.pools
        if POOL in [p.name for p in pools.list_pools()]:
            if not pools.get_pool(POOL).active:
                pools.start_pool(POOL)
            deadline = time.monotonic() + 300
            while vols := pools.list_volumes(POOL):
                for vol in sorted(vols, key=lambda v: v.backing is None):
                    try:
                        pools.delete_volume(POOL, vol.name)
                    except VirtkitError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.2)
            for stray in POOL_DIR.iterdir():
                stray.unlink()
            pools.delete_pool(POOL, delete_dir=True)
        if POOL_DIR.is_dir():
            POOL_DIR.rmdir()


def stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize(
    linked: dict[str, list[float]], full: dict[str, list[tuple[float, float]]], args: Any
) -> dict[str, Any]:
    lk = {case: stats(v) for case, v in linked.items()}
    data_mib = args.big_data / MIB
    fl: dict[str, dict[str, float]] = {}
    for method, runs in full.items():
        fl[method] = stats([r[0] for r in runs])
        fl[method]["disk_median"] = statistics.median(r[1] for r in runs)
        fl[method]["mib_s"] = data_mib / fl[method]["median"]
        fl[method]["disk_mib_s"] = data_mib / fl[method]["disk_median"]
    targets: dict[str, bool] = {}
    for how in ("cli", "api"):
        small, big = lk[f"small/{how}"]["median"], lk[f"big/{how}"]["median"]
        targets[f"linked_{how}_same"] = abs(big - small) <= max(SAME_TOLERANCE * small, 0.010)
        targets[f"linked_{how}_under_{LINKED_TARGET}s"] = max(small, big) < LINKED_TARGET
    ratios = {
        "virtkit/qemu-img": fl["virtkit"]["median"] / fl["qemu-img"]["median"],
        "virtkit/qemu-img (min)": fl["virtkit"]["min"] / fl["qemu-img"]["min"],
        "virtkit/qemu-img (+fsync)": fl["virtkit"]["disk_median"] / fl["qemu-img"]["disk_median"],
        "virtkit-api/qemu-img": fl["virtkit-api"]["median"] / fl["qemu-img"]["median"],
        "virtkit/virt-clone": fl["virtkit"]["median"] / fl["virt-clone"]["median"],
    }
    targets["full_within_1.1x"] = ratios["virtkit/qemu-img"] <= FULL_TARGET
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "host": {"cpus": os.cpu_count(), "kernel": platform.release(), "dir": str(POOL_DIR)},
        "big_size": args.big_size,
        "big_data_mib": data_mib,  # random bytes in the big template; MiB/s counts these
        "cache": "dropped (system-wide)" if args.drop_caches else "template evicted",
        "runs": {"linked": linked, "full": full},
        "linked": lk,
        "full": fl,
        "ratios": ratios,
        "targets": targets,
    }


def print_table(s: dict[str, Any], args: Any) -> None:
    print(f"\nlinked clones, seconds, {args.runs} runs each")
    print(f"{'template':<16}{'method':<8}{'median':>8}{'min':>8}{'max':>8}")
    for case, st in s["linked"].items():
        size, how = case.split("/")
        label = f"{size} {'100M' if size == 'small' else args.big_size}"
        print(f"{label:<16}{how:<8}" + "".join(f"{st[k]:8.3f}" for k in ("median", "min", "max")))
    data = f"{s['big_data_mib']:.0f} MiB of data"
    print(f"\nfull copies of the {args.big_size} template ({data}), {args.full_runs} runs each")
    print(f"page cache before each: {s['cache']}")
    print(f"{'method':<13}{'median':>8}{'min':>8}{'max':>8}{'MiB/s':>8}{'+fsync':>8}{'MiB/s':>8}")
    for method, st in s["full"].items():
        cells = "".join(f"{st[k]:8.2f}" for k in ("median", "min", "max"))
        cells += f"{st['mib_s']:8.0f}{st['disk_median']:8.2f}{st['disk_mib_s']:8.0f}"
        print(f"{method:<13}{cells}")
    print()
    for name, ratio in s["ratios"].items():
        print(f"{name:<27}{ratio:6.3f}")
    for name, met in s["targets"].items():
        print(f"target {name:<24}{'met' if met else 'MISSED'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="linked-clone runs per case (5)")
    parser.add_argument("--full-runs", type=int, default=5, help="full-copy runs per method (5)")
    parser.add_argument("--big-size", default="4G", help="big template's virtual size (4G)")
    parser.add_argument("--big-data", help="random bytes in it (default: all of it)")
    parser.add_argument("--drop-caches", action="store_true", help="drop all, not the template")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args()
    big = parse_size(args.big_size, default_unit="G")
    args.big_data = min(parse_size(args.big_data or args.big_size, default_unit="G"), big)
    if args.runs < 1 or args.full_runs < 1 or args.big_data < 1:
        parser.error("--runs, --full-runs and --big-data must be positive")
    linked: dict[str, list[float]] = {case: [] for case in LINKED_CASES}
    full: dict[str, list[tuple[float, float]]] = {m: [] for m in FULL_METHODS}
    bench = Bench(big, args.big_data, args.drop_caches)
    try:
        bench.setup()
        for rnd in range(args.runs + 1):  # round 0 is the warm-up, not counted
            for case in LINKED_CASES:
                seconds = bench.linked(case, rnd)
                print(f"linked {case:<10} round {rnd} {seconds:7.3f} s", file=sys.stderr)
                if rnd:
                    linked[case].append(seconds)
        bench.define_source_vm()
        for rnd in range(args.full_runs + 1):  # round 0 warms up; each round starts elsewhere
            for i in range(len(FULL_METHODS)):
                method = FULL_METHODS[(rnd + i) % len(FULL_METHODS)]
                copy, disk = bench.full(method, rnd)
                line = f"full {method:<12} round {rnd} {copy:6.2f} s (+fsync {disk:.2f} s)"
                print(line, file=sys.stderr, flush=True)
                if rnd:
                    full[method].append((copy, disk))
    except KeyboardInterrupt:
        print("interrupted: cleaning up", file=sys.stderr)
        sys.exit(130)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not stop the cleanup
        bench.cleanup()
    summary = summarize(linked, full, args)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_table(summary, args)


if __name__ == "__main__":
    main()
