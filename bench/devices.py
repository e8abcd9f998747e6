#!/usr/bin/env python3
"""What each of virtkit's default devices costs the tiny guest's boot.

The domain virtkit defines for the tiny guest (``virtkit vm create --kernel ...``, as libvirt
completed it), and variants of it with one device (or setting) changed; all booted interleaved
round-robin, ``--runs`` counted rounds after a warm-up round. Per boot: the time of
``virDomain.create()`` (QEMU's start, as ``virsh start``), the time from ``create()`` to the boot
marker on the serial console, and the guest's own uptime when it printed the marker. The
domain is defined before the clock starts and destroyed and undefined after the marker.

Usage: ``.venv/bin/python bench/devices.py --private --runs 5`` (as root).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import statistics
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import libvirt

sys.path.insert(0, str(Path(__file__).resolve().parent))
import provision

UPTIME = re.compile(rb"VIRTKIT-TINY-BOOTED uptime=([0-9.]+)")
Variant = Callable[[ET.Element], None]


def _devices(root: ET.Element) -> ET.Element:
    devices = root.find("devices")
    assert devices is not None
    return devices


def _remove(root: ET.Element, match: Callable[[ET.Element], bool]) -> None:
    devices = _devices(root)
    for el in [el for el in devices if match(el)]:
        devices.remove(el)


def _readdress(root: ET.Element) -> None:
    """Drop every PCI address and every root port: libvirt places the devices again and adds
    only the root ports they need."""
    _remove(root, lambda el: el.tag == "controller" and el.get("model") == "pcie-root-port")
    for parent in _devices(root):
        for address in parent.findall("address"):
            if address.get("type") == "pci":
                parent.remove(address)


def no_balloon(root: ET.Element) -> None:
    balloon = _devices(root).find("memballoon")
    assert balloon is not None
    for child in list(balloon):
        balloon.remove(child)
    balloon.set("model", "none")


def no_agent(root: ET.Element) -> None:
    _remove(root, lambda el: el.tag == "channel" or el.get("type") == "virtio-serial")


def no_spare_ports(root: ET.Element) -> None:
    _readdress(root)


def with_usb(root: ET.Element) -> None:
    for el in _devices(root).findall("controller"):
        if el.get("type") == "usb":
            el.set("model", "qemu-xhci")
    _readdress(root)


def no_timers(root: ET.Element) -> None:
    clock = root.find("clock")
    assert clock is not None
    for timer in clock.findall("timer"):
        clock.remove(timer)


def no_acpi(root: ET.Element) -> None:
    features = root.find("features")
    assert features is not None
    root.remove(features)


def machine_pc(root: ET.Element) -> None:
    os_type = root.find("os/type")
    assert os_type is not None
    os_type.set("machine", "pc")
    _readdress(root)
    _remove(root, lambda el: el.get("model") == "pcie-root" or el.get("type") == "sata")


def _root_ports(root: ET.Element) -> dict[int, ET.Element]:
    return {
        int(el.get("index", "0")): el
        for el in _devices(root).findall("controller")
        if el.get("model") == "pcie-root-port"
    }


def _used_buses(root: ET.Element) -> set[int]:
    return {
        int(addr.get("bus", "0x0"), 16)
        for addr in _devices(root).iter("address")
        if addr.get("type") == "pci"
    }


def integrated(root: ET.Element) -> None:
    """The balloon and the virtio-serial controller as integrated endpoints on pcie.0 (no
    hot-unplug, which neither needs) instead of a root port each."""
    ports = _root_ports(root)
    for slot, el in enumerate(
        el for el in _devices(root) if el.tag == "memballoon" or el.get("type") == "virtio-serial"
    ):
        addr = el.find("address")
        assert addr is not None
        bus = int(addr.get("bus", "0x0"), 16)
        if bus in ports:
            _devices(root).remove(ports.pop(bus))
        addr.attrib.update(bus="0x00", slot=f"0x{slot + 2:02x}", function="0x0")


def spare(count: int) -> Variant:
    def change(root: ET.Element) -> None:
        used = _used_buses(root)
        free = sorted(i for i in _root_ports(root) if i not in used)
        for index in free[count:]:
            _devices(root).remove(_root_ports(root)[index])

    return change


def one_vcpu(root: ET.Element) -> None:
    vcpu = root.find("vcpu")
    assert vcpu is not None
    vcpu.attrib.pop("current", None)
    vcpu.text = "1"


def no_cpu_model(root: ET.Element) -> None:
    cpu = root.find("cpu")
    assert cpu is not None
    root.remove(cpu)


def lean(root: ET.Element) -> None:
    """Balloon and agent kept as integrated endpoints, 2 spare root ports."""
    integrated(root)
    spare(2)(root)


VARIANTS: dict[str, Variant | None] = {
    "default": lambda root: None,
    "-balloon": no_balloon,
    "-agent": no_agent,
    "-spare-ports": no_spare_ports,
    "integrated": integrated,
    "spare2": spare(2),
    "spare0": spare(0),
    "1vcpu": one_vcpu,
    "-cpu": no_cpu_model,
    "lean": lean,
    "+usb-xhci": with_usb,
    "-timers": no_timers,
    "-acpi": no_acpi,
    "pc": machine_pc,
    "minimal": None,  # provision.py's minimal domain
    "minimal+acpi": None,  # the same with ACPI (what a graceful shutdown needs)
}


class DeviceBench:
    def __init__(self, bench: provision.Bench, uri: str) -> None:
        self.bench = bench
        self.conn = libvirt.open(uri)
        for _event, (prefix, ns) in ET.iterparse(io.StringIO(bench.template), ["start-ns"]):
            ET.register_namespace(prefix, ns)

    def xml(self, variant: str, name: str) -> str:
        change = VARIANTS[variant]
        if change is None:
            return self.bench.minimal_xml(name, acpi=variant.endswith("+acpi"))
        root = ET.fromstring(self.bench.domain_xml(name))
        change(root)
        return ET.tostring(root, encoding="unicode")

    def boot(self, variant: str, name: str) -> dict[str, float]:
        self.bench.cleanup(name)
        log = provision.serial_log(name)
        dom = self.conn.defineXML(self.xml(variant, name))
        try:
            start = time.perf_counter()
            dom.create()
            started = time.perf_counter()
            deadline = time.monotonic() + provision.MARKER_TIMEOUT
            while time.monotonic() < deadline:
                with contextlib.suppress(FileNotFoundError):
                    found = UPTIME.search(log.read_bytes())
                    if found:
                        now = time.perf_counter()
                        return {
                            "start": started - start,
                            "marker": now - start,
                            "uptime": float(found.group(1)),
                        }
                time.sleep(provision.POLL_INTERVAL)
            raise RuntimeError(f"{variant}: no marker in {log}")
        finally:
            with contextlib.suppress(libvirt.libvirtError):
                dom.destroy()
            dom.undefine()
            log.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="counted rounds (5)")
    parser.add_argument("--uri", default="qemu:///system", help="libvirt URI")
    parser.add_argument("--private", action="store_true", help="a private libvirtd")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v in VARIANTS]
    results: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    with contextlib.ExitStack() as stack:
        if args.private:
            uri, env = stack.enter_context(provision.private_libvirtd())
        else:
            uri, env = args.uri, None
        bench = provision.Bench(uri, env)
        try:
            dbench = DeviceBench(bench, uri)
            for rnd in range(args.runs + 1):
                for i in range(len(variants)):
                    variant = variants[(rnd + i) % len(variants)]
                    name = f"{provision.PREFIX}dev{rnd}-{variant.strip('-+')}"
                    res = dbench.boot(variant, name)
                    print(f"{'warm-up' if not rnd else f'round {rnd}':>8} {variant:<13}"
                          f"start {res['start']:.3f}  marker {res['marker']:.3f}  "
                          f"uptime {res['uptime']:.2f}", file=sys.stderr, flush=True)  # fmt: skip
                    if rnd:
                        results[variant].append(res)
        finally:
            bench.close()
    table = {
        v: {k: statistics.median(r[k] for r in runs) for k in ("start", "marker", "uptime")}
        for v, runs in results.items()
    }
    if args.json:
        print(json.dumps({"uri": uri, "runs": results, "medians": table}, indent=2))
        return
    base = table.get("default")
    print(f"\nmedians of {args.runs} runs; delta: against 'default' (start + boot to marker)")
    print(f"{'variant':<14}{'start':>8}{'marker':>8}{'uptime':>8}{'delta':>8}")
    for variant, med in table.items():
        delta = med["marker"] - base["marker"] if base else float("nan")
        print(f"{variant:<14}{med['start']:8.3f}{med['marker']:8.3f}{med['uptime']:8.2f}"
              f"{delta:+8.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
