#!/usr/bin/env python3
"""What a vCPU maximum above the current count costs: boot time and QEMU's memory (TCG here).

On a private libvirtd (``tests/testbed``), the tiny guest as virtkit defines it is started
transient with ``<vcpu current='C'>M</vcpu>`` for several (C, M), interleaved round-robin after
one uncounted warm-up round, one guest at a time. Each run: ``createXML`` to the boot marker on
the serial log (polled every 10 ms), then QEMU's RSS and thread count (``/proc/PID/status``, when
the marker is seen); then the domain is destroyed. Usage (root)::

    .venv/bin/python bench/vcpu_max.py --runs 5 [--configs 1:1,1:2,1:4,2:2,2:4]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import CACHE
from tests.testbed.libvirtd import PrivateLibvirtd

from virtkit import Client, Settings
from virtkit.services.tinyguest import BOOT_MARKER, build_tiny_guest
from virtkit.specs import parse_vm_spec

POLL = 0.010
TIMEOUT = 120.0


def with_vcpus(xml: str, name: str, log: Path, current: int, maximum: int) -> str:
    root = ET.fromstring(xml)
    root.find("name").text = name  # type: ignore[union-attr]
    root.remove(root.find("uuid"))  # type: ignore[arg-type]
    vcpu = root.find("vcpu")
    assert vcpu is not None
    vcpu.text = str(maximum)
    vcpu.set("current", str(current))
    for log_el in root.findall("devices/serial/log") + root.findall("devices/console/log"):
        log_el.set("file", str(log))
    return ET.tostring(root, encoding="unicode")


def qemu_facts(daemon: PrivateLibvirtd, name: str) -> tuple[int, int]:
    """(RSS in KiB, threads) of the domain's QEMU."""
    pid_file = daemon.base / "run" / "qemu" / f"{name}.pid"
    pid = pid_file.read_text().strip()
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in status)
    return int(fields["VmRSS"].split()[0]), int(fields["Threads"])


def wait_marker(log: Path) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if log.exists() and BOOT_MARKER.encode() in log.read_bytes():
            return
        time.sleep(POLL)
    raise RuntimeError(f"no boot marker in {log} after {TIMEOUT:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--configs", default="1:1,1:2,1:4,2:2,2:4")
    args = parser.parse_args()
    configs = [tuple(int(x) for x in c.split(":")) for c in args.configs.split(",")]
    guest = build_tiny_guest(CACHE)
    daemon = PrivateLibvirtd(name="vkbench")
    logs = daemon.shared / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    settings = Settings(uri=daemon.uri, cache_dir=daemon.shared / "cache",
                        storage_pool="vkbench-pool", storage_pool_path=daemon.shared / "images",
                        console_log_dir=logs, kvm_probe_timeout=8.0)  # fmt: skip
    results: dict[tuple[int, ...], list[tuple[float, int, int]]] = {c: [] for c in configs}
    daemon.start()
    try:
        with Client(settings=settings) as vk:
            spec = {"name": "vkbench-template", "memory": "128M", "kernel": guest.kernel,
                    "initrd": guest.initrd, "cmdline": guest.cmdline}  # fmt: skip
            vk.vms.create(parse_vm_spec(spec))
            template = vk.vms.xml("vkbench-template", inactive=True)
            vk.vms.delete("vkbench-template", force=True, remove_storage=True)
            conn = vk.connection.get()
            for round_ in range(args.runs + 1):
                for current, maximum in configs:
                    name = f"vkbench-vcpu-{current}-{maximum}-{round_}"
                    log = logs / f"{name}.log"
                    xml = with_vcpus(template, name, log, current, maximum)
                    start = time.perf_counter()
                    dom = conn.createXML(xml, 0)
                    try:
                        wait_marker(log)
                        boot = time.perf_counter() - start
                        rss, threads = qemu_facts(daemon, name)
                    finally:
                        dom.destroy()
                        log.unlink(missing_ok=True)
                    print(f"round {round_} {current}:{maximum} {boot:.3f} s {rss} KiB "
                          f"{threads} threads", file=sys.stderr)  # fmt: skip
                    if round_:
                        results[(current, maximum)].append((boot, rss, threads))
    finally:
        daemon.stop()
        daemon.cleanup()
    print("current:max  boot med  min    max    RSS med MiB  threads")
    for (current, maximum), runs in results.items():
        boots = [r[0] for r in runs]
        rss_mib = statistics.median(r[1] for r in runs) / 1024
        print(f"{current}:{maximum:<10} {statistics.median(boots):.3f}    {min(boots):.3f}  "
              f"{max(boots):.3f}  {rss_mib:8.1f}     {runs[0][2]}")  # fmt: skip


if __name__ == "__main__":
    main()
